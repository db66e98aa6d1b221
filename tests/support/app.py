"""Running the API in the test's event loop.

`litestar.testing.AsyncTestClient` runs the app on a blocking portal in another
thread and blocks the caller's loop for each request, so `asyncio.gather` of its
requests runs them one after another. Here the app runs in the test's own loop,
as under uvicorn: its lifespan (startup: migrations, policy load, recovery; shutdown)
runs in a task of its own, and requests go through `httpx.ASGITransport`, so
concurrent requests really interleave and tests can use the runtime's database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from controlplane.api.app import create_app
from controlplane.auth.roles import Role
from controlplane.runtime import Runtime
from controlplane.settings import Settings

REPO = Path(__file__).resolve().parents[2]
POLICY_DIR = REPO / "policies"
SCENARIO = REPO / "controlplane" / "demo" / "scenario.json"


def make_settings(
    database_url: str,
    data_dir: Path,
    *,
    policy_dir: Path = POLICY_DIR,
    entrypoint: str = "tollgate.decision",
    connectors: list[dict[str, Any]] | None = None,
    providers: dict[str, Any] | None = None,
    crowdsec: dict[str, Any] | None = None,
) -> Settings:
    """Settings for one test app; every field that could come from the environment is set."""
    config = data_dir / "tollgate.yaml"
    document: dict[str, Any] = {"connectors": connectors or []}
    if providers is not None:
        document["providers"] = providers
    if crowdsec is not None:
        document["crowdsec"] = crowdsec
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    return Settings(
        config=config,
        data_dir=data_dir,
        database_url=database_url,
        policy_dir=policy_dir,
        entrypoint=entrypoint,
        engine_workers=2,
        # Started at the first batch: most tests send none, and two processes a test
        # would cost the suite minutes. tests/unit/engine covers starting them early.
        engine_prestart=False,
        takeover_seconds=0.0,  # one replica per test: it leads at once
        otlp_endpoint="",
        policy_allow_uncommitted=False,
    )


@dataclass
class Running:
    """A started app: its HTTP client and the runtime behind it."""

    client: httpx.AsyncClient
    runtime: Runtime
    settings: Settings

    async def token(self, role: Role, name: str = "test") -> dict[str, str]:
        """Headers carrying a new token with `role`."""
        token, _ = await self.runtime.tokens.create(name, role, actor="tests")
        return {"Authorization": f"Bearer {token}"}

    async def submit(self, body: Any, **kwargs: Any) -> dict[str, Any]:
        """POST verdicts, expect 202, return the body."""
        response = await self.client.post("/v1/verdicts", json=body, **kwargs)
        assert response.status_code == 202, response.text
        result: dict[str, Any] = response.json()
        return result


@asynccontextmanager
async def serve_policy(
    database_url: str, directory: Path, rego: str, entrypoint: str
) -> AsyncIterator[Running]:
    """An app deciding with one policy module (`rego`), its files under `directory`."""
    policies, data = directory / "policies", directory / "data"
    policies.mkdir()
    data.mkdir()
    (policies / "policy.rego").write_text(rego, encoding="utf-8")
    settings = make_settings(database_url, data, policy_dir=policies, entrypoint=entrypoint)
    async with serve(settings) as running:
        yield running


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[Running]:
    """Start the app (startup hooks run), yield a client, then shut it down."""
    runtime = Runtime.create(settings)
    app = create_app(settings, runtime)
    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(lifespan(), name="tollgate-lifespan")
    ready = asyncio.create_task(started.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if not started.is_set():
        ready.cancel()
        try:
            task.result()
        except BaseExceptionGroup as group:
            # litestar's lifespan runs inside an anyio task group, which wraps the error.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        raise AssertionError("the app's lifespan ended before startup completed")
    try:
        # The client acts as an admin; tests of roles make their own tokens.
        admin, _ = await runtime.tokens.create("test-admin", Role.ADMIN, actor="tests")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://tollgate.test",
            headers={"Authorization": f"Bearer {admin}"},
        ) as client:
            yield Running(client, runtime, settings)
    finally:
        stop.set()
        await task
