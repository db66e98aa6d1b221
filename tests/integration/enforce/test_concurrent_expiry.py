"""Expiry on every replica at once: two runtimes on one PostgreSQL claim the due actions
and exemptions with `FOR UPDATE SKIP LOCKED`, so each is expired once, with one audit
event and one change, however their runs overlap; and a replica that does not lead
runs the expiry jobs all the same."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col

from controlplane.plan import repository as actions_repo
from controlplane.remedy import repository as remedy_repo
from controlplane.runtime import Runtime
from controlplane.store.db import Database, upgrade
from controlplane.store.models import ActionRow, AuditEventRow, ChangeRow, ExemptionRow
from controlplane.store.types import utcnow
from tests.support.actions import Planned, plan
from tests.support.app import make_settings, serve
from tests.support.databases import PostgresServer
from tests.support.store import add, exemption, fetch

pytestmark = pytest.mark.postgres

HANG_GUARD = 60.0
"""Seconds before a replica that waits for another's rows (instead of skipping them)
counts as stuck: a bound on a deadlock, not a measure of speed."""


@pytest.fixture
async def replicas(
    postgres: PostgresServer, tmp_path: Path
) -> AsyncIterator[tuple[Runtime, Runtime]]:
    """Two started runtimes on one new PostgreSQL database, the first leading. Their own
    expiry ticks are an hour apart: the tests run the expiry themselves."""
    with postgres.database() as url:
        upgrade(url)
        async with AsyncExitStack() as stack:
            runtimes = []
            for n in range(2):
                data_dir = tmp_path / f"replica-{n}"
                data_dir.mkdir()
                settings = dataclasses.replace(make_settings(url, data_dir), expiry_seconds=3600)
                runtimes.append((await stack.enter_async_context(serve(settings))).runtime)
            yield runtimes[0], runtimes[1]


async def due_actions(db: Database, count: int) -> list[str]:
    """`count` pending actions whose expiry has passed."""
    ids = await plan(
        db,
        *(Planned("rate_limit", "api_key", f"key_due_{n}", ttl_seconds=60) for n in range(count)),
    )
    async with db.write() as session, session.begin():
        await session.execute(
            update(ActionRow)
            .where(col(ActionRow.id).in_(ids))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    return ids


async def due_exemptions(db: Database, count: int) -> list[str]:
    """`count` live IP exemptions whose expiry has passed."""
    past = utcnow() - timedelta(seconds=1)
    rows = [exemption("lab-a", "ip", f"198.51.100.{n}", expires_at=past) for n in range(count)]
    await add(db, *rows)
    return [r.id for r in rows]


async def expired_events(db: Database) -> tuple[Counter[str], Counter[str]]:
    """`action.expired` events per action, `exemption.expired` events per exemption."""
    actions = await fetch(db, AuditEventRow, col(AuditEventRow.type) == "action.expired")
    exemptions = await fetch(db, AuditEventRow, col(AuditEventRow.type) == "exemption.expired")
    return (
        Counter(str(e.action_id) for e in actions),
        Counter(str(e.payload["id"]) for e in exemptions),
    )


async def test_a_replica_skips_the_rows_another_is_expiring(
    replicas: tuple[Runtime, Runtime],
) -> None:
    first, second = replicas
    action_ids = await due_actions(first.db, 10)
    exemption_ids = await due_exemptions(first.db, 6)

    # The first replica's expiry is mid-transaction, holding 4 actions and 2 exemptions.
    async with first.db.write() as session, session.begin():
        held = {a.id for a in await actions_repo.due_to_expire(session, utcnow(), 4)}
        held |= {e.id for e in await remedy_repo.due_exemptions(session, utcnow(), 2)}
        # The second expires at the same moment: the rest, without waiting for those.
        assert await asyncio.wait_for(second.enforcer.expire(), HANG_GUARD) == 6
        assert await asyncio.wait_for(second.expire_exemptions(), HANG_GUARD) == 4
        by_second_actions, by_second_exemptions = await expired_events(second.db)
    assert len(held) == 6
    assert not held & (set(by_second_actions) | set(by_second_exemptions))

    # The held ones are still due once the first lets go (it changed nothing).
    assert await first.enforcer.expire() == 4
    assert await first.expire_exemptions() == 2
    actions, exemptions = await expired_events(first.db)
    assert actions == Counter(action_ids) and exemptions == Counter(exemption_ids)


async def test_two_replicas_expiring_at_once_expire_each_once(
    replicas: tuple[Runtime, Runtime],
) -> None:
    first, second = replicas
    action_ids = await due_actions(first.db, 300)
    exemption_ids = await due_exemptions(first.db, 60)

    async def drain_actions(runtime: Runtime) -> int:
        """Small runs one after another, as a busy replica's ticks would be."""
        total = 0
        while done := await runtime.enforcer.expire(limit=10):
            total += done
        return total

    async def drain_exemptions(runtime: Runtime) -> int:
        total = 0
        while done := await runtime.expire_exemptions(limit=5):
            total += done
        return total

    counts = await asyncio.wait_for(
        asyncio.gather(
            drain_actions(first),
            drain_actions(second),
            drain_exemptions(first),
            drain_exemptions(second),
        ),
        HANG_GUARD,
    )

    assert counts[0] + counts[1] == len(action_ids)
    assert counts[2] + counts[3] == len(exemption_ids)
    actions, exemptions = await expired_events(first.db)
    assert actions == Counter(action_ids), "one action.expired event per action"
    assert exemptions == Counter(exemption_ids), "one exemption.expired event per exemption"
    rows = await fetch(first.db, ActionRow, col(ActionRow.id).in_(action_ids))
    assert {r.state for r in rows} == {"expired"}
    ended = await fetch(first.db, ExemptionRow, col(ExemptionRow.id).in_(exemption_ids))
    assert all(e.ended_at is not None and e.ended_by == "tollgate" for e in ended)
    changes = await fetch(first.db, ChangeRow, col(ChangeRow.cause) == "expired")
    by_action = Counter(c.action_id for c in changes if c.action_id in set(action_ids))
    assert by_action == Counter(action_ids), "one removal logged per action"


