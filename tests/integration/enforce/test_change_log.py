"""The change log: connectors apply what changed, in order, after a durable cursor.

A plan, a lift and a plan again on one entry end as the log's last word says; a lift
that races a plan never leaves a lifted entry at the gateway; an outage holds the
cursor and loses nothing; each action gets exactly one `action.applied`; and a
process killed (SIGKILL) between an apply and saving its cursor re-applies after a
restart, idempotently, recording the apply once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import col

from connectors.memory import MemoryConnector
from controlplane.auth.jobs import Tokens
from controlplane.auth.roles import Role
from controlplane.enforce import repository
from controlplane.store.db import Database, upgrade
from controlplane.store.models import ActionRow, AuditEventRow, ChangeRow
from tests.integration.connectors.haproxy_fixtures import (  # noqa: F401 (fixtures)
    Gateway,
    fingerprint,
    haproxy_binary_fixture,
    haproxy_fixture,
    haproxy_session_fixture,
    model_stub_fixture,
)
from tests.support.app import POLICY_DIR, REPO, Running, make_settings, serve
from tests.support.processes import free_port
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


async def plan_limit(api: Running, subject: dict[str, Any]) -> dict[str, Any]:
    [result] = (await api.submit(verdict(subject=subject)))["results"]
    [action] = result["actions"]
    return action  # type: ignore[no-any-return]


async def lift(api: Running, action_id: str) -> None:
    response = await api.client.post(f"/v1/actions/{action_id}/lift", json={"reason": "test"})
    assert response.status_code == 200, response.text


async def applied_events(api: Running, action_id: str) -> int:
    rows = await fetch(
        api.runtime.db,
        AuditEventRow,
        col(AuditEventRow.action_id) == action_id,
        col(AuditEventRow.type) == "action.applied",
    )
    return len(rows)


async def test_every_change_is_logged_in_order_with_its_cause(api: Running) -> None:
    subject = new_subject()
    action = await plan_limit(api, subject)
    await lift(api, action["id"])

    changes = await fetch(api.runtime.db, ChangeRow, col(ChangeRow.action_id) == action["id"])

    assert [c.cause for c in sorted(changes, key=lambda c: c.seq)] == ["planned", "lifted"]
    assert {(c.type, c.target_kind, c.target_value) for c in changes} == {
        ("rate_limit", "api_key", subject["api_key_id"])
    }


async def test_plan_lift_plan_on_one_entry_ends_as_the_last_change_says(api: Running) -> None:
    subject = new_subject()
    key = ("rate_limit", "api_key", subject["api_key_id"])
    gateway(api).down = True  # the follower holds its cursor while all of it happens
    first = await plan_limit(api, subject)
    await lift(api, first["id"])
    # Stronger evidence than the lifted action's: the cool-down lets the policy act again.
    [result] = (await api.submit(verdict(subject=subject, score=0.85)))["results"]
    again = [a for a in result["actions"] if a["type"] != "flag_review"]
    gateway(api).down = False
    api.runtime.enforcer.wake()
    await api.runtime.enforcer.settle()

    held = {(a["type"], a["target"]["kind"], a["target"]["value"]) for a in again}
    assert held and held <= set(gateway(api).entries)
    if key not in held:  # the repeat escalated: the lifted limit stays lifted
        assert key not in gateway(api).entries
    for action in again:
        await lift(api, action["id"])
    await api.runtime.enforcer.settle()
    assert not held & set(gateway(api).entries)


async def test_a_lift_racing_its_plan_never_leaves_the_entry_applied(api: Running) -> None:
    subjects = [new_subject() for _ in range(8)]
    actions = await asyncio.gather(*(plan_limit(api, s) for s in subjects))
    # Lifts race the follower, which may be applying the plans at this moment.
    await asyncio.gather(*(lift(api, a["id"]) for a in actions))
    await api.runtime.enforcer.settle()

    for subject in subjects:
        assert ("rate_limit", "api_key", subject["api_key_id"]) not in gateway(api).entries


async def test_an_outage_holds_the_cursor_and_every_change_lands_after_it(api: Running) -> None:
    gateway(api).down = True
    subjects = [new_subject() for _ in range(20)]
    actions = [await plan_limit(api, s) for s in subjects]
    await api.runtime.enforcer.settle()
    [status] = (await api.client.get("/v1/connectors")).json()
    assert status["state"] == "down" and status["pending_changes"] >= 20

    gateway(api).down = False
    api.runtime.enforcer.wake()
    await api.runtime.enforcer.settle()

    [status] = (await api.client.get("/v1/connectors")).json()
    assert status["pending_changes"] == 0 and status["state"] == "healthy"
    for subject in subjects:
        assert ("rate_limit", "api_key", subject["api_key_id"]) in gateway(api).entries
    for action in actions:
        [row] = await fetch(api.runtime.db, ActionRow, col(ActionRow.id) == action["id"])
        assert row.state == "applied"
        assert await applied_events(api, action["id"]) == 1


async def test_a_permanent_failure_is_shown_and_not_retried(api: Running) -> None:
    subject = new_subject()
    gateway(api).reject.add(("rate_limit", "api_key", subject["api_key_id"]))
    action = await plan_limit(api, subject)
    await api.runtime.enforcer.settle()
    tries = gateway(api).applies

    report = await api.runtime.enforcer.reconcile("edge")

    assert gateway(api).applies == tries, "a permanent failure is not sent again"
    assert report.rejected == 1
    [row] = await fetch(api.runtime.db, ActionRow, col(ActionRow.id) == action["id"])
    assert row.state == "failed"
    [status] = (await api.client.get("/v1/connectors")).json()
    assert status["state"] == "degraded" and status["rejected"] == 1
    assert "cannot hold" in (status["last_error"] or "")


# -- kill -9 between an apply and its cursor ------------------------------------------

LAUNCHER = """
import json, os, signal, sys
from pathlib import Path
import uvicorn
from controlplane.api.app import create_app
from controlplane.enforce import follower
from controlplane.settings import Settings

