"""A retraction lifts what rested on the indicator inside the transaction that retracts
it, reading each action again under its row lock: an action another replica lifted
meanwhile is not lifted a second time (no second `action.lifted`, no second change).

On PostgreSQL only: there two transactions interleave; SQLite's writer holds the
whole database from its first statement, so nothing can come in between."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from controlplane.intel.service import IntelService
from controlplane.store.models import AuditEventRow, IndicatorRow
from controlplane.store.types import utcnow
from tests.support.actions import Planned, plan
from tests.support.app import Running, make_settings, serve
from tests.support.databases import PostgresServer, fresh_database

RANGE = "198.51.100.0/24"


@pytest.fixture
def postgres_url(postgres: PostgresServer, tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgresql", tmp_path, postgres) as url:
        yield url


@pytest.fixture
async def api(postgres_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    data = tmp_path / "data"
    data.mkdir()
    async with serve(make_settings(postgres_url, data)) as running:
        yield running


async def _lifted_events(api: Running, action_id: str) -> int:
    async with api.runtime.db.read() as session:
        query = select(func.count()).where(
            col(AuditEventRow.action_id) == action_id, col(AuditEventRow.type) == "action.lifted"
        )
        return int((await session.execute(query)).scalar_one())


@pytest.mark.postgres
async def test_an_action_lifted_meanwhile_is_not_lifted_twice(api: Running) -> None:
    runtime = api.runtime
    [action_id] = await plan(runtime.db, Planned("block", "cidr", RANGE, rule="intel.known_range"))
    raced: list[str] = []

    async def lift_after_another_replica(
        session: AsyncSession, target: str, actor: str, reason: str
    ) -> Any:
        if not raced:
            raced.append(target)
            # Another replica lifts it first, and commits, after this transaction
            # found it among the actions resting on the indicator.
            async with runtime.db.transaction() as other:
                await runtime.remedy.lift(other, target, "replica-2", "retracted there")
        return await runtime.remedy.lift(session, target, actor, reason)

    intel = IntelService(
        runtime.intel.config,
        bundle=lambda: runtime.engines.current.bundle,
        lift=lift_after_another_replica,
        floor=runtime.intel.floor,
    )
    retracted = IndicatorRow(
        id="ind_race",
        kind="cidr",
        value=RANGE,
        source="lab-b",
        confidence=0.9,
        tlp="green",
        created_at=utcnow(),
    )
    async with runtime.db.transaction() as session:
        lifted = await intel.lift_resting_on(session, [retracted], "retracted here", "tests")

    assert raced == [action_id], "the action was not found resting on the indicator"
    assert lifted == [], "an action lifted by another replica was lifted again"
    assert await _lifted_events(api, action_id) == 1
