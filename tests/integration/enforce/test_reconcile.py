"""Desired state reaches the gateway: push on change, reconcile repairs drift, outages
lose nothing, failures are visible, lifts and expiry remove entries. The gateway
here is the in-memory connector (`connectors.memory`); real gateways have their own
integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col

from connectors.memory import MemoryConnector
from controlplane.domain.redact import key_handle
from controlplane.enforce.sdk import Entry, EntryType, GatewayState
from controlplane.store.models import ActionEnforcementRow, ActionRow, AuditEventRow
from controlplane.store.types import utcnow
from tests.support.app import Running, make_settings, serve
from tests.support.store import fetch
from tests.support.verdicts import new_subject, verdict

CONNECTOR = {"name": "edge", "type": "memory", "providers": ["lab-a"], "reconcile_seconds": 3600}


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    async with serve(make_settings(database_url, tmp_path, connectors=[CONNECTOR])) as running:
        yield running


def gateway(api: Running) -> MemoryConnector:
    connector = api.runtime.enforcer._running["edge"].connector
    assert isinstance(connector, MemoryConnector)
    return connector


async def first_offense(api: Running, provider: str = "lab-a") -> dict[str, object]:
    document = verdict(subject=new_subject(), provider=provider)
    [result] = (await api.submit(document))["results"]
    await api.runtime.enforcer.settle()
    [action] = result["actions"]
    assert action["type"] == "rate_limit"
    return action  # type: ignore[no-any-return]


async def state(api: Running, action_id: str) -> str:
    [row] = await fetch(api.runtime.db, ActionRow, col(ActionRow.id) == action_id)
    return row.state


async def test_a_planned_action_is_pushed_at_once(api: Running) -> None:
    action = await first_offense(api)
    key = ("rate_limit", "api_key", action["target"]["value"])  # type: ignore[index]

    assert key in gateway(api).entries
    assert gateway(api).entries[key].requests_per_minute == 60
    assert await state(api, str(action["id"])) == "applied"
    [status] = (await api.client.get("/v1/connectors")).json()
    assert (status["state"], status["pending_changes"], status["lag_seconds"]) == ("healthy", 0, 0)
    # Desired and applied counts are the last full reconcile's.
    await api.runtime.enforcer.reconcile("edge")
    [status] = (await api.client.get("/v1/connectors")).json()
    assert (status["desired"], status["applied"], status["healthy"]) == (1, 1, True)


async def test_other_providers_do_not_reach_this_connector(api: Running) -> None:
    await first_offense(api, provider="lab-b")
    assert gateway(api).entries == {}


async def test_reconcile_repairs_drift_both_ways(api: Running) -> None:
    action = await first_offense(api)
    key = ("rate_limit", "api_key", action["target"]["value"])  # type: ignore[index]
    stray = ("block", "ip", "192.0.2.99")
    del gateway(api).entries[key]  # removed by hand at the gateway
    gateway(api).entries[stray] = Entry(EntryType.BLOCK, "ip", "192.0.2.99")  # added by hand

    report = (await api.client.post("/v1/connectors/edge/reconcile")).json()

    assert key in gateway(api).entries and stray not in gateway(api).entries
    assert (report["added"], report["removed"], report["drift_repaired"]) == (1, 1, 1)


async def test_an_outage_delays_and_loses_nothing(api: Running) -> None:
    gateway(api).down = True
    action = await first_offense(api)
    [status] = (await api.client.get("/v1/connectors")).json()
    assert status["healthy"] is False and "unavailable" in status["last_error"]
    assert await state(api, str(action["id"])) == "pending"

    gateway(api).down = False
    await api.runtime.enforcer.reconcile("edge")

    assert await state(api, str(action["id"])) == "applied"
    [status] = (await api.client.get("/v1/connectors")).json()
    assert (status["applied"], status["lag_seconds"]) == (1, 0.0)


async def test_a_refused_entry_fails_visibly_after_retries_then_recovers(api: Running) -> None:
    subject = new_subject()
    gateway(api).refuse.add(("rate_limit", "api_key", subject["api_key_id"]))
    [result] = (await api.submit(verdict(subject=subject)))["results"]
    await api.runtime.enforcer.settle()
    action_id = result["actions"][0]["id"]

    assert await state(api, action_id) == "failed"
    [row] = await fetch(
        api.runtime.db, ActionEnforcementRow, col(ActionEnforcementRow.action_id) == action_id
    )
    assert row.attempts >= 4 and "refused" in (row.error or "")
    assert subject["api_key_id"] not in (row.error or ""), "key ids are shown as handles"
    assert key_handle(subject["api_key_id"]) in (row.error or "")
    failed_events = await fetch(
        api.runtime.db,
        AuditEventRow,
        col(AuditEventRow.action_id) == action_id,
        col(AuditEventRow.type) == "action.failed",
    )
    assert len(failed_events) == 1

    gateway(api).refuse.clear()
    await api.runtime.enforcer.reconcile("edge")
    assert await state(api, action_id) == "applied"


async def test_lift_removes_it_and_records_who_and_why(api: Running) -> None:
    action = await first_offense(api)
    key = ("rate_limit", "api_key", action["target"]["value"])  # type: ignore[index]

    response = await api.client.post(
        f"/v1/actions/{action['id']}/lift", json={"reason": "appeal upheld: eval lab"}
    )
    await api.runtime.enforcer.settle()

    assert response.status_code == 200 and response.json()["state"] == "lifted"
    assert key not in gateway(api).entries
    [event] = await fetch(
        api.runtime.db,
        AuditEventRow,
        col(AuditEventRow.action_id) == action["id"],
        col(AuditEventRow.type) == "action.lifted",
    )
    assert event.actor == "test-admin" and event.payload["reason"] == "appeal upheld: eval lab"
    again = await api.client.post(f"/v1/actions/{action['id']}/lift", json={"reason": "again"})
    assert again.status_code == 409


async def test_expiry_removes_it_on_time(api: Running) -> None:
    action = await first_offense(api)
    key = ("rate_limit", "api_key", action["target"]["value"])  # type: ignore[index]
    async with api.runtime.db.write() as session, session.begin():
        await session.execute(
            update(ActionRow)
            .where(col(ActionRow.id) == action["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )

    assert await api.runtime.enforcer.expire() == 1
    await api.runtime.enforcer.settle()

    assert await state(api, str(action["id"])) == "expired"
    assert key not in gateway(api).entries


class Walked(frozenset[Entry]):
    """A gateway's entries that say whether something is walking through them now."""

    walking = False
    walked = False

    def __iter__(self) -> Iterator[Entry]:
        self.walking = True
        try:
            yield from super().__iter__()
        finally:
            self.walking, self.walked = False, True


async def test_the_worker_loop_runs_while_a_reconcile_indexes_a_large_gateway(
    api: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a gateway holds is indexed by key at each full reconcile (50,000 entries
    here, a million in production): meanwhile the worker's loop, which checks the
    follower's lock and applies the other connectors' batches, keeps running. A ticker
    on that loop counts its turns while the entries are walked: none at all when the
    walk held the loop; from a thread, the loop takes the GIL back at least every switch
    interval (5 ms) of a walk that takes tens of them."""
    held = Walked(
        Entry(EntryType.BLOCK, "ip", f"10.1.{i >> 8 & 255}.{i & 255}") for i in range(50_000)
    )
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while not held.walked:
            turns += held.walking
            await asyncio.sleep(0)

    async def observe() -> GatewayState:
        asyncio.get_running_loop().create_task(ticker())  # on the worker's loop
        return GatewayState(held)

    monkeypatch.setattr(gateway(api), "observe", observe)
    report = await api.runtime.enforcer.reconcile("edge")

    assert report.removed == 50_000  # strays: no action asks for them
    assert held.walked
    assert turns >= 3
