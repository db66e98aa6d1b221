"""`tollgate audit`: keygen, checkpoint, export, verify (database and file), reindex, with
the exit codes scripts rely on, against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from controlplane.cli.main import app
from controlplane.settings import get_settings
from controlplane.store.db import Database
from tests.integration.audit import tampering

REPO = Path(__file__).resolve().parents[3]


async def tollgate(*args: str, database_url: str = "", key: Path | None = None) -> Result:
    """Run the CLI in a thread (it starts its own event loop), with these settings."""
    env = {"TOLLGATE_DATABASE_URL": database_url}
    if key is not None:
        env["TOLLGATE_AUDIT_SIGNING_KEY_FILE"] = str(key)

    def run() -> Result:
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(app, list(args), env=env)
        finally:
            get_settings.cache_clear()

    return await asyncio.to_thread(run)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await tampering.seed(database, 30)
    yield database
    await database.dispose()


async def test_sign_export_verify_then_catch_a_rewrite(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    private, public = tmp_path / "audit.pem", tmp_path / "audit.pub.pem"
    made = await tollgate(
        "audit", "keygen", "--private-key", str(private), "--public-key", str(public)
    )
    assert made.exit_code == 0, made.output
    again = await tollgate("audit", "keygen", "--private-key", str(private))
    assert again.exit_code == 1 and "exists" in again.output

    signed = await tollgate("audit", "checkpoint", "--json", database_url=database_url, key=private)
    assert signed.exit_code == 0, signed.output
    checkpoint = json.loads(signed.stdout)
    assert checkpoint["seq"] == 30 and checkpoint["record"] == "checkpoint"
    kept = tmp_path / "kept.jsonl"
    kept.write_text(signed.stdout)

    ok = await tollgate("audit", "verify", "--public-key", str(public), database_url=database_url)
    assert ok.exit_code == 0, ok.output
    assert "intact" in ok.stdout and "proven unchanged through seq 30" in ok.stdout

    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"audit.{fmt}"
        exported = await tollgate(
            "audit", "export", "--format", fmt, "--output", str(out), database_url=database_url
        )
        assert exported.exit_code == 0, exported.output
        offline = await tollgate("audit", "verify", "--file", str(out), "--public-key", str(public))
        assert offline.exit_code == 0, offline.output

    await tampering.rehash_after_edit(db, 11, "nobody")
    await tampering.sql(db, "DELETE FROM audit_checkpoint")  # and hide the evidence

    unsigned = await tollgate("audit", "verify", database_url=database_url)
    assert unsigned.exit_code == 0, "with the checkpoints gone the rewrite is consistent"
    caught = await tollgate(
        "audit",
        "verify",
        "--json",
        "--public-key",
        str(public),
        "--checkpoints",
        str(kept),
        database_url=database_url,
    )
    assert caught.exit_code == 1, caught.output
    report = json.loads(caught.stdout)
    assert report["ok"] is False
    assert report["broken"]["kind"] == "checkpoint" and report["broken"]["seq"] == 30
    assert report["broken"]["expected"] == checkpoint["hash"]
    # The export taken before the rewrite still verifies; one taken now does not.
    later = tmp_path / "later.jsonl"
    await tollgate("audit", "export", "--output", str(later), database_url=database_url)
    against = await tollgate(
        "audit", "verify", "--file", str(later), "--public-key", str(public),
        "--checkpoints", str(tmp_path / "audit.jsonl"),
    )  # fmt: skip
    assert against.exit_code == 1 and "BROKEN at seq 30 (checkpoint)" in against.stdout


async def test_verify_reports_the_broken_link_and_exits_1(db: Database, database_url: str) -> None:
    await tampering.sql(db, "DELETE FROM audit_event WHERE seq = 17")

    result = await tollgate("audit", "verify", database_url=database_url)

    assert result.exit_code == 1
    assert "BROKEN at seq 17 (gap)" in result.stdout
    assert "expected: 17" in result.stdout and "found:    18" in result.stdout


async def test_export_by_time_and_reindex(db: Database, database_url: str, tmp_path: Path) -> None:
    out = tmp_path / "none.csv"
    result = await tollgate(
        "audit", "export", "--since", "1d", "--until", "2000-01-01", "--format", "csv",
        "--output", str(out), database_url=database_url,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.read_text().count("\nevent,") == 0
    bad = await tollgate("audit", "export", "--since", "yesterday", database_url=database_url)
    assert bad.exit_code == 1 and "--since" in bad.output

    reindexed = await tollgate("audit", "reindex", database_url=database_url)
    assert reindexed.exit_code == 0 and "indexed 30 events" in reindexed.stdout


async def test_checkpoint_without_a_key_says_how_to_get_one(database_url: str) -> None:
    result = await tollgate("audit", "checkpoint", database_url=database_url)
    assert result.exit_code == 1
    assert "TOLLGATE_AUDIT_SIGNING_KEY_FILE" in result.output and "keygen" in result.output


def test_the_installed_command_verifies_a_file(tmp_path: Path) -> None:
    """The console script itself, as an auditor runs it, with no database at all."""
    bogus = tmp_path / "x.jsonl"
    bogus.write_text('{"record":"header","format":"tollgate-audit-export","version":1}\n')
    command = [str(Path(sys.executable).parent / "tollgate"), "audit", "verify", "--file"]

    result = subprocess.run([*command, str(bogus)], capture_output=True, text=True, cwd=REPO)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "no end record" in result.stdout
