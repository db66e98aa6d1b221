"""`tollgate audit`: verify the hash chain, export it, sign checkpoints, make keys.

These talk to the database named by the settings (`TOLLGATE_DATABASE_URL`). With
`TOLLGATE_URL` (and an auditor's `TOLLGATE_TOKEN`) set, they go through the server
instead: `checkpoint` has the server sign with its own key, `reindex` has it rebuild
the index, and `verify` still trusts it with nothing: it downloads the export and checks
the chain and the checkpoint signatures here, with the auditor's keys. `verify --file`
and `keygen` need no database and no server at all.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import httpx
import typer
from rich.console import Console
from sqlalchemy.exc import DBAPIError

from controlplane.audit import keys, subjects
from controlplane.audit.checkpoints import public_keys, write_checkpoint
from controlplane.audit.export import FORMATS, Checkpoint
from controlplane.audit.schemas import ExportFormat
from controlplane.audit.service import export as export_events
from controlplane.audit.verify import (
    PublicKeys,
    Report,
    read_checkpoints,
    verify_database,
    verify_file,
)
from controlplane.cli.client import api_client, cli_settings, fail, local_database, request
from controlplane.domain.action import parse_duration
from controlplane.errors import TollgateError
from controlplane.settings import Settings
from controlplane.store.db import Database
from controlplane.store.types import utcnow

audit_app = typer.Typer(
    help="The audit trail: verify, export, signed checkpoints.", no_args_is_help=True
)
# Soft wrap: hashes and key ids are printed whole, never cropped to the terminal.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


def _run(work: Callable[[Database], Awaitable[T]]) -> T:
    url = local_database("audit")

    async def main() -> T:
        db = Database(url)
        try:
            return await work(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(main())
    except TollgateError as exc:
        raise fail(exc.message) from None
    except DBAPIError as exc:
        raise fail(
            f"the database refused: {type(exc.orig).__name__}: {str(exc.orig).strip()[:200]}",
            "check TOLLGATE_DATABASE_URL; a database from before the audit tables needs "
            "`tollgate db upgrade`",
        ) from None


def parse_instant(option: str, text: str | None) -> datetime | None:
    """ISO 8601 with a zone (`2026-11-26T12:00:00Z`), a date (midnight UTC), or a
    duration meaning that long ago (`7d`)."""
    if text is None:
        return None
    try:
        return utcnow() - parse_duration(text)
    except ValueError:
        pass
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise fail(
            f"{option} {text!r} is neither an ISO 8601 instant, a date, nor a duration",
            "e.g. 2026-11-26T12:00:00Z, 2026-11-26 or 7d",
        ) from None
    if value.tzinfo is None:
        raise fail(f"{option} {text!r} has no time zone", "add Z or an offset like +00:00")
    return value


@audit_app.command("verify")
def verify(
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Verify an export (jsonl or csv) offline, not the database."),
    ] = None,
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            help="Trusted checkpoint key (PEM or hex); repeat for rotated keys. Default: "
            "the public half of TOLLGATE_AUDIT_SIGNING_KEY_FILE, if set.",
        ),
    ] = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            help="Checkpoints kept outside the database (`audit checkpoint --json` lines, "
            "or an earlier export) to check too."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Recompute the hash chain and check every signed checkpoint; exit 1 at the first
    broken link (edited, deleted, reordered or rewritten events)."""
    try:
        trusted = public_keys(list(public_key or []), cli_settings())
        external = read_checkpoints(checkpoints) if checkpoints else []
        if file is not None:
            report = verify_file(file, trusted, external)
        elif cli_settings().url:
            report = _verify_remote(trusted, external)
        else:
            report = _run(lambda db: verify_database(db, trusted, external))
    except TollgateError as exc:
        raise fail(exc.message) from None
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(code=1)


