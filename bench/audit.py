"""Audit export and verify throughput over a long chain, on SQLite and PostgreSQL.

Writes `--events` (default 1,000,000) audit events shaped like the pipeline's
(verdict.received, decision.recorded, action.planned in turn) with a correct hash
chain and two signed checkpoints, by bulk insert (SQLite executemany, PostgreSQL
COPY), then times, through Tollgate's own code:

- export to a file, JSON lines and CSV (`controlplane.audit.service.export`);
- verify the database from genesis with the checkpoint key
  (`controlplane.audit.verify.verify_database`);
- verify each export file offline (`controlplane.audit.verify.verify_file`).

Each prints events/s against the goal (>= 50,000 events/s), and the process's peak
RSS after each step: it stays flat when export and verify stream as they should.

    .venv/bin/python bench/audit.py [--events 1000000] [--backend sqlite|postgresql|both]
        [--pgserver]

PostgreSQL: a new `tollgate_bench_<random>` database on 127.0.0.1:5432 (user postgres,
trust auth), dropped afterwards; with `--pgserver`, or when nothing answers there, a
throwaway `pgserver`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controlplane.audit import repository  # noqa: E402
from controlplane.audit import service as audit  # noqa: E402
from controlplane.audit.chain import GENESIS_HASH, EventDraft, event_hash  # noqa: E402
from controlplane.audit.export import EVENT_FIELDS, FORMATS  # noqa: E402
from controlplane.audit.keys import Signer, generate, load_public_key, load_signer  # noqa: E402
from controlplane.audit.verify import PublicKeys, verify_database, verify_file  # noqa: E402
from controlplane.store.db import Database, upgrade  # noqa: E402
from controlplane.store.models import new_id  # noqa: E402
from controlplane.store.types import utcnow  # noqa: E402

GOAL = 50_000
CHUNK = 20_000
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
COLUMNS = EVENT_FIELDS


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def drafts(count: int) -> Iterator[EventDraft]:
    """Events shaped like the pipeline's, one verdict in three steps."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    revision = "9f1c2e7d" * 5
    for i in range(count):
        n, step = divmod(i, 3)
        at = start + timedelta(microseconds=137 * i)
        trace = f"{n:032x}"
        verdict = f"v-{n:09d}"
        if step == 0:
            yield EventDraft(
                type="verdict.received",
                actor="detector-sweep",
                at=at,
                provider="lab-a",
                verdict_id=verdict,
                trace_id=trace,
                payload={
                    "content_hash": f"{n:064x}",
                    "detector": {"name": "sweep", "version": "1.4.0"},
                    "score": round(0.5 + (n % 50) / 100, 2),
                    "confidence": 0.8,
                },
            )
        elif step == 1:
            yield EventDraft(
                type="decision.recorded",
                actor="tollgate",
                at=at,
                provider="lab-a",
                verdict_id=verdict,
                decision_id=f"dec_{n:024x}",
                trace_id=trace,
                payload={
                    "status": "ok",
                    "policy_revision": revision,
                    "entrypoint": "tollgate.decision",
                    "engine": "embedded",
                    "error": None,
                    "actions": 1,
                },
            )
        else:
            yield EventDraft(
                type="action.planned",
                actor="tollgate",
                at=at,
                provider="lab-a",
                verdict_id=verdict,
                decision_id=f"dec_{n:024x}",
                action_id=f"act_{n:024x}",
                trace_id=trace,
                payload={
                    "type": "rate_limit",
                    "target": {"kind": "api_key", "value": f"key_{n % 5000}"},
                    "params": {"requests_per_minute": 60},
                    "ttl_seconds": 86400.0,
                    "rule": "graduated.first_offense",
                    "reason": f"capability sweep, score 0.{n % 100:02d}",
                    "shadow": False,
                    "policy_revision": revision,
                },
            )


@dataclass
class Chain:
    count: int
    last_hash: str
    checkpoints: list[tuple[int, str]]


def chained(count: int) -> Iterator[tuple[int, EventDraft, str, str]]:
    """(seq, draft, prev_hash, hash) with the chain's own hash function."""
    prev = GENESIS_HASH
    for seq, draft in enumerate(drafts(count), start=1):
        digest = event_hash(seq, draft, prev)
        yield seq, draft, prev, digest
        prev = digest


