"""`tollgate serve` processes enforcing through a real webhook receiver on 127.0.0.1:
what the crash, outage and hand-over tests share. The receiver runs in the test's
process, so every server, whichever applies, enforces at the same gateway."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from controlplane.auth.jobs import Tokens
from controlplane.auth.roles import Role
from controlplane.store.db import Database
from tests.integration.connectors.webhook_receiver import WebhookReceiver
from tests.support.app import POLICY_DIR
from tests.support.processes import Process, free_port, started

KEY = "fleet-signing-key-7c1e4b9a2d5f"
KEY_ENV = "TOLLGATE_TEST_WEBHOOK_KEY"


def server_settings(
    database_url: str,
    tmp_path: Path,
    receiver: WebhookReceiver,
    providers: list[str],
    *,
    policy_dir: Path = POLICY_DIR,
) -> dict[str, str]:
    """Settings of a server whose one connector, `hooks`, posts to `receiver`."""
    connector = {
        "name": "hooks",
        "type": "webhook",
        "providers": providers,
        "reconcile_seconds": 3600,
        "timeout_seconds": 2,
        "options": {"url": receiver.url, "observe": True},
        "secrets": {"signing_key": {"env": KEY_ENV}},
    }
    config = tmp_path / "tollgate.yaml"
    config.write_text(json.dumps({"connectors": [connector]}), encoding="utf-8")
    return {
        "TOLLGATE_DATABASE_URL": database_url,
        "TOLLGATE_CONFIG": str(config),
        "TOLLGATE_DATA_DIR": str(tmp_path / "data"),
        "TOLLGATE_POLICY_DIR": str(policy_dir),
        "TOLLGATE_ENGINE_WORKERS": "1",
        "TOLLGATE_SPAN_RETENTION_HOURS": "0",
        KEY_ENV: KEY,
    }


def serve(stack: ExitStack, settings: dict[str, str], tmp_path: Path) -> Process:
    """`tollgate serve` on a free port, stopped (if still running) when `stack` closes."""
    port = free_port()
    env = settings | {"TOLLGATE_PORT": str(port)}
    return stack.enter_context(started(["serve"], env, port, tmp_path / f"serve-{port}.log"))


def receiver_targets(receiver: WebhookReceiver) -> dict[str, set[str]]:
    """Target values by op (`add`, `remove`) of the changes the receiver answered 200."""
    ops: dict[str, set[str]] = {"add": set(), "remove": set()}
    for post in list(receiver.received):
        if post.method == "POST" and post.status == 200:
            for change in post.document["changes"]:
                ops[change["op"]].add(change["entry"]["target"]["value"])
    return ops


async def role(client: httpx.AsyncClient, server: Process) -> str:
    """`leading` or `standing by` (the periodic jobs), as its /readyz says."""
    answer = (await client.get(f"{server.url}/readyz", timeout=5)).json()
    return str(answer["checks"]["periodic_jobs"])


async def admin_headers(database_url: str) -> dict[str, str]:
    """Headers carrying a new admin token of that database."""
    db = Database(database_url)
    try:
        token, _ = await Tokens(db).create("ops", Role.ADMIN, actor="tests")
    finally:
        await db.dispose()
    return {"Authorization": f"Bearer {token}"}


async def until(check: Callable[[], Awaitable[bool]], what: str, tries: int = 900) -> None:
    """Poll `check` (bounded: about 90 s) until it holds."""
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"waited in vain for {what}")


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A receiver checking signatures with `KEY`, stopped at the end."""
    hook = WebhookReceiver(KEY).start()
    try:
        yield hook
    finally:
        hook.stop()
