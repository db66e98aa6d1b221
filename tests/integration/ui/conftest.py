"""An app with a memory connector and its own copy of the policies (so tests can make
new revisions), seeded with the demo scenario, for the console and trace tests."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest

from controlplane.auth.roles import Role
from controlplane.telemetry import spanstore
from tests.support.app import POLICY_DIR, SCENARIO, Running, make_settings, serve

CONNECTOR = {"name": "edge", "type": "memory", "providers": ["lab-a"], "reconcile_seconds": 3600}
SECRET = "console-test-secret"


@dataclass
class Seeded:
    """The running app and what the scenario submission answered."""

    api: Running
    results: list[dict[str, Any]]
    scenario: dict[str, Any]

    @property
    def key_ids(self) -> set[str]:
        return {
            v["subject"]["api_key_id"]
            for v in self.scenario["verdicts"]
            if v["subject"].get("api_key_id")
        }

    def actions(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [a for r in self.results for a in r["actions"] if kind is None or a["type"] == kind]


async def seed(api: Running, scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """The scenario through the API: exemptions, indicators, then the verdicts in one batch;
    returns once the connector has applied what was planned and the spans are written."""
    for exemption in scenario["exemptions"]:
        response = await api.client.post("/v1/exemptions", json=exemption)
        assert response.status_code == 201, response.text
    response = await api.client.post(
        "/v1/intel/indicators", json={"indicators": scenario["indicators"]}
    )
    assert response.status_code == 201, response.text
    verdicts = [{k: v for k, v in item.items() if k != "expect"} for item in scenario["verdicts"]]
    results: list[dict[str, Any]] = (await api.submit({"verdicts": verdicts}))["results"]
    await api.runtime.enforcer.settle()
    await asyncio.to_thread(spanstore.store.flush)
    return results


@pytest.fixture(scope="module")
async def seeded(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Seeded]:
    data = tmp_path_factory.mktemp("console")
    policies = data / "policies"
    shutil.copytree(POLICY_DIR, policies)
    settings = replace(
        make_settings(module_database_url, data, policy_dir=policies, connectors=[CONNECTOR]),
        console_secret=SECRET,
    )
    scenario = json.loads(SCENARIO.read_text(encoding="utf-8"))
    async with serve(settings) as api:
        yield Seeded(api, await seed(api, scenario), scenario)


async def form_csrf(client: httpx.AsyncClient, page: str = "/console/sign-in") -> str:
    """The CSRF token of the form on `page`, as a browser showing it would send it."""
    response = await client.get(page)
    found = re.search(r'name="csrf" value="([^"]+)"', response.text)
    assert found, f"no CSRF field on {page}"
    return found.group(1)


def transport(api: Running) -> httpx.AsyncBaseTransport:
    """The app's ASGI transport, for clients of their own (no admin header, own cookies)."""
    return api.client._transport


@asynccontextmanager
async def signed_in(
    api: Running, role: Role = Role.AUDITOR, *, https: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client holding a console session of a new token with `role`."""
    token, _ = await api.runtime.tokens.create(f"console-{role.value}", role, actor="tests")
    base = ("https" if https else "http") + "://tollgate.test"
    async with httpx.AsyncClient(transport=transport(api), base_url=base) as client:
        response = await client.post(
            "/console/sign-in",
            data={"token": token, "next": "/console", "csrf": await form_csrf(client)},
        )
        assert response.status_code == 303, response.text
        yield client
