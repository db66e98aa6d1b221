"""Connector workers: `tollgate serve` with TOLLGATE_ENFORCE=off only writes the change
log; `tollgate worker` processes apply it. On PostgreSQL one worker applies each
connector and another takes over when it stops. Real processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.auth.jobs import Tokens
from controlplane.auth.roles import Role
from controlplane.store.db import Database, upgrade
from tests.support.app import POLICY_DIR
from tests.support.databases import PostgresServer
from tests.support.processes import Process, free_port, started
from tests.support.verdicts import new_subject, verdict

CONNECTOR = {"name": "edge", "type": "memory", "providers": ["lab-a"], "reconcile_seconds": 3600}


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def base_settings(database_url: str, tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "tollgate.yaml"
    config.write_text(json.dumps({"connectors": [CONNECTOR]}), encoding="utf-8")
    return {
        "TOLLGATE_DATABASE_URL": database_url,
        "TOLLGATE_CONFIG": str(config),
        "TOLLGATE_DATA_DIR": str(tmp_path / "data"),
        "TOLLGATE_POLICY_DIR": str(POLICY_DIR),
        "TOLLGATE_ENGINE_WORKERS": "1",
        "TOLLGATE_SPAN_RETENTION_HOURS": "0",
    }


def serve(stack: ExitStack, settings: dict[str, str], tmp_path: Path) -> Process:
    port = free_port()
    env = settings | {"TOLLGATE_ENFORCE": "off", "TOLLGATE_PORT": str(port)}
    return stack.enter_context(started(["serve"], env, port, tmp_path / f"serve-{port}.log"))


def worker(stack: ExitStack, settings: dict[str, str], tmp_path: Path) -> Process:
    port = free_port()
    args = ["worker", "--port", str(port)]
    return stack.enter_context(started(args, settings, port, tmp_path / f"worker-{port}.log"))


async def admin_headers(database_url: str) -> dict[str, str]:
    db = Database(database_url)
    try:
        token, _ = await Tokens(db).create("ops", Role.ADMIN, actor="tests")
    finally:
        await db.dispose()
    return {"Authorization": f"Bearer {token}"}


async def plan_limit(client: httpx.AsyncClient, api: Process) -> str:
    response = await client.post(f"{api.url}/v1/verdicts", json=verdict(subject=new_subject()))
    assert response.status_code == 202, response.text
    [result] = response.json()["results"]
    [action] = result["actions"]
    return str(action["id"])


async def until(check: Any, what: str, tries: int = 600) -> None:
    """Poll `check` (bounded: about 60 s) until it holds."""
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"waited in vain for {what}")


async def state_of(client: httpx.AsyncClient, api: Process, action_id: str) -> str:
    response = await client.get(f"{api.url}/v1/actions/{action_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["state"])


async def roles(client: httpx.AsyncClient, w: Process) -> dict[str, str]:
    body = (await client.get(f"{w.url}/readyz")).json()
    return dict(body["checks"]["connectors"])


async def test_the_api_writes_the_log_and_a_worker_applies_it(
    database_url: str, tmp_path: Path, stack: ExitStack
) -> None:
    settings = base_settings(database_url, tmp_path)
    headers = await admin_headers(database_url)
    api = serve(stack, settings, tmp_path)
    await api.ready()
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        [status] = (await client.get(f"{api.url}/v1/connectors")).json()
        assert status["state"] == "down"
        assert status["detail"] == "no connector worker has reported on it yet"
        action_id = await plan_limit(client, api)
        assert await state_of(client, api, action_id) == "pending"

        w = worker(stack, settings, tmp_path)
        await w.ready()

        async def applied() -> bool:
            return await state_of(client, api, action_id) == "applied"

        await until(applied, "the worker to apply the action")
        assert await roles(client, w) == {"edge": "applying"}

        async def caught_up() -> bool:
            # The start's reconcile may apply the action before its change is drained:
            # the cursor follows a moment later.
            [status] = (await client.get(f"{api.url}/v1/connectors")).json()
            assert status["state"] == "healthy", status
            return status["pending_changes"] == 0

        await until(caught_up, "the worker's cursor to pass the change")
        # The API applies nothing, so it cannot reconcile: it says who does.
        refused = await client.post(f"{api.url}/v1/connectors/edge/reconcile")
        assert refused.status_code == 503
        assert "tollgate worker" in refused.json()["message"]


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database: one applier per connector is its lock."""
    with postgres.database() as url:
        upgrade(url)
        yield url


@pytest.mark.postgres
async def test_one_worker_applies_per_connector_and_another_takes_over(
    postgres_url: str, tmp_path: Path, stack: ExitStack
) -> None:
    database_url = postgres_url
    settings = base_settings(database_url, tmp_path)
    headers = await admin_headers(database_url)
    api = serve(stack, settings, tmp_path)
    first, second = worker(stack, settings, tmp_path), worker(stack, settings, tmp_path)
    await asyncio.gather(api.ready(), first.ready(), second.ready())
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:

        async def one_applies() -> bool:
            seen = [(await roles(client, w))["edge"] for w in (first, second)]
            assert seen.count("applying") <= 1, seen
            return seen.count("applying") == 1

        await until(one_applies, "one of two workers to take the connector")
        applier, standby = (
            (first, second)
            if (await roles(client, first))["edge"] == "applying"
            else (second, first)
        )
        assert (await roles(client, standby))["edge"] == "standing by"
        action_id = await plan_limit(client, api)

        async def applied(action: str) -> bool:
            return await state_of(client, api, action) == "applied"

        await until(lambda: applied(action_id), "the applying worker to apply")

        applier.stop()

        async def took_over() -> bool:
            return (await roles(client, standby))["edge"] == "applying"

        await until(took_over, "the standby worker to take over")
        later = await plan_limit(client, api)
        await until(lambda: applied(later), "the new applier to apply")
