"""`tollgate audit checkpoint` through a real server that holds the signing key: the
server signs with its own TOLLGATE_AUDIT_SIGNING_KEY_FILE, the auditor (who has only a
URL, a token and the public key) keeps the printed line and checks the chain with it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.audit.keys import generate, key_id, load_public_key
from controlplane.auth.jobs import Tokens
from controlplane.auth.roles import Role
from controlplane.store.db import Database, upgrade
from tests.support.app import POLICY_DIR
from tests.support.processes import Process, free_port, run, started
from tests.support.verdicts import verdict


@dataclass
class SigningServer:
    process: Process
    tokens: dict[Role, str]
    public_key: Path


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SigningServer]:
    """A server on SQLite with a signing key, and tokens of three roles."""
    folder = tmp_path_factory.mktemp("signing-server")
    private, public = folder / "audit.pem", folder / "audit.pub.pem"
    generate(private, public)
    database_url = f"sqlite+aiosqlite:///{folder / 'tollgate.db'}"
    upgrade(database_url)
    db = Database(database_url)
    try:
        service = Tokens(db)
        tokens = {
            role: (await service.create(role.value, role, actor="tests"))[0]
            for role in (Role.ADMIN, Role.AUDITOR, Role.ENGINEER)
        }
    finally:
        await db.dispose()
    port = free_port()
    settings = {
        "TOLLGATE_DATABASE_URL": database_url,
        "TOLLGATE_DATA_DIR": str(folder / "data"),
        "TOLLGATE_POLICY_DIR": str(POLICY_DIR),
        "TOLLGATE_PORT": str(port),
        "TOLLGATE_ENGINE_WORKERS": "1",
        "TOLLGATE_AUDIT_SIGNING_KEY_FILE": str(private),
    }
    with started(["serve"], settings, port, folder / "serve.log") as process:
        await process.ready()
        yield SigningServer(process, tokens, public)


def remote(server: SigningServer, role: Role, workdir: Path) -> dict[str, str]:
    """The URL and a token only: nothing local to sign with or read."""
    return {
        "TOLLGATE_URL": server.process.url,
        "TOLLGATE_TOKEN": server.tokens[role],
        "TOLLGATE_DATA_DIR": str(workdir / "local"),
    }


async def test_an_auditor_has_the_server_sign_and_checks_the_chain_with_the_line(
    server: SigningServer, tmp_path: Path
) -> None:
    submitted = run(
        ["verdict", "submit", "-"],
        remote(server, Role.ADMIN, tmp_path),
        stdin=json.dumps(verdict()),
    )
    assert submitted.returncode == 0, submitted.stderr
    auditor = remote(server, Role.AUDITOR, tmp_path)

    signed = run(["audit", "checkpoint", "--json"], auditor)
    assert signed.returncode == 0, signed.stderr
    [line] = signed.stdout.splitlines()
    checkpoint = json.loads(line)
    assert checkpoint["record"] == "checkpoint" and checkpoint["seq"] > 0
    assert checkpoint["key_id"] == key_id(load_public_key(server.public_key))
    assert len(checkpoint["signature"]) == 128

    # Nothing happened since: the same checkpoint, not a second one.
    again = run(["audit", "checkpoint"], auditor)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(
        f"checkpoint already signed: seq {checkpoint['seq']}, hash {checkpoint['hash']}, "
        f"key {checkpoint['key_id']}"
    ), again.stdout

    # The line, kept outside the database, proves the chain with the auditor's own key.
    kept = tmp_path / "checkpoints.jsonl"
    kept.write_text(line + "\n", encoding="utf-8")
    verified = run(
        [
            "audit",
            "verify",
            "--json",
            "--public-key",
            str(server.public_key),
            "--checkpoints",
            str(kept),
        ],
        auditor,
    )
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] is True and report["signatures_checked"] is True
    assert report["key_ids"] == [checkpoint["key_id"]]
    assert report["authenticated_through_seq"] >= checkpoint["seq"]
    assert not (tmp_path / "local").exists(), "no local database was created"


async def test_an_engineer_may_not_sign(server: SigningServer, tmp_path: Path) -> None:
    done = run(["audit", "checkpoint"], remote(server, Role.ENGINEER, tmp_path))
    assert done.returncode == 1
    assert done.stderr.splitlines()[0].startswith("error 403: role engineer may not do this")
    assert not (tmp_path / "local").exists(), "no local database was created"
