"""`tollgate appeal`, `tollgate exemption`, `tollgate report remediation` against a real
server (uvicorn on 127.0.0.1, in a thread), with the tokens of the roles that may."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner, Result

from controlplane.api.app import create_app
from controlplane.auth.jobs import Tokens
from controlplane.auth.roles import Role
from controlplane.cli.main import app
from controlplane.settings import get_settings
from controlplane.store.db import Database, upgrade
from tests.support.app import make_settings
from tests.support.processes import free_port
from tests.support.verdicts import new_subject, verdict


@dataclass
class Server:
    url: str
    tokens: dict[Role, str]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'tollgate.db'}"
    settings = make_settings(url, tmp_path)
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    tokens = {
        role: (await Tokens(db).create(f"cli-{role.value}", role, actor="tests"))[0]
        for role in (Role.SUPPORT, Role.REVIEWER, Role.DETECTOR, Role.AUDITOR)
    }
    await db.dispose()
    port = free_port()
    instance = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=base) as client:
        while True:
            try:
                if (await client.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise AssertionError("the server did not start")
            await asyncio.sleep(0.1)
    try:
        yield Server(base, tokens)
    finally:
        instance.should_exit = True
        await asyncio.to_thread(thread.join, 15)


async def tollgate(server: Server, role: Role, *args: str) -> Result:
    env = {"TOLLGATE_URL": server.url, "TOLLGATE_TOKEN": server.tokens[role]}

    def run() -> Result:
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(app, list(args), env=env)
        finally:
            get_settings.cache_clear()

    return await asyncio.to_thread(run)


async def test_appeal_and_exemption_commands(server: Server) -> None:
    subject = new_subject()
    headers = {"Authorization": f"Bearer {server.tokens[Role.DETECTOR]}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
        assert (await client.post("/v1/verdicts", json=verdict(subject=subject))).status_code == 202
    account = f"account:{subject['account_id']}"

    filed = await tollgate(
        server, Role.SUPPORT, "appeal", "file", account, "--provider", "lab-a",
        "--statement", "evaluation jobs", "--contact", "ops@example.com", "--json",
    )  # fmt: skip
    assert filed.exit_code == 0, filed.output
    appeal_id = filed.output.split('"id": "', 1)[1].split('"', 1)[0]
    listed = await tollgate(server, Role.AUDITOR, "appeal", "list", "--state", "open", "--json")
    assert appeal_id in listed.output
    refused = await tollgate(server, Role.SUPPORT, "appeal", "deny", appeal_id, "--reason", "no")
    assert refused.exit_code == 1 and "error 403" in refused.output
    upheld = await tollgate(
        server, Role.REVIEWER, "appeal", "uphold", appeal_id,
        "--reason", "verified", "--exempt-for", "7d",
    )  # fmt: skip
    assert upheld.exit_code == 0, upheld.output
    assert "upheld" in upheld.output and "lifted" in upheld.output
    shown = await tollgate(server, Role.AUDITOR, "appeal", "show", appeal_id, "--json")
    assert '"state": "upheld"' in shown.output and "Your appeal" in shown.output

    added = await tollgate(
        server, Role.REVIEWER, "exemption", "add", "ip:198.51.100.77", "--provider", "lab-a",
        "--owner", "noc", "--reason", "egress",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    exemption_id = added.output.split("exemption ", 1)[1].split()[0]
    listed = await tollgate(server, Role.AUDITOR, "exemption", "list")
    assert listed.exit_code == 0 and "Exemptions" in listed.output
    removed = await tollgate(
        server, Role.REVIEWER, "exemption", "remove", exemption_id, "--reason", "moved"
    )
    assert removed.exit_code == 0 and "ended" in removed.output

    report = await tollgate(server, Role.AUDITOR, "report", "remediation")
    assert report.exit_code == 0 and "# Remediation report" in report.output
    assert "| graduated.first_offense | 1 | 1 | 1 | 0 | 100% |" in report.output
    as_csv = await tollgate(server, Role.AUDITOR, "report", "remediation", "--format", "csv")
    assert as_csv.output.startswith("since,until,by,name,actions")