def _download(path: Path | None, params: dict[str, str]) -> int:
    """Stream `GET /v1/audit/export` to `path` (standard output when None); the size."""
    settings = cli_settings()
    size = 0
    with api_client(settings.api_url, settings.token, timeout=3600) as client:
        try:
            with client.stream("GET", "/v1/audit/export", params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    raise fail(
                        f"{settings.api_url} answered {response.status_code}: "
                        f"{_message(response.text)}",
                        "an auditor, engineer or admin token may export the audit trail",
                    )
                sink = path.open("w", encoding="utf-8", newline="") if path else sys.stdout
                try:
                    for chunk in response.iter_text():
                        sink.write(chunk)
                        size += len(chunk)
                finally:
                    if path is not None:
                        sink.close()
        except httpx.TransportError:
            raise fail(
                f"no Tollgate server answers at {settings.api_url}",
                "check TOLLGATE_URL, or unset it to read the database directly",
            ) from None
    return size


def _message(text: str) -> str:
    try:
        return str(json.loads(text).get("message", text))
    except (ValueError, AttributeError):
        return text[:200]


def _verify_remote(trusted: PublicKeys | None, external: list[Checkpoint]) -> Report:
    """The server's export, verified here: the chain and the checkpoints' signatures are
    checked with the auditor's own keys, so the server is not trusted to say it is whole."""
    with tempfile.TemporaryDirectory(prefix="tollgate-audit-") as tmp:
        path = Path(tmp) / "export.jsonl"
        _download(path, {"format": "jsonl"})
        report = verify_file(path, trusted, external)
        report.source = f"{cli_settings().api_url} (its export, verified here)"
        return report


def _print_report(report: Report) -> None:
    span = f"seq {report.first_seq}..{report.last_seq}" if report.events else "no events"
    rate = f"{report.events_per_second:,.0f} events/s"
    if report.ok:
        out.print(
            f"[green]audit chain intact[/]: {report.events:,} events ({span}) from "
            f"{report.source} in {report.seconds:.2f} s ({rate})",
            highlight=False,
        )
        if report.last_hash:
            out.print(f"last hash {report.last_hash}", highlight=False)
    else:
        b = report.broken
        assert b is not None
        out.print(
            f"[bold red]audit chain BROKEN[/] at seq {b.seq} ({b.kind}): {b.message}",
            highlight=False,
        )
        out.print(f"  expected: {b.expected}\n  found:    {b.found}", highlight=False)
        out.print(f"checked {report.events:,} events ({span}) before the break", highlight=False)
    if report.checkpoints:
        how = (
            f"signatures checked with key {', '.join(report.key_ids)}"
            if report.signatures_checked
            else "signatures not checked"
        )
        proven = (
            f"; proven unchanged through seq {report.authenticated_through_seq}"
            if report.authenticated_through_seq
            else ""
        )
        out.print(
            f"checkpoints: {report.checkpoints}, {report.checkpoints_verified} verified, "
            f"{how}{proven}",
            highlight=False,
        )
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)


@audit_app.command("export")
def export(
    since: Annotated[
        str | None, typer.Option(help="From this instant (ISO 8601, a date, or e.g. 7d).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Before this instant.")] = None,
    export_format: Annotated[
        ExportFormat, typer.Option("--format", help="jsonl or csv.")
    ] = ExportFormat.JSONL,
    output: Annotated[
        Path | None, typer.Option(help="Write here instead of standard output.")
    ] = None,
) -> None:
    """Stream the events with their chain fields and the checkpoints among them;
    `tollgate audit verify --file` checks the result offline."""
    fmt = FORMATS[export_format.value]
    start, end = parse_instant("--since", since), parse_instant("--until", until)
    if cli_settings().url:
        params = {"format": export_format.value}
        params |= {"since": start.isoformat()} if start else {}
        params |= {"until": end.isoformat()} if end else {}
        began = time.perf_counter()
        try:
            size = _download(output, params)
        except OSError as exc:
            raise fail(f"--output: cannot write {output}: {exc.strerror}") from None
        if output is not None:
            err.print(
                f"wrote {output} ({size / 1e6:,.1f} MB) in {time.perf_counter() - began:.1f} s",
                highlight=False,
            )
        return

    async def write(db: Database) -> int:
        size = 0
        stream = (
            output.open("w", encoding="utf-8", newline="") if output is not None else sys.stdout
        )
        try:
            async for chunk in export_events(db, fmt, start, end):
                stream.write(chunk)
                size += len(chunk)
        finally:
            if output is not None:
                stream.close()
        return size

    began = time.perf_counter()
    try:
        size = _run(write)
    except OSError as exc:
        raise fail(f"--output: cannot write {output}: {exc.strerror}") from None
    if output is not None:
        err.print(
            f"wrote {output} ({size / 1e6:,.1f} MB) in {time.perf_counter() - began:.1f} s",
            highlight=False,
        )


