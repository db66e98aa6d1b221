"""Scale: does the cost of a verdict stay constant whatever is already enforced?

    .venv/bin/python bench/scale.py [--only enforce,posts] [--sizes 0,10000,100000]
        [--verdicts 200] [--rate 20] [--connections 1,4,16]
        [--databases sqlite,postgresql] [--seconds 10]

1. enforce: time to enforce at N active actions. For each N in `--sizes`: a fresh SQLite
   database seeded (bulk insert) with N active, applied, non-shadow, unexpired actions
   (a quarter each: IP blocks, CIDR blocks, revoked keys, rate limits), each with an
   `action_enforcement` row `applied` for the connector `edge`; a real HAProxy started
   with its ACL/map files already holding those N entries; a Tollgate server (uvicorn, in
   a subprocess) with the `haproxy` connector. Once its start reconcile is done
   (`last_reconcile_at` in `GET /v1/connectors`), shared-intel CIDRs are posted and
   `--verdicts` verdicts are sent open-loop at `--rate`/s, each about an address in its
   own intel range (the bundled policies block that /24); after each, HAProxy is probed
   with that address in X-Forwarded-For until it answers 403, for at most 30 s. Printed
   per N: the start reconcile's duration, time to enforce p50/p99/max, how many were not
   enforced within 30 s, the 202's p50/p99, the server's peak RSS (VmHWM); and the
   ratios to the goals of issue 8 (time to enforce p99 < 50 ms with 0 lost up to 100k,
   < 100 ms at 1M; the 202's p99 at 100k within 20% of its p99 at 0; RSS < 500 MB at 1M).
2. posts: single-verdict POSTs. For each database in `--databases` and each C in
   `--connections`: a fresh database (PostgreSQL: a new database on 127.0.0.1:5432,
   dropped after), a server without connectors, and a client in this process (not the
   server's) keeping C keep-alive connections, each sending one-verdict POSTs back to
   back for `--seconds` after a warm-up. The client is a minimal asyncio HTTP/1.1 client
   on pre-serialised requests, so that on a small machine its own CPU stays small.
   Printed: verdicts/s, latency p50/p99, errors (non-202 answers and transport errors)
   and the ratio to the goal (>= 1,000/s with 0 errors at 4 connections, both databases).

Figures go to stdout, progress to stderr. Exit 0 whether or not the goals are met, 130
on Ctrl-C, 1 when the run itself failed. Every process and temporary directory this
starts is cleaned up, on errors and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import ipaddress
import itertools
import json
import math
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import ingest  # noqa: E402  (bench/ingest.py: backends, server, cleanup)

from connectors.haproxy import HAProxyOptions  # noqa: E402
from controlplane.cli.demo import LocalHAProxy, ensure_haproxy  # noqa: E402
from controlplane.enforce.sdk import reference_of  # noqa: E402

ENFORCE_GOAL_MS = 50.0
ENFORCE_GOAL_1M_MS = 100.0
ACCEPT_P99_GOAL = 1.20
"""The 202's p99 at 100k over its p99 at 0."""
RSS_GOAL_MB = 500.0
POSTS_GOAL = 1000.0
POSTS_GOAL_CONNECTIONS = 4
ENFORCE_TIMEOUT_S = 30.0
RECONCILE_TIMEOUT_S = 3600.0
WARMUP_S = 1.5
WARMUP_VERDICTS = 20
"""Verdicts sent (and enforced) at each N before the measured ones, not counted: the
first groups of a fresh server pay for its first statements, its first evaluations
and the first pushes of its connector, which a server running for days never does."""
SEED_CHUNK = 5000

# The server with a config file (connectors), run as `python -c SERVER '<json config>'`.
SERVER = """
import json, logging, sys
from pathlib import Path
import uvicorn
from controlplane.api.app import create_app
from controlplane.settings import Settings

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
cfg = json.loads(sys.argv[1])
settings = Settings(data_dir=Path(cfg["data_dir"]), database_url=cfg["url"],
                    policy_dir=Path(cfg["policies"]), config=Path(cfg["config"]),
                    otlp_endpoint="")
uvicorn.run(create_app(settings), host="127.0.0.1", port=cfg["port"], log_level="warning")
"""
# The model API behind HAProxy, in a process of its own: answering the probes' 200s here
# would take the GIL from the client that measures.
STUB = """
import time
from controlplane.cli.demo import ModelStub
print(ModelStub().start().address, flush=True)
time.sleep(1e9)
"""


