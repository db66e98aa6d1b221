"""The CLI against a real server on 127.0.0.1, given only TOLLGATE_URL and TOLLGATE_TOKEN:
what it prints, and one readable line for a URL, connection or token problem."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.auth.jobs import Tokens
from controlplane.auth.roles import Role
from controlplane.store.db import Database, upgrade
from controlplane.store.models import AuditEventRow
from tests.support.app import POLICY_DIR
from tests.support.processes import COMMAND, Process, environment, free_port, run, started
from tests.support.store import count
from tests.support.verdicts import new_subject, verdict


@dataclass
class Server:
    process: Process
    token: str
    """An admin token."""
    database_url: str

    @property
    def url(self) -> str:
        return self.process.url


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """A server on SQLite in its own folder, and an admin token for it."""
    folder = tmp_path_factory.mktemp("server")
    database_url = f"sqlite+aiosqlite:///{folder / 'tollgate.db'}"
    upgrade(database_url)
    db = Database(database_url)
    try:
        token, _ = await Tokens(db).create("ops", Role.ADMIN, actor="tests")
    finally:
        await db.dispose()
    port = free_port()
    settings = {
        "TOLLGATE_DATABASE_URL": database_url,
        "TOLLGATE_DATA_DIR": str(folder / "data"),
        "TOLLGATE_POLICY_DIR": str(POLICY_DIR),
        "TOLLGATE_PORT": str(port),
        "TOLLGATE_ENGINE_WORKERS": "1",
    }
    with started(["serve"], settings, port, folder / "serve.log") as process:
        await process.ready()
        yield Server(process, token, database_url)


def remote(server: Server, workdir: Path, **extra: str) -> dict[str, str]:
    """Only the URL and the token: a data dir that would be created if anything local ran."""
    return {
        "TOLLGATE_URL": server.url,
        "TOLLGATE_TOKEN": server.token,
        "TOLLGATE_DATA_DIR": str(workdir / "local"),
        **extra,
    }


def narrow(args: list[str], settings: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run one CLI command as in a terminal 60 columns wide."""
    return subprocess.run(
        [*COMMAND, *args],
        env={**environment(settings), "COLUMNS": "60"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_verdict_submit_shows_decision_and_action_ids(server: Server, tmp_path: Path) -> None:
    document = verdict(subject=new_subject(), score=0.95)
    path = tmp_path / "verdict.json"
    path.write_text(json.dumps(document))
    # A narrow terminal: the ids are still printed whole, one line per decision and action.
    done = narrow(["verdict", "submit", str(path)], remote(server, tmp_path))
    assert done.returncode == 0, done.stderr
    answered = run(["verdict", "submit", str(path), "--json"], remote(server, tmp_path))
    [result] = json.loads(answered.stdout)
    [action] = result["actions"]
    decided, acted = done.stdout.splitlines()
    assert decided.startswith(f"verdict {document['id']}  decision {result['decision_id']}  ok")
    assert acted.startswith(
        f"  action {action['id']}  rate_limit api_key:{document['subject']['api_key_id']}"
    )
    assert not (tmp_path / "local").exists(), "nothing local was created"


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("127.0.0.1:8400", "TOLLGATE_URL '127.0.0.1:8400' is not a server URL"),
        ("ftp://127.0.0.1:1", "TOLLGATE_URL 'ftp://127.0.0.1:1' is not a server URL"),
        ("http://127.0.0.1:1", "no Tollgate server answers at http://127.0.0.1:1"),
    ],
)
def test_a_bad_url_or_no_server_is_one_line(tmp_path: Path, url: str, said: str) -> None:
    path = tmp_path / "verdict.json"
    path.write_text(json.dumps(verdict()))
    done = run(["verdict", "submit", str(path)], {"TOLLGATE_URL": url, "TOLLGATE_TOKEN": "tg_x"})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[0] == f"error: {said}"