@audit_app.command("checkpoint")
def checkpoint(
    key: Annotated[
        Path | None,
        typer.Option(
            help="Signing key file. Default: TOLLGATE_AUDIT_SIGNING_KEY_FILE. Not with "
            "TOLLGATE_URL: the server signs with its own key."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the checkpoint as one JSON line.")
    ] = False,
) -> None:
    """Sign the chain's head now (after re-verifying the events since the previous
    checkpoint). Keep the printed line somewhere the database's admins cannot edit.
    With TOLLGATE_URL set (and an auditor's or admin's token), the server signs with its
    own TOLLGATE_AUDIT_SIGNING_KEY_FILE."""
    settings = cli_settings()
    if settings.url:
        c, new = _checkpoint_remote(settings, key)
    else:
        path = key or settings.audit_signing_key_file
        if path is None:
            raise fail(
                "no signing key: set TOLLGATE_AUDIT_SIGNING_KEY_FILE or pass --key",
                "make a key pair with `tollgate audit keygen`",
            )
        try:
            signer = keys.load_signer(path, "--key" if key else "TOLLGATE_AUDIT_SIGNING_KEY_FILE")
        except TollgateError as exc:
            raise fail(exc.message) from None
        written = _run(lambda db: write_checkpoint(db, signer))
        if written is None:
            raise fail("the audit chain is empty: nothing to sign yet")
        c, new = written.checkpoint, written.new
    if as_json:
        print(json.dumps({"record": "checkpoint", **c.to_dict()}, separators=(",", ":")))
        return
    state = "signed" if new else "already signed"
    out.print(
        f"checkpoint {state}: seq {c.seq}, hash {c.hash}, key {c.key_id}, at {c.at}",
        highlight=False,
    )


def _checkpoint_remote(settings: Settings, key: Path | None) -> tuple[Checkpoint, bool]:
    """`POST /v1/audit/checkpoint`: the server signs with its own key."""
    if key is not None:
        raise fail(
            f"--key signs here, on the database itself, and TOLLGATE_URL is set "
            f"({settings.url}): the server signs with its own TOLLGATE_AUDIT_SIGNING_KEY_FILE",
            "drop --key, or unset TOLLGATE_URL and set TOLLGATE_DATABASE_URL",
        )
    with api_client(settings.api_url, settings.token) as client:
        answer = request(client, "POST", "/v1/audit/checkpoint")
    c = Checkpoint(
        int(answer["seq"]),
        str(answer["hash"]),
        str(answer["at"]),
        str(answer["key_id"]),
        str(answer["signature"]),
    )
    return c, bool(answer["new"])


@audit_app.command("keygen")
def keygen(
    private_key: Annotated[
        Path, typer.Option(help="Where to write the private key (mode 600).")
    ] = Path("audit-signing-key.pem"),
    public_key: Annotated[
        Path, typer.Option(help="Where to write the public key, for verifiers.")
    ] = Path("audit-signing-key.pub.pem"),
) -> None:
    """Make an Ed25519 key pair for checkpoints. Give the private key to the server
    (TOLLGATE_AUDIT_SIGNING_KEY_FILE) and the public key to the auditors."""
    try:
        key_id = keys.generate(private_key, public_key)
    except TollgateError as exc:
        raise fail(exc.message) from None
    except OSError as exc:
        raise fail(f"cannot write the key: {exc.strerror}: {exc.filename}") from None
    out.print(
        f"key {key_id}: private {private_key} (keep it secret, off the database host), "
        f"public {public_key}",
        highlight=False,
    )


@audit_app.command("reindex")
def reindex() -> None:
    """Rebuild the subject index (who each event is about) from the chain. It is derived
    data, outside the hashes: rebuild it after a restore or if it may have been edited.
    With TOLLGATE_URL set (and an auditor's or admin's token), the server rebuilds it."""
    settings = cli_settings()
    if settings.url:
        with api_client(settings.api_url, settings.token, timeout=3600) as client:
            count = int(request(client, "POST", "/v1/audit/reindex")["indexed"])
    else:
        count = _run(subjects.rebuild)
    out.print(f"indexed {count:,} events")
