"""Ingest throughput: verdicts/s through the real server, against the raw OPA engine.

Runs a real Tollgate server (uvicorn, in a subprocess so the client load does not
share its GIL) on SQLite and/or PostgreSQL, POSTs synthetic verdicts in batches,
then evaluates the exact inputs the pipeline stored (`SELECT input FROM decision`)
on a bare `EmbeddedEngine`, single engine, single thread, in the same run (both with
the Go GC target `tollgate serve` gives its engines, `GOGC`). The goal:
the pipeline keeps at least 60% of the raw single-engine evaluation rate.

    .venv/bin/python bench/ingest.py [--verdicts 20000] [--batch 500]
        [--backend sqlite|postgresql|both] [--workers N] [--concurrency 1|2]
        [--profile DIR] [--replicas N]

`--replicas N` (PostgreSQL): the same workload through 1 server, then N servers on one
database, each given subjects no other replica sees; prints verdicts per CPU-second of
each and how long batches waited for another replica's subject locks.

`--profile DIR` samples the server with py-spy (`pip install py-spy` into the venv)
while the verdicts are posted, writes the raw stacks to DIR and prints where the
server's time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import queue
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"
ENTRYPOINT = "tollgate.decision"
GOAL = 0.60
RAW_SECONDS = 3.0
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
INTEL_CIDR = "203.0.113.0/24"

# The server, run as `python -c SERVER '<json config>'`.
SERVER = """
import json, logging, sys
from pathlib import Path
import uvicorn
from controlplane.api.app import create_app
from controlplane.settings import Settings

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
cfg = json.loads(sys.argv[1])
app = create_app(Settings(
    data_dir=Path(cfg["data_dir"]),
    database_url=cfg["database_url"],
    policy_dir=Path(cfg["policy_dir"]),
    engine_workers=cfg["workers"],
))
out = cfg.get("pyinstrument")
if out:
    # Wall-clock profile of the verdict requests only; awaits are charged to their awaiter.
    from pyinstrument import Profiler
    from pyinstrument.renderers import ConsoleRenderer, HTMLRenderer
    from pyinstrument.session import Session
    from pyinstrument.stack_sampler import active_profiler_context_var

    import asyncio

    sessions = []
    inner = app
    one_at_a_time = asyncio.Lock()  # the next request may start before this one returns

    async def app(scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/verdicts"):
            async with one_at_a_time:
                # uvicorn may start this request's task inside the previous one's context,
                # which still names that (stopped) profiler.
                active_profiler_context_var.set(None)
                profiler = Profiler(interval=0.0005, async_mode="enabled")
                profiler.start()
                try:
                    await inner(scope, receive, send)
                finally:
                    sessions.append(profiler.stop())
        else:
            await inner(scope, receive, send)

uvicorn.run(app, host="127.0.0.1", port=cfg["port"], log_level="warning", access_log=False)
if out and sessions:
    session = sessions[0]
    for more in sessions[1:]:
        session = Session.combine(session, more)
    text = ConsoleRenderer(unicode=False, color=False, short_mode=False).render(session)
    Path(out).write_text(text)
    Path(out).with_suffix(".html").write_text(HTMLRenderer().render(session))
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- verdicts

LABELS = (
    "distillation.capability_sweep",
    "distillation.cot_elicitation",
    "distillation.key_farm",
    "distillation.ip_rotation",
    "distillation.high_volume",
)
DETECTORS = (("sweep", "1.4.0"), ("cot", "0.9.2"), ("keyfarm", "2.0.1"), ("volume", "3.1.0"))
PROVIDERS = (("lab-a", 0.6), ("lab-b", 0.3), ("lab-c", 0.1))
BASE_TIME = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def generate_verdicts(count: int, seed: int) -> list[dict[str, Any]]:
    """`count` verdicts in DESIGN's shape, the same for the same seed.

    Subjects: 15% of traffic comes from 150 heavy accounts (they repeat a lot,
    within batches too), 35% from a medium pool (a few verdicts each), 50% from
    accounts seen once. About 5% of IPs fall in the intel range 203.0.113.0/24.
    Scores are a mix of legitimate (spread low) and distillation-like (skewed high)."""
    rng = random.Random(seed)
    medium = max(1, count // 4)
    providers = [p for p, _ in PROVIDERS]
    weights = [w for _, w in PROVIDERS]
    verdicts = []
    for i in range(count):
        pick = rng.random()
        if pick < 0.15:
            n = rng.randrange(150)
            account, org = f"acct_h{n}", f"org_h{n % 20}"
            provider = providers[n % 2]
        elif pick < 0.50:
            n = rng.randrange(medium)
            account, org = f"acct_m{n}", f"org_m{n % (medium // 3 + 1)}"
            provider = rng.choices(providers, weights)[0]
        else:
            account, org = f"acct_t{seed}_{i}", f"org_t{rng.randrange(count)}"
            provider = rng.choices(providers, weights)[0]
        key_name = f"key_{account}_{rng.randrange(3)}"
        api_key = (
            None
            if rng.random() < 0.05
            else (hashlib.sha256(key_name.encode()).hexdigest() if rng.random() < 0.2 else key_name)
        )
        subject: dict[str, Any] = {"ips": _ips(rng)}
        if rng.random() < 0.98 or not subject["ips"]:
            subject["account_id"] = account
        if api_key:
            subject["api_key_id"] = api_key
        if rng.random() < 0.7:
            subject["org_id"] = org
        distiller = rng.random() < 0.45
        score = rng.betavariate(5, 1.5) if distiller else rng.uniform(0.0, 0.7)
        labels = rng.sample(LABELS, rng.choice((0, 1, 1, 2))) if distiller else []
        if distiller and rng.random() < 0.4 and LABELS[0] not in labels:
            labels.append(LABELS[0])
        detector = rng.choice(DETECTORS)
        observed = BASE_TIME - timedelta(days=10) + timedelta(seconds=i * 864_000 / count)
        verdict: dict[str, Any] = {
            "id": f"v-{seed}-{i:07d}",
            "detector": {"name": detector[0], "version": detector[1]},
            "provider": provider,
            "observed_at": observed.isoformat().replace("+00:00", "Z"),
            "subject": subject,
            "score": round(score, 3),
            "confidence": round(rng.uniform(0.4, 1.0), 3),
            "signals": {
                "requests_24h": float(int(rng.lognormvariate(9, 2))),
                "prompt_template_reuse": round(rng.random(), 3),
                "cot_request_ratio": round(rng.random() * (0.9 if distiller else 0.2), 3),
                "keys_per_org": float(rng.randrange(1, 40 if distiller else 4)),
            },
            "labels": labels,
            "evidence": (
                [{"kind": "prompt_sample", "sha256": f"{rng.getrandbits(256):064x}"}]
                if rng.random() < 0.5
                else []
            ),
        }
        verdicts.append(verdict)
    return verdicts


def _ips(rng: random.Random) -> list[str]:
    n = rng.choices((0, 1, 2, 3), (5, 70, 18, 7))[0]
    ips = []
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            ips.append(f"203.0.113.{rng.randrange(256)}")
        elif r < 0.06:
            ips.append(f"2001:db8:bad::{rng.randrange(1, 0xFFFF):x}")
        else:
            ips.append(f"100.{rng.randrange(64, 128)}.{rng.randrange(256)}.{rng.randrange(1, 255)}")
    return ips


def chain_stats(verdicts: Sequence[dict[str, Any]], size: int) -> tuple[float, int]:
    """Mean and max per batch of its longest chain of verdicts each waiting for the one
    before (a verdict waits for the earlier ones of its batch sharing a subject key),
    as the server will compute them."""
    from controlplane.domain.verdict import Verdict
    from controlplane.evaluate.context import subject_dependencies

    counts = []
    for i in range(0, len(verdicts), size):
        models = [Verdict.model_validate(v) for v in verdicts[i : i + size]]
        depth: list[int] = []
        for waits in subject_dependencies(models):
            depth.append(1 + max((depth[w] for w in waits), default=0))
        counts.append(max(depth, default=0))
    return statistics.mean(counts), max(counts)


def indicator_rows() -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    rows = [
        ("cidr", INTEL_CIDR, "lab-b", 0.9, "amber", None),
        ("cidr", "203.0.113.128/25", "lab-c", 0.7, "green", None),
        ("cidr", "2001:db8:bad::/48", "lab-a", 0.95, "amber", now + timedelta(days=30)),
        ("cidr", "198.51.100.0/24", "lab-b", 0.85, "clear", None),
        ("cidr", "192.0.2.0/24", "lab-b", 0.9, "amber", now - timedelta(days=1)),
    ]
    return [
        {
            "id": f"ind_bench{i}",
            "kind": kind,
            "value": value,
            "source": source,
            "confidence": confidence,
            "tlp": tlp,
            "expires_at": expires,
            "created_at": now,
        }
        for i, (kind, value, source, confidence, tlp, expires) in enumerate(rows)
    ]


# --------------------------------------------------------------------------- cleanup


class Cleanup:
    """Undo steps run last-in first-out, on success, error or Ctrl-C."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Any]] = []

    def push(self, name: str, step: Any) -> None:
        self._steps.append((name, step))

    def run(self) -> None:
        while self._steps:
            name, step = self._steps.pop()
            try:
                step()
            except Exception as exc:
                log(f"cleanup: {name} failed: {type(exc).__name__}: {exc}")


def _terminate(sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {sig}")


# --------------------------------------------------------------------------- backends


@dataclass
class Backend:
    name: str
    database_url: str
    data_dir: Path


def sqlite_backend(tmp: Path) -> Backend:
    data = tmp / "sqlite"
    data.mkdir()
    url = f"sqlite+aiosqlite:///{data / 'tollgate.db'}"
    return Backend("sqlite", url, data)


def postgresql_backend(tmp: Path, cleanup: Cleanup, force_pgserver: bool) -> Backend:
    import psycopg

    data = tmp / "pg-data"
    data.mkdir()
    if not force_pgserver:
        try:
            admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
        except psycopg.OperationalError as exc:
            log(f"postgresql: 127.0.0.1:5432 does not answer ({exc}); starting pgserver")
        else:
            name = f"tollgate_bench_{secrets.token_hex(4)}"
            with admin:
                admin.execute(f'CREATE DATABASE "{name}"')

            def drop() -> None:
                with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

            cleanup.push(f"drop database {name}", drop)
            log(f"postgresql: database {name} on 127.0.0.1:5432")
            return Backend(
                "postgresql", f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", data
            )
    import pgserver

    pgdir = tmp / "pgserver"
    pgdir.mkdir()
    server = pgserver.get_server(  # type: ignore[attr-defined, unused-ignore]
        str(pgdir), cleanup_mode="stop"
    )
    cleanup.push("stop pgserver", server.cleanup)
    log(f"postgresql: pgserver in {pgdir}")
    return Backend("postgresql", f"postgresql+psycopg://postgres@/postgres?host={pgdir}", data)


def prepare_database(backend: Backend) -> str | None:
    """Migrate, insert the intel indicators and issue a detector token (when the
    API asks for one) before the server starts. Returns the token."""
    from sqlalchemy import create_engine, insert

    from controlplane.store.db import sync_url, upgrade
    from controlplane.store.models import IndicatorRow

    upgrade(backend.database_url)
    engine = create_engine(sync_url(backend.database_url))
    try:
        with engine.begin() as conn:
            conn.execute(insert(IndicatorRow), indicator_rows())
    finally:
        engine.dispose()
    return asyncio.run(_detector_token(backend.database_url))


async def _detector_token(url: str) -> str | None:
    try:
        from controlplane.auth.jobs import Tokens
        from controlplane.auth.roles import Role
    except ImportError:  # a tree from before bearer tokens
        return None
    from controlplane.store.db import Database

    db = Database(url)
    try:
        token, _ = await Tokens(db).create("bench-detector", Role.DETECTOR, "bench")
        return token
    finally:
        await db.dispose()


def stored_inputs(backend: Backend) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The exact OPA inputs the pipeline evaluated, and a few counts about the run."""
    from sqlalchemy import create_engine, func, select
    from sqlmodel import col

    from controlplane.store.db import sync_url
    from controlplane.store.models import ActionRow, AuditEventRow, DecisionRow, VerdictRow

    engine = create_engine(sync_url(backend.database_url))
    try:
        with engine.connect() as conn:
            # Decision ids are time-ordered: inputs come back in the order they were decided.
            inputs = list(
                conn.execute(select(col(DecisionRow.input)).order_by(col(DecisionRow.id)))
                .scalars()
                .all()
            )
            stats: dict[str, Any] = {
                "verdicts": conn.execute(select(func.count()).select_from(VerdictRow)).scalar(),
                "decision_status": dict(
                    conn.execute(
                        select(col(DecisionRow.status), func.count()).group_by(
                            col(DecisionRow.status)
                        )
                    ).all()
                ),
                "engine_ms": conn.execute(select(func.sum(col(DecisionRow.duration_ms)))).scalar(),
                "actions": dict(
                    conn.execute(
                        select(col(ActionRow.type), func.count()).group_by(col(ActionRow.type))
                    ).all()
                ),
                "audit_events": conn.execute(
                    select(func.count()).select_from(AuditEventRow)
                ).scalar(),
            }
    finally:
        engine.dispose()
    return inputs, stats


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    token: str | None = None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_server(
    backend: Backend,
    workers: int,
    tmp: Path,
    cleanup: Cleanup,
    pyinstrument_out: Path | None = None,
    label: str = "",
) -> Server:
    port = free_port()
    config: dict[str, Any] = {
        "data_dir": str(backend.data_dir),
        "database_url": backend.database_url,
        "policy_dir": str(POLICIES),
        "workers": workers,
        "port": port,
        "pyinstrument": str(pyinstrument_out) if pyinstrument_out else None,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    log_path = tmp / f"server-{backend.name}{label}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER, json.dumps(config)],
            cwd=backend.data_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop the server in order
        )
    server = Server(process, f"http://127.0.0.1:{port}", log_path)
    cleanup.push(f"stop server {process.pid}", lambda: stop_server(server))
    deadline = time.monotonic() + 90
    with httpx.Client(timeout=5) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{server.tail()}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{server.url}/readyz").status_code == 200:
                    return server
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after 90 s:\n{server.tail()}")
            time.sleep(0.1)


def stop_server(server: Server) -> None:
    process = server.process
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown: runtime.stop()
    try:
        process.wait(timeout=60)  # a profiled server writes its profile first
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


# --------------------------------------------------------------------------- load


@dataclass
class LoadResult:
    seconds: float
    latencies_ms: list[float]
    accepted: int = 0
    duplicates: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    decision_statuses: Counter[str] = field(default_factory=Counter)
    actions: int = 0
    server_cpu: float = 0.0
    """The server's user + system CPU seconds while the verdicts were posted."""


def encode_batches(verdicts: Sequence[dict[str, Any]], size: int) -> list[bytes]:
    return [
        json.dumps({"verdicts": verdicts[i : i + size]}, separators=(",", ":")).encode()
        for i in range(0, len(verdicts), size)
    ]


def post_all(
    server: Server, bodies: list[bytes], total: int, label: str, clients: int
) -> LoadResult:
    """POST every body; `clients` threads take the next batch as soon as they are free."""
    work: queue.SimpleQueue[tuple[int, bytes]] = queue.SimpleQueue()
    for item in enumerate(bodies):
        work.put(item)
    result = LoadResult(0.0, [])
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()
    done = [0, 0]  # batches, verdicts
    started = time.perf_counter()
    last_report = [started]

    def client_loop() -> None:
        headers = {"content-type": "application/json"}
        if server.token:
            headers["authorization"] = f"Bearer {server.token}"
        with httpx.Client(base_url=server.url, timeout=300, headers=headers) as client:
            while not stop.is_set():
                try:
                    _, body = work.get_nowait()
                except queue.Empty:
                    return
                t0 = time.perf_counter()
                response = client.post("/v1/verdicts", content=body)
                elapsed = (time.perf_counter() - t0) * 1000
                if response.status_code != 202:
                    raise RuntimeError(
                        f"POST /v1/verdicts answered {response.status_code}: {response.text[:500]}"
                    )
                answer = response.json()
                with lock:
                    result.latencies_ms.append(elapsed)
                    result.accepted += answer["accepted"]
                    result.duplicates += answer["duplicates"]
                    for item in answer["results"]:
                        result.statuses[item["status"]] += 1
                        result.decision_statuses[str(item.get("decision_status"))] += 1
                        result.actions += len(item["actions"])
                    done[0] += 1
                    done[1] += len(answer["results"])
                    now = time.perf_counter()
                    if now - last_report[0] >= 2 or done[0] == len(bodies):
                        last_report[0] = now
                        rate = done[1] / (now - started)
                        log(
                            f"[{label}] {done[1]:>7}/{total} verdicts, {done[0]} batches, "
                            f"{rate:,.0f} verdicts/s"
                        )

    def run() -> None:
        try:
            client_loop()
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=run, name=f"client-{i}", daemon=True) for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    finally:
        # On Ctrl-C the clients are not awaited: stopping the server ends their requests.
        stop.set()
    if errors:
        raise errors[0]
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class InputStats:
    kb_by_quarter: list[float]
    actions_by_quarter: list[float]
    max_actions: int
    max_kb: float


def input_stats(inputs: Sequence[dict[str, Any]]) -> InputStats:
    """How big the stored inputs are, by quarter of the run (history grows as it goes)."""
    sizes = [len(json.dumps(i, separators=(",", ":"))) / 1024 for i in inputs]
    actions = [len(i.get("history", {}).get("active_actions", [])) for i in inputs]
    step = max(1, -(-len(inputs) // 4))
    return InputStats(
        [statistics.mean(sizes[i : i + step]) for i in range(0, len(sizes), step)],
        [statistics.mean(actions[i : i + step]) for i in range(0, len(actions), step)],
        max(actions, default=0),
        max(sizes, default=0.0),
    )


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --------------------------------------------------------------------------- raw engine


@dataclass
class RawResult:
    single_per_s: float
    single_errors: int
    many_per_s: float
    workers: int


def raw_engine(inputs: list[dict[str, Any]], workers: int) -> RawResult:
    """The bare engine on the same policy and inputs: one engine, one thread, then
    `evaluate_many` on `workers` engines (for information)."""
    from controlplane.engine.bundle import load_bundle
    from controlplane.engine.embedded import EmbeddedEngine

    bundle = load_bundle(POLICIES)
    engine = EmbeddedEngine(bundle, ENTRYPOINT, workers=1)
    try:
        for item in inputs[:50]:
            engine.evaluate_sync(item)
        # Whole passes over the inputs until RAW_SECONDS have gone by; the median pass.
        errors, spent = 0, 0.0
        rates: list[float] = []
        while not rates or spent < RAW_SECONDS:
            errors = 0
            t0 = time.perf_counter()
            for item in inputs:
                if not engine.evaluate_sync(item).ok:
                    errors += 1
            elapsed = time.perf_counter() - t0
            spent += elapsed
            rates.append(len(inputs) / elapsed)
        single = statistics.median(rates)
    finally:
        engine.close()
    many_engine = EmbeddedEngine(bundle, ENTRYPOINT, workers=workers)
    try:
        asyncio.run(many_engine.evaluate_many(inputs[:200]))
        t0 = time.perf_counter()
        asyncio.run(many_engine.evaluate_many(inputs))
        many = len(inputs) / (time.perf_counter() - t0)
    finally:
        many_engine.close()
    return RawResult(single, errors, many, workers)


# --------------------------------------------------------------------------- profiling


class Profiler:
    """py-spy sampling the server process (all threads, native OPA time included)."""

    def __init__(self, pid: int, out: Path) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.out = out
        self._process = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--output",
                str(out),
                "--rate",
                "200",
                "--threads",
                "--nolineno",
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        time.sleep(0.5)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


LIBRARIES = (
    "json",
    "sqlalchemy",
    "sqlmodel",
    "pydantic",
    "opentelemetry",
    "ipaddress",
    "aiosqlite",
    "psycopg",
    "litestar",
    "uvicorn",
    "h11",
    "hashlib",
    "asyncio",
    "controlplane",
)


def summarise_profile(path: Path, top: int = 20) -> str:
    """Share of samples per thread; then the event loop's samples charged to the deepest
    `controlplane` frame on the stack (SQLAlchemy's greenlet stacks do not reach back to
    their caller: they are charged to the kind of SQL work), and to the leaf's library."""
    threads: Counter[str] = Counter()
    parsed: list[tuple[list[str], int]] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(no profile: {exc})"
    for line in lines:
        stack, _, number = line.rpartition(" ")
        if stack and number.isdigit():
            frames = stack.split(";")
            parsed.append((frames, int(number)))
            threads[frames[0]] += int(number)
    total = sum(threads.values())
    if not total:
        return "(no samples)"
    busiest = threads.most_common(1)[0][0]
    loop_thread = next((t for t in threads if t.endswith("MainThread")), busiest)
    owners: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    loop_samples = 0
    for frames, count in parsed:
        if frames[0] != loop_thread:
            continue
        loop_samples += count
        owners[_owner(frames)] += count
        leaves[_library(frames[-1])] += count
    out = [f"samples: {total} (all threads, idle threads excluded)"]
    for thread, count in threads.most_common(8):
        tag = "  <- event loop" if thread == loop_thread else ""
        out.append(f"  {count / total:6.1%}  {thread}{tag}")
    out.append(f"event loop thread ({loop_samples} samples), by deepest controlplane frame:")
    out += [f"  {c / loop_samples:6.1%}  {n}" for n, c in owners.most_common(top)]
    out.append("event loop thread, by the library of the innermost frame:")
    out += [f"  {c / loop_samples:6.1%}  {n}" for n, c in leaves.most_common(12)]
    return "\n".join(out)


def _owner(frames: list[str]) -> str:
    ours = [f for f in frames[1:] if "controlplane/" in f]
    if ours:
        return ours[-1]
    if "EpollSelector.select" in frames[-1]:
        return "(waiting: event loop idle in epoll)"
    if len(frames) > 1 and frames[1].startswith("Session.execute"):
        stack = ";".join(frames)
        if "_bulk_insert" in stack:
            kind = "bulk INSERT"
        elif "loading.py" in stack:
            kind = "loading ORM rows (JSON columns decoded here)"
        else:
            kind = "compile/execute"
        return f"(SQLAlchemy in its greenlet: {kind})"
    if len(frames) == 1:
        return "(no Python frame: native code)"
    return f"(other) {frames[-1]}"


def _library(frame: str) -> str:
    where = frame.rpartition("(")[2]
    if "EpollSelector.select" in frame:
        return "(idle: epoll)"
    if where.startswith(("trace/", "sdk/", "context/", "util/", "attributes/")):
        return "opentelemetry"  # py-spy shortens its paths to these
    return next((lib for lib in LIBRARIES if lib in where), where.rstrip(")"))


# --------------------------------------------------------------------------- main


@dataclass
class Figures:
    backend: str
    load: LoadResult
    raw: RawResult
    stats: dict[str, Any]
    verdicts: int
    batch: int
    workers: int
    clients: int
    chains: tuple[float, int]
    inputs: InputStats
    load_before: float

    @property
    def pipeline_per_s(self) -> float:
        return self.verdicts / self.load.seconds

    @property
    def ratio(self) -> float:
        return self.pipeline_per_s / self.raw.single_per_s


def run_backend(
    name: str,
    verdicts: list[dict[str, Any]],
    args: argparse.Namespace,
    tmp: Path,
) -> Figures:
    cleanup = Cleanup()
    load_before = os.getloadavg()[0]
    try:
        if name == "sqlite":
            backend = sqlite_backend(tmp)
        else:
            backend = postgresql_backend(tmp, cleanup, args.pgserver)
        t0 = time.perf_counter()
        token = prepare_database(backend)
        log(f"[{name}] migrated and seeded intel in {time.perf_counter() - t0:.1f} s")
        wall_profile = None
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            if args.profiler == "pyinstrument":
                wall_profile = args.profile / f"{name}.pyinstrument.txt"
        server = start_server(backend, args.workers, tmp, cleanup, wall_profile)
        server.token = token
        log(f"[{name}] server pid {server.process.pid} ready at {server.url}")
        bodies = encode_batches(verdicts, args.batch)
        profiler = None
        if args.profile and args.profiler == "py-spy":
            profiler = Profiler(server.process.pid, args.profile / f"{name}.raw.txt")
            cleanup.push("stop py-spy", profiler.stop)
        try:
            cpu_before = cpu_seconds(server.process.pid)
            load = post_all(server, bodies, len(verdicts), name, args.concurrency)
            load.server_cpu = cpu_seconds(server.process.pid) - cpu_before
        except RuntimeError:
            log(f"[{name}] server log (tail):\n{server.tail()}")
            raise
        if profiler is not None:
            profiler.stop()
        stop_server(server)
        log(f"[{name}] reading the stored inputs back")
        inputs, stats = stored_inputs(backend)
        log(f"[{name}] raw engine on {len(inputs)} stored inputs")
        raw = raw_engine(inputs, args.workers)
        figures = Figures(
            name,
            load,
            raw,
            stats,
            len(verdicts),
            args.batch,
            args.workers,
            args.concurrency,
            chain_stats(verdicts, args.batch),
            input_stats(inputs),
            load_before,
        )
        report(figures)
        if profiler is not None:
            print(f"\nserver profile, py-spy, CPU samples ({profiler.out}):")
            print(summarise_profile(profiler.out))
        if wall_profile is not None:
            print("\nserver profile, pyinstrument, wall clock of the verdict requests:")
            print(f"  {wall_profile} and {wall_profile.with_suffix('.html')}")
        return figures
    finally:
        cleanup.run()


def report(f: Figures) -> None:
    load, raw = f.load, f.raw
    lat = load.latencies_ms
    decided = load.statuses.get("decided", 0)
    engine_ms = float(f.stats.get("engine_ms") or 0.0)
    print(
        f"\n== {f.backend}: {f.verdicts} verdicts, batches of {f.batch}, "
        f"{f.workers} engine worker(s), {f.clients} client(s); "
        f"{os.cpu_count()} CPUs, load average {f.load_before:.1f} before the run"
    )
    print(f"  pipeline end to end    {f.pipeline_per_s:10,.0f} verdicts/s  ({load.seconds:.1f} s)")
    print(
        f"  server CPU             {load.server_cpu:10.1f} s      "
        f"({load.server_cpu / load.seconds:.2f} of {os.cpu_count()} CPUs busy, "
        f"{load.server_cpu * 1000 / max(1, f.verdicts):.2f} ms/verdict)"
    )
    print(
        f"  batch latency          p50 {percentile(lat, 50):8.1f} ms   "
        f"p99 {percentile(lat, 99):8.1f} ms   max {max(lat):8.1f} ms"
    )
    print(
        f"  raw engine, 1 engine   {raw.single_per_s:10,.0f} evaluations/s  "
        f"(evaluate_sync, 1 thread, same inputs)"
    )
    print(
        f"  raw engine, {raw.workers} workers  {raw.many_per_s:10,.0f} evaluations/s  "
        "(evaluate_many, for information)"
    )
    met = "MET" if f.ratio >= GOAL else "NOT MET"
    print(f"  pipeline / raw single  {f.ratio:10.1%}   goal >= {GOAL:.0%}: {met}")
    print(
        f"  results: {load.accepted} accepted, {load.duplicates} duplicates, {decided} decided, "
        f"decision status {dict(load.decision_statuses)}, {load.actions} actions"
    )
    print(
        f"  stored: {f.stats['verdicts']} verdicts, decisions {f.stats['decision_status']}, "
        f"actions {f.stats['actions']}, {f.stats['audit_events']} audit events; "
        f"engine time inside the pipeline {engine_ms / 1000:.2f} s "
        f"({engine_ms / max(1, f.verdicts):.3f} ms/verdict)"
    )
    print(
        f"  longest chain per batch: mean {f.chains[0]:.1f}, max {f.chains[1]} verdicts "
        "(each waits for the earlier ones of its batch sharing a subject with it)"
    )
    sizes = " / ".join(f"{kb:.1f}" for kb in f.inputs.kb_by_quarter)
    counts = " / ".join(f"{n:.1f}" for n in f.inputs.actions_by_quarter)
    print(
        f"  OPA input by quarter of the run: {sizes} KB mean (max {f.inputs.max_kb:.0f} KB); "
        f"history.active_actions {counts} mean (max {f.inputs.max_actions})"
    )
    if raw.single_errors:
        print(f"  raw engine errors: {raw.single_errors}")


# --------------------------------------------------------------------------- replicas


def disjoint(verdicts: Sequence[dict[str, Any]], parts: int) -> list[list[dict[str, Any]]]:
    """The verdicts dealt round-robin into `parts` slices whose subjects never meet: each
    slice's accounts, keys and orgs carry its number, and its IPv4 addresses end in a
    number of its own modulo `parts` (so the intel range still holds them). Within a
    slice, subjects repeat as in the whole."""
    slices: list[list[dict[str, Any]]] = [[] for _ in range(parts)]
    for i, original in enumerate(verdicts):
        part = i % parts
        verdict = json.loads(json.dumps(original))
        subject = verdict["subject"]
        for field_name in ("account_id", "api_key_id", "org_id"):
            if subject.get(field_name):
                subject[field_name] = f"{subject[field_name]}.r{part}"
        subject["ips"] = [_disjoint_ip(ip, part, parts) for ip in subject.get("ips", [])]
        slices[part].append(verdict)
    return slices


def _disjoint_ip(ip: str, part: int, parts: int) -> str:
    if ":" in ip:
        head, _, last = ip.rpartition(":")
        number = int(last or "0", 16)
        return f"{head}:{number - number % parts + part + parts:x}"
    head, _, last = ip.rpartition(".")
    number = min(int(last), 250)
    return f"{head}.{number - number % parts + part}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live children so far (/proc): the
    server's engine processes are its children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children.update(int(c) for c in task.read_text().split())
    return own + sum(cpu_seconds(child) for child in children)


def lock_waits(
    servers: Sequence[Server], metric: str = "tollgate_decide_lock_wait_seconds"
) -> tuple[Counter[float], int]:
    """Every server's buckets of the histogram `metric`, summed: (count at or under each
    bound, total)."""
    buckets: Counter[float] = Counter()
    total = 0
    for server in servers:
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith(f"{metric}_bucket"):
                bound = line.split('le="', 1)[1].split('"', 1)[0]
                value = float(line.rsplit(" ", 1)[1])
                if bound == "+Inf":
                    total += int(value)
                else:
                    buckets[float(bound)] += int(value)
    return buckets, total


def bucket_percentile(buckets: Counter[float], total: int, q: float) -> str:
    """The smallest bucket bound that holds `q`% of the waits ("<= 0.1 ms")."""
    if not total:
        return "n/a"
    for bound in sorted(buckets):
        if buckets[bound] >= q / 100 * total:
            return f"<= {bound * 1000:g} ms"
    return f"> {max(buckets) * 1000:g} ms"


@dataclass
class ReplicaFigures:
    replicas: int
    verdicts: int
    seconds: float
    cpu: float
    waits: tuple[Counter[float], int]
    locking: tuple[Counter[float], int]
    """The whole time taking the subject locks (statements and waits)."""

    @property
    def per_cpu_second(self) -> float:
        return self.verdicts / self.cpu


def run_replicas_once(
    replicas: int, slices: list[list[dict[str, Any]]], args: argparse.Namespace, tmp: Path
) -> ReplicaFigures:
    """`replicas` servers on one fresh PostgreSQL database, each posted its own slices."""
    cleanup = Cleanup()
    try:
        run_dir = tmp / f"replicas-{replicas}"
        run_dir.mkdir()
        backend = postgresql_backend(run_dir, cleanup, args.pgserver)
        token = prepare_database(backend)
        servers = []
        for n in range(replicas):
            server = start_server(backend, args.workers, run_dir, cleanup, label=f"-{n}")
            server.token = token
            servers.append(server)
        log(f"[replicas={replicas}] servers {', '.join(str(s.process.pid) for s in servers)}")
        # Each server gets the slices i with i % replicas == its number, as batches.
        bodies = [
            encode_batches(
                [v for i in range(n, len(slices), replicas) for v in slices[i]], args.batch
            )
            for n in range(replicas)
        ]
        total = sum(len(part) for part in slices)
        before = sum(cpu_seconds(s.process.pid) for s in servers)
        started = time.perf_counter()
        loads: list[LoadResult] = []
        failures: list[BaseException] = []

        def post(n: int) -> None:
            try:
                loads.append(
                    post_all(servers[n], bodies[n], total, f"replica {n}", args.concurrency)
                )
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=post, args=(n,), daemon=True) for n in range(replicas)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        seconds = time.perf_counter() - started
        cpu = sum(cpu_seconds(s.process.pid) for s in servers) - before
        waits = lock_waits(servers)
        locking = lock_waits(servers, "tollgate_decide_lock_seconds")
        return ReplicaFigures(
            replicas, sum(x.accepted for x in loads), seconds, cpu, waits, locking
        )
    finally:
        cleanup.run()


def run_replicas(verdicts: list[dict[str, Any]], args: argparse.Namespace, tmp: Path) -> None:
    """One server, then `--replicas` servers, on the same disjoint workload (PostgreSQL)."""
    slices = disjoint(verdicts, max(2, args.replicas))
    results = [run_replicas_once(n, slices, args, tmp) for n in (1, args.replicas)]
    one, many = results
    print(
        f"\n== replicas on one PostgreSQL: {len(verdicts)} verdicts in batches of {args.batch}, "
        f"subjects disjoint between replicas, {args.concurrency} client(s) per replica; "
        f"{os.cpu_count()} CPUs"
    )
    print(
        "  replicas  verdicts/s  server CPU s  verdicts per CPU-s  "
        "lock wait p50 / p99 (batches)  taking the locks p50 / p99"
    )
    for r in results:
        buckets, total = r.waits
        taking, taken = r.locking
        print(
            f"  {r.replicas:>8}  {r.verdicts / r.seconds:10,.0f}  {r.cpu:12.1f}  "
            f"{r.per_cpu_second:18,.0f}  {bucket_percentile(buckets, total, 50)} / "
            f"{bucket_percentile(buckets, total, 99)} ({total})  "
            f"{bucket_percentile(taking, taken, 50)} / {bucket_percentile(taking, taken, 99)}"
        )
    ratio = many.per_cpu_second / one.per_cpu_second
    buckets, total = many.waits
    p99 = bucket_percentile(buckets, total, 99)
    under = total and buckets.get(0.001, 0) >= 0.99 * total
    print(
        f"  {args.replicas} replicas / 1: {ratio:.1%} of the verdicts per CPU-second "
        f"(goal: within 10%: {'MET' if ratio >= 0.9 else 'NOT MET'}); lock wait p99 {p99} "
        f"(goal < 1 ms: {'MET' if under else 'NOT MET'})"
    )
    print(
        "  (this machine's cores are shared by the replicas and PostgreSQL: what must hold "
        "is that replicas never wait on each other for unrelated subjects)"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--verdicts", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500, help="verdicts per POST (1..1000)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--workers",
        type=int,
        default=max(1, min(os.cpu_count() or 1, 8)),
        help="engine workers of the server (default: Tollgate's default, CPUs up to 8)",
    )
    parser.add_argument("--concurrency", type=int, choices=(1, 2), default=1, help="clients")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="N > 1: PostgreSQL only; 1 server, then N servers on one database, subjects "
        "disjoint between them: verdicts per CPU-second and the subject-lock waits",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="pipeline and raw engine measured N times per backend (a fresh database and "
        "server each): each round's ratio, then their median and spread (a shared 2-CPU "
        "machine's speed drifts between runs)",
    )
    parser.add_argument(
        "--pgserver", action="store_true", help="use pgserver even if 127.0.0.1:5432 answers"
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="profile the server, write to DIR"
    )
    parser.add_argument(
        "--profiler",
        choices=("py-spy", "pyinstrument"),
        default="py-spy",
        help="py-spy: CPU samples of every thread; pyinstrument: wall clock of the requests",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.batch <= 1000:
        parser.error("--batch must be 1..1000 (the API's limit)")
    if args.verdicts < 1 or args.workers < 1 or args.replicas < 1 or args.rounds < 1:
        parser.error("--verdicts, --workers, --replicas and --rounds must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from controlplane.settings import Settings, engine_environment

    args = parse_args(argv)
    env = engine_environment(Settings())
    if env is not None:
        # The server runs its engines as `tollgate serve` does (Go reads GOGC only at
        # start), and the raw engine is measured in the same runtime: again, with it set.
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    log(f"engine runtime: GOGC={os.environ.get('GOGC')} for the server and the raw engine alike")
    signal.signal(signal.SIGTERM, _terminate)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    t0 = time.perf_counter()
    verdicts = generate_verdicts(args.verdicts, args.seed)
    elapsed = time.perf_counter() - t0
    log(f"generated {len(verdicts)} verdicts (seed {args.seed}) in {elapsed:.1f} s")
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    # pgserver, run as root, hands its data dir to a `pgserver` user: let it in.
    tmp.chmod(0o755)
    results: list[Figures] = []
    try:
        if args.replicas > 1:
            run_replicas(verdicts, args, tmp)
            return 0
        for name in backends:
            for round_ in range(args.rounds):
                folder = tmp / f"{name}-{round_}"
                folder.mkdir()
                if args.rounds > 1:
                    log(f"[{name}] round {round_ + 1} of {args.rounds}")
                results.append(run_backend(name, verdicts, args, folder))
    except KeyboardInterrupt:
        log("interrupted: cleaned up")
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if len(results) > 1:
        print("\n== summary")
        for f in results:
            print(
                f"  {f.backend:<10} {f.pipeline_per_s:8,.0f} verdicts/s  "
                f"p50 {percentile(f.load.latencies_ms, 50):7.1f} ms  "
                f"p99 {percentile(f.load.latencies_ms, 99):7.1f} ms  "
                f"raw {f.raw.single_per_s:8,.0f}/s  ratio {f.ratio:6.1%}"
            )
    if args.rounds > 1:
        print(f"\n== {args.rounds} rounds: pipeline / raw single engine, each of its round")
        for name in backends:
            ratios = [f.ratio for f in results if f.backend == name]
            rates = [f.pipeline_per_s for f in results if f.backend == name]
            met = "MET" if statistics.median(ratios) >= GOAL else "NOT MET"
            print(
                f"  {name:<10} ratios {' '.join(f'{r:.1%}' for r in ratios)}; median "
                f"{statistics.median(ratios):.1%} (spread {min(ratios):.1%}..{max(ratios):.1%}), "
                f"pipeline median {statistics.median(rates):,.0f} verdicts/s; "
                f"goal >= {GOAL:.0%}: {met}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