def fill_sqlite(path: Path, count: int, checkpoint_at: set[int]) -> Chain:
    """Bulk insert with sqlite3, in the text forms SQLAlchemy reads back (naive UTC
    timestamps, JSON text)."""
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    sql = f"INSERT INTO audit_event ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * 12)})"
    rows: list[tuple[Any, ...]] = []
    last, marks = GENESIS_HASH, []
    for seq, d, prev, digest in chained(count):
        rows.append(
            (
                seq,
                d.at.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds"),
                d.type,
                d.actor,
                d.provider,
                d.verdict_id,
                d.decision_id,
                d.action_id,
                d.trace_id,
                json.dumps(d.payload),
                prev,
                digest,
            )
        )
        if seq in checkpoint_at:
            marks.append((seq, digest))
        last = digest
        if len(rows) == CHUNK:
            connection.executemany(sql, rows)
            rows.clear()
            progress(seq, count)
    if rows:
        connection.executemany(sql, rows)
    connection.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (count, last))
    connection.commit()
    connection.close()
    return Chain(count, last, marks)


def fill_postgresql(dsn: str, count: int, checkpoint_at: set[int]) -> Chain:
    import psycopg

    last, marks = GENESIS_HASH, []
    with psycopg.connect(dsn) as connection:
        with connection.cursor() as cursor:
            copy_sql = f"COPY audit_event ({', '.join(COLUMNS)}) FROM STDIN"
            with cursor.copy(copy_sql) as copy:
                for seq, d, prev, digest in chained(count):
                    copy.write_row(
                        (
                            seq,
                            d.at,
                            d.type,
                            d.actor,
                            d.provider,
                            d.verdict_id,
                            d.decision_id,
                            d.action_id,
                            d.trace_id,
                            json.dumps(d.payload),
                            prev,
                            digest,
                        )
                    )
                    if seq in checkpoint_at:
                        marks.append((seq, digest))
                    last = digest
                    if seq % CHUNK == 0:
                        progress(seq, count)
            cursor.execute("UPDATE audit_head SET seq = %s, hash = %s WHERE id = 1", (count, last))
        connection.execute("ANALYZE audit_event")
        connection.commit()
    return Chain(count, last, marks)


_last_progress = 0.0


def progress(done: int, total: int) -> None:
    global _last_progress
    now = time.monotonic()
    if now - _last_progress > 2:
        log(f"  writing: {done:,}/{total:,}")
        _last_progress = now


async def sign(db: Database, signer: Signer, marks: list[tuple[int, str]]) -> None:
    async with db.write() as session, session.begin():
        for seq, digest in marks:
            await repository.insert_checkpoint(
                session,
                {
                    "id": new_id("ckp"),
                    "seq": seq,
                    "hash": digest,
                    "at": utcnow(),
                    "key_id": signer.key_id,
                    "signature": signer.sign(seq, digest),
                },
            )


@dataclass
class Figure:
    step: str
    events: int
    seconds: float
    peak_mb: float
    ok: bool

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def export_to(db: Database, name: str, path: Path) -> int:
    size = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        async for chunk in audit.export(db, FORMATS[name], None, None):
            out.write(chunk)
            size += len(chunk)
    return size


async def measure(db: Database, chain: Chain, keys: PublicKeys, scratch: Path) -> list[Figure]:
    figures = []
    for name in ("jsonl", "csv"):
        path = scratch / f"audit.{name}"
        log(f"  export {name}")
        began = time.perf_counter()
        size = await export_to(db, name, path)
        seconds = time.perf_counter() - began
        step = f"export {name} ({size / 1e6:,.0f} MB)"
        figures.append(Figure(step, chain.count, seconds, peak_rss_mb(), True))
    log("  verify database")
    report = await verify_database(db, keys)
    ok = report.ok and report.events == chain.count and report.checkpoints_verified == 2
    figures.append(Figure("verify database", report.events, report.seconds, peak_rss_mb(), ok))
    for name in ("jsonl", "csv"):
        log(f"  verify file {name}")
        report = await asyncio.to_thread(verify_file, scratch / f"audit.{name}", keys)
        ok = report.ok and report.events == chain.count and report.checkpoints_verified == 2
        step = f"verify file {name}"
        figures.append(Figure(step, report.events, report.seconds, peak_rss_mb(), ok))
    return figures