cfg = json.loads(sys.argv[1])
if cfg["kill_after_apply"]:
    # The gateway has applied the batch; its outcome and cursor are not saved yet.
    original = follower.Follower._commit

    async def commit(self, desired, applied, present, now, *, cursor=None, **rest):
        if cursor is not None and applied.result.done:
            os.kill(os.getpid(), signal.SIGKILL)
        return await original(self, desired, applied, present, now, cursor=cursor, **rest)

    follower.Follower._commit = commit
settings = Settings(data_dir=Path(cfg["data_dir"]), database_url=cfg["url"],
                    policy_dir=Path(cfg["policies"]), config=Path(cfg["config"]),
                    otlp_endpoint="", engine_workers=1)
uvicorn.run(create_app(settings), host="127.0.0.1", port=cfg["port"], log_level="warning")
"""


@pytest.fixture
def launch(database_url: str, tmp_path: Path, haproxy: Gateway) -> Iterator[Any]:
    processes: list[subprocess.Popen[bytes]] = []
    config = tmp_path / "tollgate.yaml"
    connector = {
        "name": "edge",
        "type": "haproxy",
        "providers": ["lab-a"],
        "reconcile_seconds": 3600,
        "options": haproxy.connector_options(),
    }
    config.write_text(json.dumps({"connectors": [connector]}), encoding="utf-8")

    def start(kill_after_apply: bool) -> str:
        port = free_port()
        cfg = {
            "data_dir": str(tmp_path),
            "url": database_url,
            "policies": str(POLICY_DIR),
            "config": str(config),
            "port": port,
            "kill_after_apply": kill_after_apply,
        }
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, json.dumps(cfg)], cwd=REPO, env=os.environ.copy()
        )
        processes.append(process)
        return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)


async def ready(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"the server at {url} did not become ready")


async def test_sigkill_between_apply_and_cursor_reapplies_once(
    database_url: str, launch: Any, haproxy: Gateway
) -> None:
    await asyncio.to_thread(upgrade, database_url)
    db = Database(database_url)
    try:
        token, _ = await Tokens(db).create("detector", Role.ADMIN, actor="tests")
        headers = {"Authorization": f"Bearer {token}"}
        key = fingerprint("sk-killed-between-apply-and-cursor")
        url = launch(kill_after_apply=True)
        await ready(url)
        document = verdict(subject=new_subject() | {"api_key_id": key})
        async with httpx.AsyncClient(timeout=30) as client:
            # The process may die before it answers: the verdict was stored first.
            with contextlib.suppress(httpx.TransportError):
                await client.post(f"{url}/v1/verdicts", json=document, headers=headers)
        killed = await _until(lambda: _exited(url), what="the kill after the apply")
        assert killed
        rate_map = haproxy.proxy.options.rate_limit_map
        assert key in await haproxy.runtime(f"show map {rate_map}"), "applied before the kill"
        [action] = await fetch(db, ActionRow, col(ActionRow.target_value) == key)
        assert action.state == "pending"
        async with db.read() as session:
            assert (await repository.cursors(session)).get("edge", 0) < (
                await repository.change_head(session)
            )

        url = launch(kill_after_apply=False)
        await ready(url)

        async def applied() -> bool:
            [row] = await fetch(db, ActionRow, col(ActionRow.id) == action.id)
            return row.state == "applied"

        assert await _until(applied, what="the action applied after the restart")
        events = await fetch(
            db,
            AuditEventRow,
            col(AuditEventRow.action_id) == action.id,
            col(AuditEventRow.type) == "action.applied",
        )
        assert len(events) == 1
        shown = await haproxy.runtime(f"show map {rate_map}")
        assert shown.count(key) == 1, "applied twice, held once"

        async def caught_up() -> bool:
            async with db.read() as session:
                head = await repository.change_head(session)
                return (await repository.cursors(session)).get("edge", 0) == head

        assert await _until(caught_up, what="the cursor at the head of the log")
    finally:
        await db.dispose()


async def _exited(url: str) -> bool:
    async with httpx.AsyncClient() as client:
        try:
            await client.get(f"{url}/healthz", timeout=1)
        except httpx.TransportError:
            return True
    return False


async def _until(check: Any, *, what: str, tries: int = 300) -> bool:
    """Poll `check` (bounded: about 30 s) until it holds."""
    for _ in range(tries):
        if await check():
            return True
        await asyncio.sleep(0.1)
    raise AssertionError(f"waited in vain for {what}")