async def test_a_refused_token_is_one_line(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "verdict.json"
    path.write_text(json.dumps(verdict()))
    done = run(
        ["verdict", "submit", str(path)], remote(server, tmp_path, TOLLGATE_TOKEN="tg_wrong")
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[0].startswith(f"error: {server.url} refused the token")


async def test_policy_impact_asks_the_server(server: Server, tmp_path: Path) -> None:
    done = run(
        ["policy", "impact", "--since", "7d"],
        remote(server, tmp_path, TOLLGATE_POLICY_DIR=str(POLICY_DIR)),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("### Tollgate policy impact:")
    assert not (tmp_path / "local").exists(), "no local database was created"


async def test_an_auditor_with_only_a_token_verifies_and_exports(
    server: Server, tmp_path: Path
) -> None:
    # Something to verify: a verdict submitted with the admin token.
    admin = remote(server, tmp_path)
    created = run(["verdict", "submit", "-"], admin, stdin=json.dumps(verdict()))
    assert created.returncode == 0, created.stderr
    auditor = await _token(server, Role.AUDITOR)
    settings = remote(server, tmp_path, TOLLGATE_TOKEN=auditor)

    verified = run(["audit", "verify", "--json"], settings)
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] is True and report["events"] > 0
    assert report["source"] == f"{server.url} (its export, verified here)"

    exported = tmp_path / "audit.jsonl"
    done = run(["audit", "export", "--output", str(exported)], settings)
    assert done.returncode == 0, done.stderr
    offline = run(["audit", "verify", "--file", str(exported), "--json"], {})
    assert json.loads(offline.stdout)["events"] == report["events"]
    assert not (tmp_path / "local").exists(), "no local database was created"


async def test_a_detector_token_may_not_export(server: Server, tmp_path: Path) -> None:
    detector = await _token(server, Role.DETECTOR)
    done = run(["audit", "export"], remote(server, tmp_path, TOLLGATE_TOKEN=detector))
    assert done.returncode == 1
    assert done.stderr.splitlines()[0].startswith(f"error: {server.url} answered 403")


async def _token(server: Server, role: Role) -> str:
    """A new token of `role` in the server's database."""
    db = Database(server.database_url)
    try:
        token, _ = await Tokens(db).create(role.value, role, actor="tests")
    finally:
        await db.dispose()
    return token


async def _events(server: Server) -> int:
    """How many events the server's chain holds (seqs run from 1 without gaps)."""
    db = Database(server.database_url)
    try:
        return await count(db, AuditEventRow)
    finally:
        await db.dispose()


THROUGH_THE_API = [
    ["decision", "explain", "dec_x"],
    ["token", "list"],
    ["token", "create", "--name", "x", "--role", "auditor"],
    ["token", "revoke", "tok_x"],
    ["policy", "sync"],
    ["policy", "rollback"],
    ["action", "list"],
    ["audit", "checkpoint"],
    ["audit", "reindex"],
]


@pytest.mark.parametrize("command", THROUGH_THE_API)
def test_with_a_url_these_go_to_the_server_and_create_nothing_here(
    tmp_path: Path, command: list[str]
) -> None:
    data_dir = tmp_path / "elsewhere"
    url = "http://127.0.0.1:1"
    done = run(
        command, {"TOLLGATE_DATA_DIR": str(data_dir), "TOLLGATE_URL": url, "TOLLGATE_TOKEN": "tg_x"}
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == f"error: no Tollgate server answers at {url}"
    assert not data_dir.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["decision", "explain", "dec_x"],
        ["token", "list"],
        ["policy", "rollback"],
        ["audit", "reindex"],
    ],
)
def test_commands_on_the_database_never_create_an_empty_one(
    tmp_path: Path, command: list[str]
) -> None:
    data_dir = tmp_path / "elsewhere"
    done = run(command, {"TOLLGATE_DATA_DIR": str(data_dir)})
    assert done.returncode == 1
    assert (
        done.stderr.splitlines()[0] == f"error: no Tollgate database at {data_dir / 'tollgate.db'}"
    )
    assert not data_dir.exists()


def test_db_upgrade_refuses_a_server_url(tmp_path: Path) -> None:
    """Migrations run against the database, never through a server: with only
    TOLLGATE_URL set, `db upgrade` says so in one line instead of migrating (and so
    creating) some local SQLite file."""
    data_dir = tmp_path / "elsewhere"
    url = "http://127.0.0.1:1"
    done = run(["db", "upgrade"], {"TOLLGATE_DATA_DIR": str(data_dir), "TOLLGATE_URL": url})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[0] == (
        "error: `tollgate db upgrade` runs the migrations against the database "
        f"(TOLLGATE_DATABASE_URL), not a server, and only TOLLGATE_URL is set ({url})"
    )
    assert not data_dir.exists()


def test_db_upgrade_with_a_database_url_migrates_that_database(tmp_path: Path) -> None:
    """Both set: the database named is the one meant (a server URL is set for the rest)."""
    database = tmp_path / "named.db"
    done = run(
        ["db", "upgrade"],
        {
            "TOLLGATE_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            "TOLLGATE_DATA_DIR": str(tmp_path / "elsewhere"),
            "TOLLGATE_URL": "http://127.0.0.1:1",
        },
    )
    assert done.returncode == 0, done.stderr
    assert "is at revision head" in done.stdout
    assert database.exists() and not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize(
    ("command", "variable"),
    [
        (["action", "list"], "TOLLGATE_PORT"),
        (["verdict", "submit", "-"], "TOLLGATE_PORT"),
        (["audit", "checkpoint"], "TOLLGATE_PORT"),
        (["db", "upgrade"], "TOLLGATE_PORT"),
        (["intel", "list"], "TOLLGATE_PORT"),
    ],
)
def test_a_bad_setting_is_one_line(tmp_path: Path, command: list[str], variable: str) -> None:
    done = run(
        command,
        {variable: "eighty", "TOLLGATE_DATA_DIR": str(tmp_path / "elsewhere")},
        stdin="{}",
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[0].startswith(f"error: {variable}='eighty': must be")
    assert not (tmp_path / "elsewhere").exists()


async def test_checkpoint_on_a_server_without_a_key_names_the_setting(
    server: Server, tmp_path: Path
) -> None:
    auditor = await _token(server, Role.AUDITOR)
    done = run(["audit", "checkpoint"], remote(server, tmp_path, TOLLGATE_TOKEN=auditor))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    first = done.stderr.splitlines()[0]
    assert first.startswith("error 409: this server has no audit signing key"), first
    assert "TOLLGATE_AUDIT_SIGNING_KEY_FILE" in first
    assert not (tmp_path / "local").exists(), "no local database was created"


async def test_a_local_key_is_refused_with_a_server_url(server: Server, tmp_path: Path) -> None:
    key = tmp_path / "audit.pem"
    done = run(["audit", "checkpoint", "--key", str(key)], remote(server, tmp_path))
    assert done.returncode == 1
    first = done.stderr.splitlines()[0]
    assert first.startswith("error: --key signs here, on the database itself"), first
    assert "its own TOLLGATE_AUDIT_SIGNING_KEY_FILE" in first
    assert not (tmp_path / "local").exists(), "no local database was created"


async def test_reindex_asks_the_server(server: Server, tmp_path: Path) -> None:
    settings = remote(server, tmp_path)
    submitted = run(["verdict", "submit", "-"], settings, stdin=json.dumps(verdict()))
    assert submitted.returncode == 0, submitted.stderr
    auditor = await _token(server, Role.AUDITOR)
    before = await _events(server)
    assert before > 0
    done = run(["audit", "reindex"], remote(server, tmp_path, TOLLGATE_TOKEN=auditor))
    assert done.returncode == 0, done.stderr
    indexed = int(done.stdout.split()[1].replace(",", ""))
    after = await _events(server)
    assert before <= indexed <= after, "the whole chain, from the first event to the head"
    engineer = await _token(server, Role.ENGINEER)
    refused = run(["audit", "reindex"], remote(server, tmp_path, TOLLGATE_TOKEN=engineer))
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[0].startswith("error 403:")
    assert not (tmp_path / "local").exists(), "no local database was created"


async def test_decision_explain_asks_the_server(server: Server, tmp_path: Path) -> None:
    settings = remote(server, tmp_path)
    submitted = run(["verdict", "submit", "-", "--json"], settings, stdin=json.dumps(verdict()))
    assert submitted.returncode == 0, submitted.stderr
    [result] = json.loads(submitted.stdout)
    done = run(["decision", "explain", result["decision_id"]], settings)
    assert done.returncode == 0, done.stderr
    assert f"decision {result['decision_id']} for verdict {result['verdict_id']}" in done.stdout
    assert "re-run matches the stored result" in done.stdout
    assert "graduated.first_offense" in done.stdout
    missing = run(["decision", "explain", "dec_nothing"], settings)
    assert missing.returncode == 1
    assert missing.stderr.splitlines()[0].startswith("error 404:")
    assert not (tmp_path / "local").exists(), "no local database was created"


async def test_action_list_asks_the_server(server: Server, tmp_path: Path) -> None:
    settings = remote(server, tmp_path)
    subject = new_subject()
    submitted = run(
        ["verdict", "submit", "-", "--json"], settings, stdin=json.dumps(verdict(subject=subject))
    )
    [result] = json.loads(submitted.stdout)
    [action] = result["actions"]
    target = f"api_key:{subject['api_key_id']}"
    done = run(["action", "list", "--target", target], settings)
    assert done.returncode == 0, done.stderr
    assert action["id"] in done.stdout and "rate_limit" in done.stdout
    answered = run(["action", "list", "--target", target, "--json"], settings)
    assert [a["id"] for a in json.loads(answered.stdout)["items"]] == [action["id"]]
    bad = run(["action", "list", "--target", "nocolon"], settings)
    assert bad.returncode == 1
    assert bad.stderr.splitlines()[0] == "error: --target 'nocolon' is not kind:value"
    assert not (tmp_path / "local").exists(), "no local database was created"


async def test_tokens_are_issued_listed_and_revoked_through_the_server(
    server: Server, tmp_path: Path
) -> None:
    admin = remote(server, tmp_path)
    created = run(["token", "create", "--name", "auditor-cli", "--role", "auditor"], admin)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    [token_id] = [w for w in created.stdout.split() if w.startswith("tok_")]
    assert token.startswith("tg_")

    listed = run(["token", "list"], admin)
    assert token_id in listed.stdout and "auditor-cli" in listed.stdout
    assert token not in listed.stdout, "a token is shown once, at creation"

    # The new token may read, and may not issue tokens: only an admin may.
    auditor = remote(server, tmp_path, TOLLGATE_TOKEN=token)
    assert run(["action", "list"], auditor).returncode == 0
    refused = run(["token", "create", "--name", "x", "--role", "admin"], auditor)
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[0].startswith("error 403:")

    revoked = run(["token", "revoke", token_id], admin)
    assert revoked.returncode == 0, revoked.stderr
    again = run(["token", "revoke", token_id], admin)
    assert again.returncode == 1 and again.stderr.splitlines()[0].startswith("error 404:")
    assert not (tmp_path / "local").exists(), "no local database was created"


async def test_policy_sync_and_rollback_ask_the_server(server: Server, tmp_path: Path) -> None:
    admin = remote(server, tmp_path)
    synced = run(["policy", "sync", "--reason", "checking from a laptop"], admin)
    assert synced.returncode == 0, synced.stderr
    assert ": unchanged (" in synced.stdout, "the server's own source, already known"
    # One revision was ever active: the server says why there is nothing to roll back to.
    rolled = run(["policy", "rollback"], admin)
    assert rolled.returncode == 1
    assert rolled.stderr.splitlines()[0].startswith("error 409:")
    assert "nothing to roll back to" in rolled.stderr
    detector = await _token(server, Role.DETECTOR)
    refused = run(["policy", "sync"], remote(server, tmp_path, TOLLGATE_TOKEN=detector))
    assert refused.returncode == 1 and refused.stderr.splitlines()[0].startswith("error 403:")
    assert not (tmp_path / "local").exists(), "no local database was created"
