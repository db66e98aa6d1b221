"""The database goes away under a running server and comes back. Meanwhile the API
answers 503 with `Retry-After` and a readable error body, readiness fails and liveness
does not (an orchestrator must not restart a server for its database's outage); once
it is back, everything acknowledged before is there, and the same process serves and
enforces again without a restart. A PostgreSQL of the test's own is crashed for it."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from controlplane.enforce.follower import FOLLOW_LOCK
from controlplane.store.db import upgrade
from tests.integration.connectors.webhook_receiver import WebhookReceiver
from tests.support.fleet import admin_headers, role, serve, server_settings, until, webhook_receiver
from tests.support.private_postgres import PrivatePostgres, private_postgres
from tests.support.processes import Process, free_port, started
from tests.support.verdicts import new_subject, verdict

PROVIDER = "lab-a"


@pytest.fixture
def database() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        upgrade(server.url)
        yield server


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as hook:
        yield hook


async def submit(client: httpx.AsyncClient, server: Process, count: int) -> list[dict[str, Any]]:
    batch = [verdict(subject=new_subject(), provider=PROVIDER) for _ in range(count)]
    answer = await client.post(f"{server.url}/v1/verdicts", json={"verdicts": batch})
    assert answer.status_code == 202, answer.text
    results: list[dict[str, Any]] = answer.json()["results"]
    return results


def keys_of(results: list[dict[str, Any]]) -> set[str]:
    return {a["target"]["value"] for r in results for a in r["actions"]}


async def test_a_database_outage_is_503_and_the_server_recovers_without_a_restart(
    database: PrivatePostgres, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    env = server_settings(database.url, tmp_path, receiver, [PROVIDER])
    env["TOLLGATE_EXPIRY_SECONDS"] = "1"  # the leader's jobs meet the outage too
    headers = await admin_headers(database.url)
    with ExitStack() as stack:
        server = serve(stack, env, tmp_path)
        await server.ready()
        pid = server.process.pid
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:
            before = await submit(client, server, 10)

            async def enforced(results: list[dict[str, Any]]) -> bool:
                """Each action recorded applied, and held by the gateway."""
                for action_id in (a["id"] for r in results for a in r["actions"]):
                    answer = await client.get(f"{server.url}/v1/actions/{action_id}")
                    if answer.json()["state"] != "applied":
                        return False
                return keys_of(results) <= {value for (_, _, value) in receiver.state}

            await until(lambda: enforced(before), "the first actions applied")

            database.crash()
            submitted = await client.post(
                f"{server.url}/v1/verdicts", json=verdict(subject=new_subject())
            )
            listed = await client.get(f"{server.url}/v1/actions")
            one = await client.get(f"{server.url}/v1/verdicts/{before[0]['verdict_id']}")
            for answer in (submitted, listed, one):
                assert answer.status_code == 503, answer.text
                assert int(answer.headers["retry-after"]) > 0
                body = answer.json()
                assert body["error"] == "database_unavailable"
                assert "database is unavailable" in body["message"]
                assert "Traceback" not in answer.text
            ready = await client.get(f"{server.url}/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"].startswith("unreachable")
            assert (await client.get(f"{server.url}/healthz")).status_code == 200
            # The scrape reads in the request's session: the process's own figures are
            # still served, and the database's absence is a figure too.
            scraped = await client.get(f"{server.url}/metrics")
            assert scraped.status_code == 200, scraped.text
            assert "tollgate_database_up 0.0" in scraped.text
            assert "tollgate_verdicts_received_total" in scraped.text
            await asyncio.sleep(3)  # a few ticks of the periodic jobs, during the outage

            database.start()

            async def serving() -> bool:
                answer = await client.get(f"{server.url}/readyz")
                return answer.status_code == 200

            await until(serving, "readiness once the database is back")
            for result in before:
                stored = await client.get(f"{server.url}/v1/verdicts/{result['verdict_id']}")
                assert stored.status_code == 200, stored.text
                assert stored.json()["decision_id"] == result["decision_id"]
                assert [a["state"] for a in stored.json()["actions"]] == ["applied"]
            after = await submit(client, server, 10)
            await until(lambda: enforced(after), "the new actions applied")

            async def leading() -> bool:
                return await role(client, server) == "leading"

            await until(leading, "the periodic jobs led again (a new leadership connection)")
            assert server.process.poll() is None and server.process.pid == pid, "no restart"


def worker(stack: ExitStack, settings: dict[str, str], tmp_path: Path) -> Process:
    port = free_port()
    args = ["worker", "--port", str(port)]
    return stack.enter_context(started(args, settings, port, tmp_path / f"worker-{port}.log"))


async def appliers(client: httpx.AsyncClient, workers: list[Process]) -> int:
    """How many workers say they apply the connector now (never more than one)."""
    count = 0
    for w in workers:
        try:
            answer = await client.get(f"{w.url}/readyz", timeout=5)
        except httpx.TransportError as exc:
            raise AssertionError(f"{w.url} stopped answering: {w.log.read_text()}") from exc
        count += answer.json()["checks"]["connectors"]["hooks"] == "applying"
    assert count <= 1, "two workers apply one connector at once"
    return count


async def test_after_an_outage_one_worker_applies_a_connector_not_two(
    database: PrivatePostgres, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """The applier's advisory lock dies with the database: once it is back, whoever
    takes the lock again applies, and the worker that held it before does not go on
    applying without it."""
    env = server_settings(database.url, tmp_path, receiver, [PROVIDER])
    headers = await admin_headers(database.url)
    with ExitStack() as stack:
        api = serve(stack, env | {"TOLLGATE_ENFORCE": "off"}, tmp_path)
        workers = [worker(stack, env, tmp_path), worker(stack, env, tmp_path)]
        await asyncio.gather(api.ready(), *(w.ready() for w in workers))
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:

            async def one_applies() -> bool:
                return await appliers(client, workers) == 1

            await until(one_applies, "one worker applying")
            database.crash()
            await asyncio.sleep(2)
            database.start()
            await asyncio.gather(api.ready(), *(w.ready() for w in workers))
            # Longer than a standby's pause between two tries of the lock (5 s): had
            # the old applier kept going without its lock, both would apply by now.
            for _ in range(80):
                await appliers(client, workers)
                await asyncio.sleep(0.1)
            await until(one_applies, "one worker applying again")
            results = await submit(client, api, 5)

            async def at_gateway() -> bool:
                return keys_of(results) <= {value for (_, _, value) in receiver.state}

            await until(at_gateway, "the new actions at the gateway")
        assert set(receiver.applied.values()) == {1}


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def lock_holder(url: str, key: int) -> int | None:
    """The backend pid holding the session advisory lock `key`, if any."""
    with psycopg.connect(libpq(url)) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = %s AND objid = %s",
            [(key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF],
        ).fetchone()
        return int(row[0]) if row else None


async def test_a_worker_whose_lock_connection_is_cut_stops_applying(
    database: PrivatePostgres, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """The database stays up, but the one connection holding the connector's lock is
    terminated (an idle timeout, a proxy, an operator): the worker that held it stops
    applying, and one worker (it or the other) takes the lock again."""
    env = server_settings(database.url, tmp_path, receiver, [PROVIDER])
    headers = await admin_headers(database.url)
    key = FOLLOW_LOCK + zlib.crc32(b"hooks") % 0xFF
    with ExitStack() as stack:
        api = serve(stack, env | {"TOLLGATE_ENFORCE": "off"}, tmp_path)
        workers = [worker(stack, env, tmp_path), worker(stack, env, tmp_path)]
        await asyncio.gather(api.ready(), *(w.ready() for w in workers))
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:

            async def one_applies() -> bool:
                return await appliers(client, workers) == 1

            await until(one_applies, "one worker applying")
            holder = lock_holder(database.url, key)
            assert holder is not None
            with psycopg.connect(libpq(database.url), autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", [holder])
            for _ in range(80):  # past a standby's pause between two tries (5 s)
                await appliers(client, workers)
                await asyncio.sleep(0.1)
            await until(one_applies, "one worker applying again")
            assert lock_holder(database.url, key) not in (None, holder)
            results = await submit(client, api, 5)

            async def at_gateway() -> bool:
                return keys_of(results) <= {value for (_, _, value) in receiver.state}

            await until(at_gateway, "the new actions at the gateway")
