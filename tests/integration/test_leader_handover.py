"""Leader hand-over between real processes: three `tollgate serve` on one PostgreSQL, the
one leading the periodic jobs killed with SIGKILL. Another takes the jobs over within a
few of the configured intervals, and every action is still applied once and expired
once: none done twice, none lost. The gateway is a real webhook receiver on 127.0.0.1,
shared by the three; the actions' TTL is seconds, so the expiry job has work to show."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from sqlmodel import col

from controlplane.store.db import Database, upgrade
from controlplane.store.models import AuditEventRow
from tests.integration.connectors.webhook_receiver import WebhookReceiver
from tests.integration.policy.policy_copies import SETTINGS, commit, init_repo, settings_document
from tests.support.databases import PostgresServer
from tests.support.fleet import (
    admin_headers,
    receiver_targets,
    role,
    serve,
    server_settings,
    webhook_receiver,
)
from tests.support.processes import Process
from tests.support.store import fetch
from tests.support.verdicts import new_subject, verdict

PROVIDER = "lab-ha"
TTL_SECONDS = 12
"""Longer than a connector's hand-over (a standby follower tries the lock every 5 s):
an action planned as its applier dies is still due when the next one takes over."""
INTERVAL = 1.0
"""TOLLGATE_EXPIRY_SECONDS: how often every replica expires what is due, and how often a
replica standing by looks for the lead (so how soon it notices the lock is free)."""
TAKE_OVER_BOUND = 15 * INTERVAL
"""How long the test waits for a successor: generous, as the machine is shared."""


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    with postgres.database() as url:
        upgrade(url)
        yield url


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as hook:
        yield hook


def short_lived_policies(root: Path) -> Path:
    """The repository's policies, committed, with first offenses of `PROVIDER` limited
    for `TTL_SECONDS` only (an override for one provider: the policy tests still pass)."""
    init_repo(root)
    document = settings_document(root)
    document["providers"][PROVIDER] = {"graduated": {"first_offense": {"ttl": f"{TTL_SECONDS}s"}}}
    (root / SETTINGS).write_text(json.dumps(document, indent=2), encoding="utf-8")
    commit(root, f"first offenses of {PROVIDER} last {TTL_SECONDS}s")
    return root


async def the_leader(client: httpx.AsyncClient, servers: list[Process], tries: int) -> Process:
    """The one server leading the periodic jobs; never two at once (bounded wait)."""
    for _ in range(tries):
        roles = [await role(client, s) for s in servers]
        assert roles.count("leading") <= 1, f"two leaders at once: {roles}"
        if roles.count("leading") == 1:
            return servers[roles.index("leading")]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no server took the periodic jobs: {roles}")


async def submit(client: httpx.AsyncClient, servers: list[Process], count: int) -> list[str]:
    """`count` first offenses of `PROVIDER`, spread over `servers`: the planned actions."""
    planned = []
    for n in range(count):
        server = servers[n % len(servers)]
        document = verdict(subject=new_subject(), provider=PROVIDER)
        answer = await client.post(f"{server.url}/v1/verdicts", json=document)
        assert answer.status_code == 202, answer.text
        [result] = answer.json()["results"]
        [action] = result["actions"]
        assert (action["type"], action["ttl_seconds"]) == ("rate_limit", TTL_SECONDS), action
        planned.append(str(action["id"]))
    return planned


async def states(client: httpx.AsyncClient, server: Process, ids: list[str]) -> set[str]:
    found = set()
    for action_id in ids:
        answer = await client.get(f"{server.url}/v1/actions/{action_id}")
        assert answer.status_code == 200, answer.text
        found.add(str(answer.json()["state"]))
    return found


async def until_expired(
    client: httpx.AsyncClient, server: Process, ids: list[str], tries: int = 600
) -> None:
    """Every action applied, then expired (by any replica; bounded: about 60 s)."""
    for _ in range(tries):
        if await states(client, server, ids) == {"expired"}:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not all expired: {await states(client, server, ids)}")


async def events_per_action(database_url: str, kind: str) -> Counter[str]:
    db = Database(database_url)
    try:
        rows = await fetch(db, AuditEventRow, col(AuditEventRow.type) == kind)
    finally:
        await db.dispose()
    return Counter(str(r.action_id) for r in rows)


@pytest.mark.postgres
async def test_the_periodic_jobs_move_to_another_process_when_the_leader_is_killed(
    postgres_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    policies = short_lived_policies(tmp_path / "policies")
    env = server_settings(postgres_url, tmp_path, receiver, [PROVIDER], policy_dir=policies)
    env["TOLLGATE_EXPIRY_SECONDS"] = str(INTERVAL)
    headers = await admin_headers(postgres_url)
    with ExitStack() as stack:
        servers = [serve(stack, env, tmp_path) for _ in range(3)]
        await asyncio.gather(*(s.ready() for s in servers))
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:
            leader = await the_leader(client, servers, tries=int(TAKE_OVER_BOUND * 10))

            # What the three planned is applied, then expired.
            before = await submit(client, servers, 6)
            await until_expired(client, servers[0], before)

            # Planned, not yet expired, when the leader dies without a word.
            during = await submit(client, servers, 6)
            leader.process.kill()
            leader.process.wait(10)
            survivors = [s for s in servers if s is not leader]
            successor = await the_leader(client, survivors, tries=int(TAKE_OVER_BOUND * 10))

            after = await submit(client, survivors, 6)
            await until_expired(client, successor, during + after)

    everything = before + during + after
    applied = await events_per_action(postgres_url, "action.applied")
    expired = await events_per_action(postgres_url, "action.expired")
    assert {a: applied[a] for a in everything} == dict.fromkeys(everything, 1), "applied once each"
    assert {a: expired[a] for a in everything} == dict.fromkeys(everything, 1), "expired once each"
    # At the gateway: each entry was added and removed again, each change applied once.
    assert set(receiver.applied.values()) == {1}
    seen = receiver_targets(receiver)
    assert len(seen["add"]) == len(everything) and seen["add"] == seen["remove"]
    assert not receiver.state, f"entries left at the gateway: {list(receiver.state)}"