@contextlib.contextmanager
def postgresql_database(scratch: Path, force_pgserver: bool) -> Iterator[tuple[str, str]]:
    """(SQLAlchemy URL, libpq DSN) of a fresh database, dropped afterwards."""
    import psycopg

    name = f"tollgate_bench_{secrets.token_hex(4)}"
    admin_dsn, server = PG_ADMIN, None
    if not force_pgserver:
        try:
            psycopg.connect(PG_ADMIN, connect_timeout=3).close()
        except psycopg.OperationalError as exc:
            log(f"postgresql: 127.0.0.1:5432 does not answer ({exc}); starting pgserver")
            force_pgserver = True
    if force_pgserver:
        import pgserver

        pgdir = scratch / "pgserver"
        server = pgserver.get_server(str(pgdir), cleanup_mode="stop")
        admin_dsn = f"postgresql://postgres@/postgres?host={pgdir}"
    try:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        dsn = admin_dsn.replace("/postgres?", f"/{name}?") if server else f"{PG_ADMIN[:-8]}{name}"
        yield dsn.replace("postgresql://", "postgresql+psycopg://"), dsn
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if server is not None:
            server.cleanup()


async def run_backend(
    backend: str, count: int, scratch: Path, signer: Signer, keys: PublicKeys, pgserver: bool
) -> list[Figure]:
    marks = {count // 2, count}
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            path = scratch / "audit.db"
            url = f"sqlite+aiosqlite:///{path}"
            upgrade(url)
            log(f"sqlite: writing {count:,} events to {path}")
            began = time.perf_counter()
            chain = fill_sqlite(path, count, marks)
        else:
            url, dsn = stack.enter_context(postgresql_database(scratch, pgserver))
            upgrade(url)
            log(f"postgresql: writing {count:,} events")
            began = time.perf_counter()
            chain = fill_postgresql(dsn, count, marks)
        log(f"  written in {time.perf_counter() - began:.1f} s")
        db = Database(url)
        try:
            await sign(db, signer, chain.checkpoints)
            return await measure(db, chain, keys, scratch)
        finally:
            await db.dispose()


def report(backend: str, figures: list[Figure]) -> None:
    print(f"\n{backend}")
    columns = f"{'step':<28} {'events':>11} {'seconds':>8} {'events/s':>10}  {'vs goal':>7}"
    print(f"  {columns}  peak RSS")
    for f in figures:
        verdict = "" if f.ok else "  NOT VERIFIED"
        print(
            f"  {f.step:<28} {f.events:>11,} {f.seconds:>8.1f} {f.rate:>10,.0f}  "
            f"{f.rate / GOAL:>6.2f}x  {f.peak_mb:,.0f} MB{verdict}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--pgserver", action="store_true", help="use pgserver even if 5432 answers")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    scratch = Path(tempfile.mkdtemp(prefix="tollgate-bench-audit-"))
    scratch.chmod(0o755)  # pgserver, run as root, hands its data dir to its own user
    try:
        generate(scratch / "key.pem", scratch / "key.pub.pem")
        signer = load_signer(scratch / "key.pem")
        keys = {signer.key_id: load_public_key(scratch / "key.pub.pem")}
        print(
            f"audit export and verify, {args.events:,} events; goal >= {GOAL:,} events/s each; "
            f"load average before: {os.getloadavg()[0]:.2f}"
        )
        failed = False
        for backend in backends:
            figures = asyncio.run(
                run_backend(backend, args.events, scratch, signer, keys, args.pgserver)
            )
            report(backend, figures)
            failed = failed or not all(f.ok for f in figures)
            for leftover in scratch.glob("audit.*"):
                leftover.unlink()
        return 1 if failed else 0
    except KeyboardInterrupt:
        return 130
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
