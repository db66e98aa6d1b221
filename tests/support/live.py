"""A real Tollgate server for tools that speak HTTP from outside the test's process:
uvicorn on a free port of 127.0.0.1, in a thread, with tokens made beforehand."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import uvicorn

from controlplane.api.app import create_app
from controlplane.auth.jobs import Tokens
from controlplane.auth.roles import Role
from controlplane.settings import Settings
from controlplane.store.db import Database, upgrade
from tests.support.processes import free_port

READY_SECONDS = 60.0


@dataclass(frozen=True)
class LiveServer:
    url: str
    tokens: dict[Role, str]


async def _tokens(url: str, roles: tuple[Role, ...]) -> dict[Role, str]:
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    try:
        service = Tokens(db)
        return {
            role: (await service.create(f"live-{role.value}", role, actor="tests"))[0]
            for role in roles
        }
    finally:
        await db.dispose()


@asynccontextmanager
async def live_server(
    settings: Settings, roles: tuple[Role, ...] = (Role.ADMIN,)
) -> AsyncIterator[LiveServer]:
    """Serve `settings` until the block ends; fail if it is not ready in time."""
    tokens = await _tokens(settings.resolved_database_url, roles)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="tollgate-live", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_SECONDS
        async with httpx.AsyncClient(base_url=url) as client:
            while True:
                if not thread.is_alive():
                    raise AssertionError("the server stopped during start-up: see the log")
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"the server was not ready in {READY_SECONDS:.0f}s")
                await asyncio.sleep(0.2)
        yield LiveServer(url, tokens)
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 15)