async def test_the_replica_that_does_not_lead_expires_too(
    replicas: tuple[Runtime, Runtime],
) -> None:
    first, second = replicas
    assert first.leadership.leader and not second.leadership.leader
    action_ids = await due_actions(first.db, 5)
    exemption_ids = await due_exemptions(first.db, 3)

    for job in ("expire", "expire_exemptions"):
        await second.scheduler.get_job(job).func()

    actions, exemptions = await expired_events(first.db)
    assert actions == Counter(action_ids) and exemptions == Counter(exemption_ids)
    assert second.scheduler.get_job("leadership") is not None, "it keeps looking for the lead"


async def test_a_follower_holds_the_actions_it_settles_until_it_commits(
    replicas: tuple[Runtime, Runtime],
) -> None:
    """The states a follower reads before writing applied/pending/failed are locked for
    its transaction: an expiry claiming due rows meanwhile skips them (and takes them at
    its next run), so it cannot be overwritten by a state read before it committed."""
    first, second = replicas
    ids = await due_actions(first.db, 3)
    with first.db.write_blocking() as session, session.begin():
        held = actions_repo.action_states(session, ids[:2])
        assert sorted(a for a, *_ in held) == sorted(ids[:2])
        assert await asyncio.wait_for(second.enforcer.expire(), HANG_GUARD) == 1
    rows = await fetch(first.db, ActionRow, col(ActionRow.id).in_(ids))
    states = {a.id: a.state for a in rows}
    assert states[ids[2]] == "expired"
    assert states[ids[0]] == states[ids[1]] == "pending"
    assert await second.enforcer.expire() == 2