class Progress:
    """Progress lines on stderr, each phase timed from its start."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(
            f"[scale {time.perf_counter() - self.t0:7.1f}s] {message}", file=sys.stderr, flush=True
        )


log = Progress()


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (works with inf: a verdict never enforced)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def ms(value: float, width: int = 8) -> str:
    if math.isnan(value):
        return f"{'-':>{width}}"
    if math.isinf(value):
        return f"{'>30000':>{width}}"
    return f"{value:{width}.1f}"


def ratio(value: float, goal: float) -> str:
    if math.isnan(value) or math.isnan(goal) or goal == 0:
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value / goal:.2f}x"


def fmt_n(n: int) -> str:
    return f"{n:,}"


# -- 1. time to enforce at N active actions -----------------------------------------------


def target_of(i: int) -> tuple[str, str, str, dict[str, Any]]:
    """The i-th seeded action: (type, target kind, value, params). Never inside the probe
    ranges (100.64.0.0/10) nor on loopback."""
    j, quarter = divmod(i, 4)
    if quarter == 0:
        return "block", "ip", str(ipaddress.IPv4Address(0x28000000 + j)), {}  # 40.0.0.0 + j
    if quarter == 1:
        network = ipaddress.IPv4Address(0x1E000000 + j * 256)  # 30.0.0.0/24 + j
        return "block", "cidr", f"{network}/24", {}
    if quarter == 2:
        return "revoke_key", "api_key", f"key_rv_{j:07d}", {}
    return "rate_limit", "api_key", f"key_rl_{j:07d}", {"requests_per_minute": 60 * (1 + j % 5)}


def seed_database(url: str, count: int) -> None:
    """Migrate and bulk-insert `count` active, applied actions (with their enforcement
    rows for `edge`), in chunks so that a million rows never sit in memory at once."""
    from sqlalchemy import create_engine, insert

    from controlplane.store.db import sync_url, upgrade
    from controlplane.store.models import (
        ActionEnforcementRow,
        ActionRow,
        DecisionRow,
        VerdictRow,
    )

    upgrade(url)
    now = datetime.now(UTC)
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(VerdictRow),
                [
                    {
                        "id": "bench-v",
                        "provider": "lab-a",
                        "detector_name": "bench",
                        "detector_version": "1",
                        "score": 0.9,
                        "confidence": 0.9,
                        "observed_at": now,
                        "received_at": now,
                        "body": {},
                        "content_hash": "0" * 64,
                        "status": "decided",
                    }
                ],
            )
            conn.execute(
                insert(DecisionRow),
                [
                    {
                        "id": "bench-d",
                        "verdict_id": "bench-v",
                        "provider": "lab-a",
                        "policy_revision": "bench",
                        "entrypoint": "tollgate.decision",
                        "engine": "bench",
                        "status": "ok",
                        "input": {},
                        "result": {},
                        "duration_ms": 0.0,
                        "decided_at": now,
                    }
                ],
            )
            expires = now + timedelta(days=30)
            for start in range(0, count, SEED_CHUNK):
                actions = []
                applied = []
                for i in range(start, min(count, start + SEED_CHUNK)):
                    kind, target_kind, value, params = target_of(i)
                    action_id = f"act_{i:08d}"
                    actions.append(
                        {
                            "id": action_id,
                            "decision_id": "bench-d",
                            "verdict_id": "bench-v",
                            "provider": "lab-a",
                            "type": kind,
                            "target_kind": target_kind,
                            "target_value": value,
                            "params": params,
                            "ttl_seconds": 30 * 86400.0,
                            "expires_at": expires,
                            "rule": "bench",
                            "reason": "bench",
                            "state": "applied",
                            "shadow": False,
                            "policy_revision": "bench",
                            "created_at": now,
                            "updated_at": now,
                        }
                    )
                    applied.append(
                        {
                            "action_id": action_id,
                            "connector": "edge",
                            "state": "applied",
                            "attempts": 1,
                            "error": None,
                            "retryable": True,
                            "updated_at": now,
                        }
                    )
                conn.execute(insert(ActionRow), actions)
                conn.execute(insert(ActionEnforcementRow), applied)
    finally:
        engine.dispose()


def write_gateway_files(options: HAProxyOptions, count: int) -> None:
    """The ACL and map files HAProxy loads at start, already holding the N entries, in
    the format the connector reads (ACL: one entry a line; maps: `key value`, the value
    being the reference a refusal quotes, after the limit for `rate_limit.map`; the
    blocks' references in `blocked_ref.map`, as a deployment holds them)."""
    Path(options.state_dir).mkdir(parents=True, exist_ok=True)
    files: dict[str, list[str]] = {
        options.blocked_acl: [],
        options.blocked_ref_map: [],
        options.revoked_map: [],
        options.rate_limit_map: [],
    }
    acl, refs, revoked, limited = files.values()
    for i in range(count):
        kind, target_kind, value, params = target_of(i)
        if kind == "block":
            acl.append(value)
            refs.append(f"{value} {reference_of(kind, target_kind, value)}")
        elif kind == "revoke_key":
            revoked.append(f"{value} {reference_of(kind, 'api_key', value)}")
        else:
            reference = reference_of(kind, "api_key", value)
            limited.append(f"{value} {params['requests_per_minute']}:{reference}")
    for path, lines in files.items():
        Path(path).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def connector_config(options: HAProxyOptions) -> dict[str, Any]:
    return {
        "name": "edge",
        "type": "haproxy",
        "providers": ["*"],
        "reconcile_seconds": 86400,
        "timeout_seconds": 10,
        "options": {
            "socket": options.socket,
            "state_dir": options.state_dir,
            "key_match": "id",
        },
    }


async def admin_token(url: str) -> str:
    from controlplane.auth.jobs import Tokens
    from controlplane.auth.roles import Role
    from controlplane.store.db import Database

    db = Database(url)
    try:
        return (await Tokens(db).create("bench-scale", Role.ADMIN, "bench"))[0]
    finally:
        await db.dispose()


def start_server(
    data: Path, url: str, config: Path, cleanup: ingest.Cleanup
) -> tuple[ingest.Server, float]:
    """A server with the config file's connectors; (the server, seconds until /readyz)."""
    port = ingest.free_port()
    cfg = {
        "data_dir": str(data),
        "url": url,
        "policies": str(REPO / "policies"),
        "config": str(config),
        "port": port,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    log_path = data / "server.log"
    started = time.perf_counter()
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER, json.dumps(cfg)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop the server in order
        )
    server = ingest.Server(process, f"http://127.0.0.1:{port}", log_path)
    cleanup.push(f"stop server {process.pid}", lambda: ingest.stop_server(server))
    deadline = time.monotonic() + 120
    with httpx.Client(timeout=5) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{server.tail()}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{server.url}/readyz").status_code == 200:
                    return server, time.perf_counter() - started
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after 120 s:\n{server.tail()}")
            time.sleep(0.05)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def log_problems(path: Path) -> list[str]:
    """Warnings, errors and tracebacks in a server log."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [
        line
        for line in lines
        if line.startswith(("WARNING", "ERROR", "CRITICAL", "Traceback")) or "Error" in line[:60]
    ]


@dataclass
class EnforceFigures:
    n: int
    seed_s: float
    files_s: float
    ready_s: float
    reconcile_s: float
    reconcile_status: dict[str, Any]
    enforce_ms: list[float]
    accepted_ms: list[float]
    after_ms: list[float]
    lost: int
    warm_lost: int
    """Warm-up verdicts not enforced within 30 s (not in the figures, but shown)."""
    errors: Counter[str]
    first: Counter[int]
    rss_mb: float
    final: dict[str, Any]
    problems: list[str]
    slowest: list[str]
    """The server's spans of the slowest 202s (where their time went)."""


def enforce_at(
    n: int, binary: str, backend: str, tmp: Path, verdicts: int, rate: float
) -> EnforceFigures:
    cleanup = ingest.Cleanup()
    try:
        root = tmp / f"n{n}"
        data = root / "tollgate"
        data.mkdir(parents=True)
        url = f"sqlite+aiosqlite:///{data / 'tollgate.db'}"
        t0 = time.perf_counter()
        log(f"N={fmt_n(n)}: seeding {fmt_n(n)} active applied actions into SQLite")
        seed_database(url, n)
        seed_s = time.perf_counter() - t0
        log(f"N={fmt_n(n)}: seeded in {seed_s:.1f} s; writing the HAProxy ACL/map files")
        directory = root / "haproxy"
        options = HAProxyOptions(
            socket=str(directory / "admin.sock"), state_dir=str(directory), key_match="id"
        )
        t0 = time.perf_counter()
        write_gateway_files(options, n)
        proxy = LocalHAProxy(binary, directory, options, backend, trusted_proxies=("127.0.0.1",))
        cleanup.push("stop haproxy", proxy.stop)
        proxy.start()
        files_s = time.perf_counter() - t0
        log(f"N={fmt_n(n)}: HAProxy up with its files in {files_s:.1f} s at {proxy.url}")
        config = data / "tollgate.yaml"
        config.write_text(yaml.safe_dump({"connectors": [connector_config(options)]}))
        bearer = asyncio.run(admin_token(url))
        server, ready_s = start_server(data, url, config, cleanup)
        log(f"N={fmt_n(n)}: server pid {server.process.pid} ready in {ready_s:.1f} s")
        try:
            run = asyncio.run(_enforce_run(server, bearer, proxy.url, n, verdicts, rate))
        except Exception:
            log(f"N={fmt_n(n)}: server log (tail):\n{server.tail(40)}")
            raise
        rss = peak_rss_mb(server.process.pid)
        ingest.stop_server(server)
        return EnforceFigures(
            n=n,
            seed_s=seed_s,
            files_s=files_s,
            ready_s=ready_s,
            rss_mb=rss,
            problems=log_problems(server.log_path),
            **run,
        )
    finally:
        cleanup.run()
        shutil.rmtree(tmp / f"n{n}", ignore_errors=True)


async def _connectors(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.get("/v1/connectors/", timeout=120)
    response.raise_for_status()
    found: dict[str, Any] = next(c for c in response.json() if c["name"] == "edge")
    return found


async def _enforce_run(
    server: ingest.Server, bearer: str, proxy_url: str, n: int, count: int, rate: float
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {bearer}"}
    # The measured verdicts' ranges, then the warm-up's.
    ranges = [f"100.{64 + i // 256}.{i % 256}.0/24" for i in range(count + WARMUP_VERDICTS)]
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as api:
        # The follower reconciles at start: wait for it, and time it from the moment it
        # began (`last_reconcile_at` is when the reconcile started).
        deadline = time.monotonic() + RECONCILE_TIMEOUT_S
        while True:
            status = await _connectors(api)
            if status["last_reconcile_at"]:
                seen = datetime.now(UTC)
                began = datetime.fromisoformat(status["last_reconcile_at"].replace("Z", "+00:00"))
                reconcile_s = (seen - began).total_seconds()
                break
            if server.process.poll() is not None:
                raise RuntimeError(f"server exited:\n{server.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no start reconcile within {RECONCILE_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.1)
        log(
            f"N={fmt_n(n)}: start reconcile done in {reconcile_s:.2f} s (state "
            f"{status['state']}, desired {status['desired']}, applied {status['applied']}, "
            f"failed {status['failed']}, pending {status['pending_changes']})"
        )
        indicators = [
            {"kind": "cidr", "value": cidr, "source": "lab-b", "confidence": 0.9} for cidr in ranges
        ]
        for i in range(0, len(indicators), 1000):
            response = await api.post(
                "/v1/intel/indicators", json={"indicators": indicators[i : i + 1000]}
            )
            response.raise_for_status()
        first: Counter[int] = Counter()
        errors: Counter[str] = Counter()
        enforce: list[float] = []
        accepted: list[float] = []
        traced: list[tuple[float, str]] = []
        after: list[float] = []
        lost = 0

        async def one(i: int, at: float) -> None:
            nonlocal lost
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            address = ranges[i].replace(".0/24", ".7")
            # Probed every 5 ms on a raw keep-alive connection: a full HTTP client costs
            # ~10x the CPU per probe, and with a few verdicts in flight the probing
            # would take a core of this machine from the server it measures.
            probe = _Prober(proxy_url, address, errors)
            first[await probe()] += 1
            tag = secrets.token_hex(6)
            verdict = {
                "id": f"scale-{tag}",
                "provider": "lab-a",
                "detector": {"name": "bench", "version": "1"},
                "observed_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "subject": {"account_id": f"acct_{tag}", "ips": [address]},
                "score": 0.6,  # local evidence: one lab's range may then drive a block
                "confidence": 0.8,
            }
            sent = time.perf_counter()
            try:
                answer = await api.post("/v1/verdicts", json=verdict)
            except httpx.TransportError as exc:
                errors[f"verdict {type(exc).__name__}"] += 1
                lost += 1
                probe.close()
                return
            accepted.append((time.perf_counter() - sent) * 1000)
            answered = accepted[-1]
            with contextlib.suppress(ValueError, KeyError, IndexError):
                traced.append((answered, answer.json()["results"][0]["trace_id"]))
            if answer.status_code != 202:
                errors[f"verdict HTTP {answer.status_code}"] += 1
                lost += 1
                probe.close()
                return
            until = sent + ENFORCE_TIMEOUT_S
            try:
                while time.perf_counter() < until:
                    if await probe() == 403:
                        enforce.append((time.perf_counter() - sent) * 1000)
                        after.append(enforce[-1] - answered)
                        return
                    await asyncio.sleep(0.005)
                lost += 1
            finally:
                probe.close()

        async def progress() -> None:
            while True:
                await asyncio.sleep(5)
                log(f"N={fmt_n(n)}: {len(accepted)} accepted, {len(enforce)} enforced, {lost} lost")

        log(f"N={fmt_n(n)}: warming up: {WARMUP_VERDICTS} verdicts at {rate:g}/s, not counted")
        start = time.monotonic() + 0.2
        await asyncio.gather(*(one(count + i, start + i / rate) for i in range(WARMUP_VERDICTS)))
        warm_lost = lost
        enforce.clear()
        accepted.clear()
        after.clear()
        traced.clear()
        first.clear()
        lost = 0
        log(f"N={fmt_n(n)}: sending {count} verdicts at {rate:g}/s")
        ticker = asyncio.create_task(progress())
        start = time.monotonic() + 0.2
        try:
            await asyncio.gather(*(one(i, start + i / rate) for i in range(count)))
        finally:
            ticker.cancel()
        # Then until the connector's cursor reaches the log's head (at most 30 s).
        caught_up = time.perf_counter()
        while True:
            final = await _connectors(api)
            if final["pending_changes"] == 0 or time.perf_counter() - caught_up > 30:
                break
            await asyncio.sleep(0.1)
        final["caught_up_s"] = time.perf_counter() - caught_up
        slowest = await _slowest_traces(api, traced)
        # Verdicts never enforced count as infinitely late in the percentiles.
        return {
            "reconcile_s": reconcile_s,
            "reconcile_status": status,
            "enforce_ms": enforce + [math.inf] * lost,
            "accepted_ms": accepted,
            "after_ms": after,
            "lost": lost,
            "warm_lost": warm_lost,
            "errors": errors,
            "first": first,
            "final": final,
            "slowest": slowest,
        }


async def _slowest_traces(
    api: httpx.AsyncClient, traced: list[tuple[float, str]], count: int = 3
) -> list[str]:
    """The server's own spans of the `count` slowest 202s, one line each: where a slow
    answer's time went inside the server (and how much of it was outside: the client,
    the network, the queue before the request was read)."""
    await asyncio.sleep(6)  # the span store writes its batches every 5 s
    lines = []
    for answered, trace_id in sorted(traced, reverse=True)[:count]:
        response = await api.get(f"/v1/traces/{trace_id}")
        if response.status_code != 200:
            lines.append(f"{answered:7.1f} ms: trace {trace_id}: HTTP {response.status_code}")
            continue
        spans = response.json().get("spans", [])
        parts = ", ".join(
            f"{sp['name']} {sp['duration_ms']:.1f}"
            + (
                f" (queued {sp['attributes']['tollgate.queued_ms']:.1f} before it)"
                if "tollgate.queued_ms" in sp.get("attributes", {})
                else ""
            )
            for sp in spans[:8]
        )
        lines.append(f"{answered:7.1f} ms: {parts}")
    return lines


class _Prober:
    """GET / through HAProxy as one client address, on a keep-alive connection of its
    own (opened again when HAProxy closes it): the response's status, 0 on an error."""

    def __init__(self, url: str, address: str, errors: Counter[str]) -> None:
        parsed = httpx.URL(url)
        self._host, self._port = parsed.host, parsed.port or 80
        self._request = (
            f"GET / HTTP/1.1\r\nHost: {self._host}\r\nX-Forwarded-For: {address}\r\n\r\n"
        ).encode()
        self._errors = errors
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def __call__(self) -> int:
        try:
            if self._stream is None:
                self._stream = await asyncio.open_connection(self._host, self._port)
            reader, writer = self._stream
            writer.write(self._request)
            status, _, keep = await asyncio.wait_for(read_response(reader), 5)
            if not keep:
                self.close()
            return status
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            self._errors[f"probe {type(exc).__name__}"] += 1
            self.close()
            return 0

    def close(self) -> None:
        if self._stream is not None:
            self._stream[1].close()
            self._stream = None


def report_enforce(figures: list[EnforceFigures], verdicts: int, rate: float) -> None:
    print(
        f"\n1. time to enforce at N active actions: {verdicts} verdicts at {rate:g}/s, real "
        "HAProxy, SQLite (verdict sent -> HAProxy 403)"
    )
    base = next((f for f in figures if f.n == 0), None)
    base_p99 = pct(base.accepted_ms, 99) if base else math.nan
    for f in figures:
        st = f.reconcile_status
        print(f"\n  N = {fmt_n(f.n)}")
        print(
            f"    setup: seeded {f.seed_s:.1f} s, HAProxy files + start {f.files_s:.1f} s, "
            f"server ready {f.ready_s:.1f} s"
        )
        print(
            f"    start reconcile      <={f.reconcile_s:8.2f} s   (desired {st['desired']}, "
            f"applied {st['applied']}, failed {st['failed']}, rejected {st['rejected']}, "
            f"state {st['state']})"
        )
        e = f.enforce_ms
        print(
            f"    time to enforce        p50 {ms(pct(e, 50))} ms  p99 {ms(pct(e, 99))} ms  "
            f"max {ms(max(e) if e else math.nan)} ms"
        )
        print(
            f"    not enforced in 30 s   {f.lost} of {verdicts}  "
            f"(after {WARMUP_VERDICTS} warm-up verdicts, not counted; {f.warm_lost} of them "
            "not enforced)"
        )
        a = f.accepted_ms
        print(f"    202                    p50 {ms(pct(a, 50))} ms  p99 {ms(pct(a, 99))} ms")
        r = f.after_ms
        print(
            f"    202 -> 403             p50 {ms(pct(r, 50))} ms  p99 {ms(pct(r, 99))} ms  "
            "(the enforcement path alone: change log, follower, HAProxy; enforced ones)"
        )
        print(f"    server peak RSS        {f.rss_mb:8.1f} MB (VmHWM)")
        fin = f.final
        print(
            f"    connector after        state {fin['state']}, cursor {fin['cursor']}, "
            f"pending {fin['pending_changes']}, lag {fin['lag_seconds']:.2f} s "
            f"({fin['caught_up_s']:.1f} s after the last verdict was enforced)"
        )
        print(f"    first probe per address (200 expected): {dict(f.first)}")
        if f.slowest:
            print("    slowest 202s, as the server's spans saw them (name ms):")
            for line in f.slowest:
                print(f"      {line}")
        if f.errors:
            print(f"    errors: {dict(f.errors)}")
        if f.problems:
            print(f"    server log: {len(f.problems)} warning/error lines, first: {f.problems[0]}")
    print("\n  summary (ratios measured in this run)")
    print(
        f"    {'N':>9} {'reconcile s':>11} {'202 p50':>8} {'202 p99':>8} {'p99/N=0':>8} "
        f"{'enf p50':>8} {'enf p99':>8} {'enf max':>8} {'lost':>5} {'RSS MB':>7}"
    )
    for f in figures:
        e, a = f.enforce_ms, f.accepted_ms
        print(
            f"    {fmt_n(f.n):>9} {f.reconcile_s:11.2f} {ms(pct(a, 50))} {ms(pct(a, 99))} "
            f"{ratio(pct(a, 99), base_p99):>8} {ms(pct(e, 50))} {ms(pct(e, 99))} "
            f"{ms(max(e) if e else math.nan)} {f.lost:5d} {f.rss_mb:7.1f}"
        )
    print("\n  goals (issue 8)")
    for f in figures:
        goal = ENFORCE_GOAL_1M_MS if f.n >= 1_000_000 else ENFORCE_GOAL_MS
        p99 = pct(f.enforce_ms, 99)
        met = "met" if p99 < goal and f.lost == 0 else "MISSED"
        print(
            f"    N={fmt_n(f.n):>9}: time to enforce p99 {ms(p99).strip()} ms vs goal < {goal:g} "
            f"ms with 0 lost: {ratio(p99, goal)} of goal, {f.lost} lost: {met}"
        )
    for f in figures:
        if f.n == 0 or base is None:
            continue
        r = pct(f.accepted_ms, 99) / base_p99 if base_p99 else math.nan
        note = ""
        if f.n >= 100_000:
            met = "met" if r <= ACCEPT_P99_GOAL else "MISSED"
            note = f" (goal <= {ACCEPT_P99_GOAL:.2f}x at 100k: {met})"
        print(f"    N={fmt_n(f.n):>9}: 202 p99 vs at N=0: {r:.2f}x{note}")
    if base is None:
        print("    202 p99 vs at N=0: n/a (N=0 not in --sizes)")
    for f in figures:
        met = "met" if f.rss_mb < RSS_GOAL_MB else "MISSED"
        goal_note = f": {met}" if f.n >= 1_000_000 else " (goal applies at 1M)"
        print(
            f"    N={fmt_n(f.n):>9}: peak RSS {f.rss_mb:.0f} MB vs goal < {RSS_GOAL_MB:g} MB: "
            f"{f.rss_mb / RSS_GOAL_MB:.2f}x{goal_note}"
        )


# -- 2. single-verdict POSTs ----------------------------------------------------------------


def post_verdicts(count: int, seed: int) -> Iterator[bytes]:
    """Serialised single verdicts: unique ids, mostly unique subjects (10% from a pool of
    repeat accounts), a mix of legitimate and distiller-like scores."""
    rng = random.Random(seed)
    for i in itertools.count() if count < 0 else range(count):
        repeat = rng.random() < 0.10
        account = f"acct_r{rng.randrange(300)}" if repeat else f"acct_p{seed}_{i}"
        subject: dict[str, Any] = {"account_id": account, "ips": ingest._ips(rng)}
        if rng.random() < 0.9:
            key = f"key_{account}_{rng.randrange(3)}"
            subject["api_key_id"] = (
                hashlib.sha256(key.encode()).hexdigest() if rng.random() < 0.2 else key
            )
        if rng.random() < 0.7:
            subject["org_id"] = f"org_{rng.randrange(5000)}"
        distiller = rng.random() < 0.45
        score = rng.betavariate(5, 1.5) if distiller else rng.uniform(0.0, 0.7)
        labels = rng.sample(ingest.LABELS, rng.choice((0, 1, 1, 2))) if distiller else []
        detector = rng.choice(ingest.DETECTORS)
        verdict = {
            "id": f"p-{seed}-{i:08d}",
            "detector": {"name": detector[0], "version": detector[1]},
            "provider": rng.choice(("lab-a", "lab-a", "lab-b", "lab-c")),
            "observed_at": (ingest.BASE_TIME + timedelta(seconds=i / 100)).isoformat()[:19] + "Z",
            "subject": subject,
            "score": round(score, 3),
            "confidence": round(rng.uniform(0.4, 1.0), 3),
            "signals": {
                "requests_24h": float(int(rng.lognormvariate(9, 2))),
                "prompt_template_reuse": round(rng.random(), 3),
                "cot_request_ratio": round(rng.random() * (0.9 if distiller else 0.2), 3),
            },
            "labels": labels,
        }
        yield json.dumps(verdict, separators=(",", ":")).encode()


class Requests:
    """Pre-serialised POSTs, taken in order; made on the fly past the pool's end."""

    def __init__(self, pool: list[bytes], port: int, token: str | None) -> None:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self._head = (
            f"POST /v1/verdicts HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"
            "Content-Type: application/json\r\n"
        ).encode()
        self._pool = [self._request(body) for body in pool]
        self._more = post_verdicts(-1, seed=2)
        self._skip = len(pool)
        self._next = 0

    def _request(self, body: bytes) -> bytes:
        return self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    def take(self) -> bytes:
        i = self._next
        self._next += 1
        if i < len(self._pool):
            return self._pool[i]
        return self._request(next(self._more))

    @property
    def taken(self) -> int:
        return self._next


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the server keeps the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = -1
    chunked = False
    keep = True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            keep = False
    if chunked:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += await reader.readexactly(size + 2)
            if size == 0:
                break
        return status, body, keep
    if length < 0:
        return status, await reader.read(), False
    return status, await reader.readexactly(length), keep


@dataclass
class PostFigures:
    database: str
    connections: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    transport: Counter[str] = field(default_factory=Counter)
    sample: str = ""
    stored: int = -1
    server_cpu_s: float = 0.0
    """CPU time of the server process (all its threads) over warm-up and window."""
    client_cpu_s: float = 0.0
    wall_s: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get(202, 0)

    @property
    def errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s != 202) + sum(self.transport.values())

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


async def post_load(
    port: int, requests: Requests, connections: int, seconds: float, figures: PostFigures
) -> None:
    """C keep-alive connections, each sending one POST after the other: a warm-up, then
    `seconds` measured (requests started in the window; the window ends at the last
    answer)."""
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + WARMUP_S
    stop_at = measure_from + seconds
    last_end = measure_from

    async def connection() -> None:
        nonlocal last_end
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while loop.time() < stop_at:
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError as exc:
                    if loop.time() >= measure_from:
                        figures.transport[f"connect {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.05)
                    continue
            assert reader is not None
            request = requests.take()
            started = loop.time()
            measured = started >= measure_from
            try:
                writer.write(request)
                status, body, keep = await read_response(reader)
            except (
                OSError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                ValueError,
            ) as exc:
                if measured:
                    figures.transport[type(exc).__name__] += 1
                writer.close()
                writer = None
                continue
            ended = loop.time()
            if measured:
                figures.latencies_ms.append((ended - started) * 1000)
                figures.statuses[status] += 1
                last_end = max(last_end, ended)
                if status != 202 and not figures.sample:
                    figures.sample = f"HTTP {status}: {body[:300].decode(errors='replace')}"
            if not keep:
                writer.close()
                writer = None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    await asyncio.gather(*(connection() for _ in range(connections)))
    figures.seconds = max(1e-9, last_end - measure_from)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_verdicts(url: str) -> int:
    from sqlalchemy import create_engine, func, select

    from controlplane.store.db import sync_url
    from controlplane.store.models import VerdictRow

    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(VerdictRow)).scalar() or 0)
    finally:
        engine.dispose()


def posts_run(
    database: str, connections: int, pool: list[bytes], seconds: float, tmp: Path
) -> PostFigures:
    cleanup = ingest.Cleanup()
    run_dir = tmp / f"posts-{database}-c{connections}"
    run_dir.mkdir()
    try:
        if database == "sqlite":
            backend = ingest.sqlite_backend(run_dir)
        else:
            backend = ingest.postgresql_backend(run_dir, cleanup, False)
        token = ingest.prepare_database(backend)
        workers = max(1, min(os.cpu_count() or 1, 8))
        server = ingest.start_server(backend, workers, run_dir, cleanup)
        port = int(server.url.rsplit(":", 1)[1])
        log(f"posts {database} C={connections}: server pid {server.process.pid} ready")
        requests = Requests(pool, port, token)
        figures = PostFigures(database, connections, seconds)
        server_cpu = cpu_seconds(server.process.pid)
        client_cpu = time.process_time()
        wall = time.perf_counter()
        asyncio.run(post_load(port, requests, connections, seconds, figures))
        wall = time.perf_counter() - wall
        figures.server_cpu_s = cpu_seconds(server.process.pid) - server_cpu
        figures.client_cpu_s = time.process_time() - client_cpu
        figures.wall_s = wall
        if requests.taken > len(pool):
            log(
                f"posts {database} C={connections}: the pool ran out; "
                f"made {requests.taken - len(pool)} on the fly"
            )
        ingest.stop_server(server)
        figures.stored = count_verdicts(backend.database_url)
        problems = log_problems(server.log_path)
        if problems:
            log(
                f"posts {database} C={connections}: server log: "
                f"{len(problems)} warning/error lines:"
            )
            for line in problems[:5]:
                log(f"  {line}")
        log(
            f"posts {database} C={connections}: {figures.rate:,.0f} verdicts/s, "
            f"{figures.errors} errors"
        )
        return figures
    finally:
        cleanup.run()
        shutil.rmtree(run_dir, ignore_errors=True)


def report_posts(results: list[PostFigures], seconds: float) -> None:
    print(
        f"\n2. single-verdict POSTs, back to back on C keep-alive connections, {seconds:g} s "
        f"measured after {WARMUP_S:g} s of warm-up (client in its own process)"
    )
    print(
        f"    {'database':<11} {'C':>3} {'verdicts/s':>11} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'202s':>7} {'errors':>7} {'stored':>7}"
    )
    for f in results:
        lat = f.latencies_ms
        print(
            f"    {f.database:<11} {f.connections:>3} {f.rate:11,.0f} {ms(pct(lat, 50))} "
            f"{ms(pct(lat, 99))} {ms(max(lat) if lat else math.nan)} {f.ok:7d} {f.errors:7d} "
            f"{f.stored:7d}"
        )
        sent = f.ok + f.errors
        if sent and f.wall_s:
            print(
                f"      server CPU {f.server_cpu_s / f.wall_s:.0%} of a core, "
                f"{f.server_cpu_s * 1000 / max(1, f.stored):.1f} ms per stored verdict; "
                f"client CPU {f.client_cpu_s / f.wall_s:.0%} of a core"
            )
        if f.errors:
            detail = {**{f"HTTP {s}": n for s, n in f.statuses.items() if s != 202}, **f.transport}
            print(f"      errors: {detail}")
            if f.sample:
                print(f"      first non-202: {f.sample}")
    print(
        f"\n  goal: >= {POSTS_GOAL:,.0f} verdicts/s with 0 errors "
        f"at {POSTS_GOAL_CONNECTIONS} connections"
    )
    goal_runs = [f for f in results if f.connections == POSTS_GOAL_CONNECTIONS]
    for f in goal_runs:
        met = "met" if f.rate >= POSTS_GOAL and f.errors == 0 else "MISSED"
        print(
            f"    {f.database:<11} C={f.connections}: {f.rate:,.0f}/s = {f.rate / POSTS_GOAL:.2f}x "
            f"of goal, {f.errors} errors: {met}"
        )
    if not goal_runs:
        print(f"    n/a: C={POSTS_GOAL_CONNECTIONS} not in --connections")


# -- main -----------------------------------------------------------------------------------


def _terminate(sig: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {sig}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--only", default="enforce,posts", help="enforce,posts")
    parser.add_argument(
        "--sizes", default="0,10000,100000", help="N active actions, e.g. 0,1000000"
    )
    parser.add_argument("--verdicts", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="verdicts/s, open loop")
    parser.add_argument("--connections", default="1,4,16")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    args.phases = {p.strip() for p in args.only.split(",") if p.strip()}
    if not args.phases or args.phases - {"enforce", "posts"}:
        parser.error("--only takes enforce and/or posts")
    try:
        args.size_list = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
        args.connection_list = [int(c) for c in args.connections.split(",") if c.strip()]
    except ValueError:
        parser.error("--sizes and --connections are comma-separated integers")
    if any(n < 0 for n in args.size_list) or any(c < 1 for c in args.connection_list):
        parser.error("--sizes must be >= 0 and --connections >= 1")
    args.database_list = [d.strip() for d in args.databases.split(",") if d.strip()]
    if set(args.database_list) - {"sqlite", "postgresql"}:
        parser.error("--databases takes sqlite and/or postgresql")
    if args.verdicts < 1 or args.verdicts > 16384 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--verdicts must be 1..16384, --rate and --seconds positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (1 min) "
        "before the run"
    )
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-bench-scale-"))
    tmp.chmod(0o755)  # pgserver, run as root, hands its data dir to another user
    outer = ingest.Cleanup()
    outer.push("remove temp dir", lambda: shutil.rmtree(tmp, ignore_errors=True))
    try:
        if "enforce" in args.phases:
            binary = ensure_haproxy(log)
            version = subprocess.run(
                [binary, "-v"], capture_output=True, text=True, check=False
            ).stdout.split("\n")[0]
            print(f"HAProxy: {version}")
            stub = subprocess.Popen(
                [sys.executable, "-c", STUB],
                cwd=REPO,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )

            def stop_stub() -> None:
                stub.terminate()
                try:
                    stub.wait(10)
                except subprocess.TimeoutExpired:
                    stub.kill()
                    stub.wait(5)

            outer.push("stop model stub", stop_stub)
            assert stub.stdout is not None
            backend = stub.stdout.readline().strip()
            if not backend:
                raise RuntimeError("the model stub did not start")
            figures = []
            for n in args.size_list:
                started = time.perf_counter()
                figures.append(enforce_at(n, binary, backend, tmp, args.verdicts, args.rate))
                log(f"N={fmt_n(n)}: phase done in {time.perf_counter() - started:.1f} s")
            report_enforce(figures, args.verdicts, args.rate)
            sys.stdout.flush()
        if "posts" in args.phases:
            started = time.perf_counter()
            size = int((args.seconds + WARMUP_S) * 2500)
            pool = list(post_verdicts(size, seed=1))
            log(
                f"posts: {size} single verdicts serialised in {time.perf_counter() - started:.1f} s"
            )
            results = []
            for database in args.database_list:
                for c in args.connection_list:
                    started = time.perf_counter()
                    results.append(posts_run(database, c, pool, args.seconds, tmp))
                    log(f"posts {database} C={c}: done in {time.perf_counter() - started:.1f} s")
            report_posts(results, args.seconds)
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        outer.run()
        return 130
    except Exception:
        traceback.print_exc()
        log("the run failed: cleaning up")
        outer.run()
        return 1
    outer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
