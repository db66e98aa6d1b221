"""A real Tollgate server (uvicorn on 127.0.0.1, in a thread) seeded with the demo
scenario through its API, and Debian's Chromium driven by Playwright.

The browser is `/usr/bin/chromium` (`make test` installs it); `playwright install` is
never run, so nothing is downloaded. Without Chromium the tests fail saying what to
install: they are never skipped.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright

from controlplane.api.app import create_app
from controlplane.auth.jobs import Tokens
from controlplane.auth.roles import Role
from controlplane.store.db import Database, upgrade
from tests.support.app import POLICY_DIR, REPO, SCENARIO, make_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts" / "e2e"
CONNECTOR = {"name": "edge", "type": "memory", "providers": ["lab-a"], "reconcile_seconds": 3600}
WAIT = 30.0
"""Seconds any wait for the server may take before the test fails."""


@dataclass
class Server:
    url: str
    tokens: dict[Role, str]
    scenario: dict[str, Any]
    results: list[dict[str, Any]]
    revisions: list[str]
    """Passed revisions, oldest first: the one that decided the scenario, then an edit."""

    @property
    def key_ids(self) -> set[str]:
        return {
            v["subject"]["api_key_id"]
            for v in self.scenario["verdicts"]
            if v["subject"].get("api_key_id")
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _tokens(url: str) -> dict[Role, str]:
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    try:
        service = Tokens(db)
        return {
            role: (await service.create(f"e2e-{role.value}", role, actor="e2e"))[0]
            for role in (Role.ADMIN, Role.AUDITOR, Role.DETECTOR, Role.SUPPORT, Role.REVIEWER)
        }
    finally:
        await db.dispose()


async def wait_for(what: str, check: Callable[[], Awaitable[Any]]) -> Any:
    """Poll `check` until it returns something truthy, at most `WAIT` seconds."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"gave up waiting {WAIT:.0f}s for {what}")


async def _seed(client: httpx.AsyncClient, scenario: dict[str, Any]) -> list[dict[str, Any]]:
    for exemption in scenario["exemptions"]:
        (await client.post("/v1/exemptions", json=exemption)).raise_for_status()
    indicators = {"indicators": scenario["indicators"]}
    (await client.post("/v1/intel/indicators", json=indicators)).raise_for_status()
    verdicts = [{k: v for k, v in item.items() if k != "expect"} for item in scenario["verdicts"]]
    response = await client.post("/v1/verdicts", json={"verdicts": verdicts})
    assert response.status_code == 202, response.text
    results: list[dict[str, Any]] = response.json()["results"]

    async def applied() -> bool:
        # Desired and applied counts are a reconcile's: ask for one (the follower applies
        # changes as they come, and reconciles only every `reconcile_seconds`).
        edge = (await client.post("/v1/connectors/edge/reconcile")).json()
        return bool(edge["desired"]) and edge["applied"] == edge["desired"]

    await wait_for("the memory connector to apply every lab-a action", applied)
    return results


async def _policies(client: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get("/v1/policies")).json()
    return body


async def _revise(client: httpx.AsyncClient, policy_dir: Path) -> list[str]:
    """A passing edit, activated by the server's sync; then a rejected one, reverted."""
    first = (await _policies(client))["active"]
    module = policy_dir / "tollgate" / "graduated" / "graduated.rego"
    module.write_text(
        module.read_text(encoding="utf-8").replace(
            "Escalates with the evidence", "Escalates with the evidence it is given"
        ),
        encoding="utf-8",
    )

    async def activated() -> str | None:
        active = (await _policies(client))["active"]
        return active if active != first else None

    second = await wait_for("the edited revision to be activated", activated)
    broken = policy_dir / "tollgate" / "config" / "zz_review_test.rego"
    broken.write_text(
        "package tollgate.config_test\n\nimport rego.v1\n\n"
        'test_new_provider_is_configured if data.tollgate.settings.providers["lab-z"]\n',
        encoding="utf-8",
    )

    async def rejected() -> bool:
        return any(r["status"] == "rejected" for r in (await _policies(client))["revisions"])

    await wait_for("the broken revision to be rejected", rejected)
    broken.unlink()
    return [first, second]


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    data = tmp_path_factory.mktemp("e2e")
    policy_dir = data / "policies"
    shutil.copytree(POLICY_DIR, policy_dir)
    url = f"sqlite+aiosqlite:///{data / 'tollgate.db'}"
    settings = replace(
        make_settings(url, data, policy_dir=policy_dir, connectors=[CONNECTOR]),
        policy_sync_seconds=1.0,
        console_secret="e2e-console-secret",
    )
    tokens = await _tokens(url)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    instance = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=instance.run, name="tollgate-e2e", daemon=True)
    thread.start()
    try:
        headers = {"Authorization": f"Bearer {tokens[Role.ADMIN]}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
            await wait_for("the server to be ready", lambda: _ready(client, thread))
            scenario = json.loads(SCENARIO.read_text(encoding="utf-8"))
            results = await _seed(client, scenario)
            revisions = await _revise(client, policy_dir)
        yield Server(base, tokens, scenario, results, revisions)
    finally:
        instance.should_exit = True
        await asyncio.to_thread(thread.join, 15)


async def _ready(client: httpx.AsyncClient, thread: threading.Thread) -> bool:
    if not thread.is_alive():
        raise AssertionError("the e2e server stopped during start-up: see the log above")
    try:
        return (await client.get("/readyz")).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            f"the browser tests need Debian's Chromium at {CHROMIUM}: run `make chromium` "
            "as root, or `sudo apt-get install -y chromium`",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture(scope="module")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield instance
        finally:
            await instance.close()


@pytest.fixture(scope="module", autouse=True)
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(10_000)
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def shot(page: Page, name: str) -> Path:
    """A full-page screenshot under test-artifacts/e2e/, kept after the run."""
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
