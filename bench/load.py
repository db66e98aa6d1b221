"""Load: replicas on one PostgreSQL holding a rate of verdicts, sent as detectors send them.

    .venv/bin/python bench/load.py [--replicas 2] [--rate 1000] [--seconds 600]
        [--max-batch 50] [--in-flight 64] [--pgserver]

Starts `--replicas` real servers (uvicorn, each in a subprocess) on one fresh PostgreSQL
database (127.0.0.1:5432, or a throwaway pgserver), then sends verdicts open loop at
`--rate` verdicts/s for `--seconds`: requests of 1 to `--max-batch` verdicts (uniform),
each at its scheduled time whatever the earlier ones are doing, round-robin over the
replicas, at most `--in-flight` at once (a request that finds no free slot is sent
late, and counted). Offering stops at `--seconds` even when the servers are behind (the
verdicts left are reported as not offered); then the requests in flight are awaited.
Verdicts are the mixed traffic of bench/ingest.py.

Printed: verdicts/s accepted against the rate, request latency p50/p99/max, errors
(non-202 answers and transport errors: goal none), requests sent late, and per
replica its CPU seconds and peak RSS (VmHWM). Goal (issue 15): 2 replicas hold 1,000
verdicts/s for 10 minutes with no errors. Figures go to stdout, progress to stderr;
exit 0 whether or not the goal is met, 130 on Ctrl-C, 1 when the run itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import ingest  # noqa: E402  (bench/ingest.py: verdicts, PostgreSQL, servers, cleanup)

GOAL_RATE = 1000.0


@dataclass
class Sent:
    latencies_ms: list[float] = field(default_factory=list)
    accepted: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    late: int = 0
    unsent: int = 0
    """Verdicts still unsent when `--seconds` ran out (the servers fell behind the rate)."""


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bodies(verdicts: list[dict[str, object]], most: int, seed: int) -> list[tuple[bytes, int]]:
    """The verdicts cut into requests of 1..`most` (each with its count), serialised
    before the clock starts."""
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(verdicts):
        part = verdicts[i : i + rng.randint(1, most)]
        out.append((json.dumps({"verdicts": part}, separators=(",", ":")).encode(), len(part)))
        i += len(part)
    return out


async def send_all(
    servers: Sequence[ingest.Server],
    requests: list[tuple[bytes, int]],
    rate: float,
    in_flight: int,
    seconds: float,
) -> tuple[Sent, float]:
    """Offer `requests` at `rate` for `seconds` at most, then wait for those in flight."""
    sent = Sent()
    slots = asyncio.Semaphore(in_flight)
    headers = {"content-type": "application/json", "authorization": f"Bearer {servers[0].token}"}
    clients = [
        httpx.AsyncClient(base_url=s.url, headers=headers, timeout=60, limits=httpx.Limits())
        for s in servers
    ]
    tasks: list[asyncio.Task[None]] = []

    async def one(client: httpx.AsyncClient, body: bytes, count: int) -> None:
        try:
            t0 = time.perf_counter()
            try:
                response = await client.post("/v1/verdicts", content=body)
            except httpx.TransportError as exc:
                sent.errors[type(exc).__name__] += 1
                return
            sent.latencies_ms.append((time.perf_counter() - t0) * 1000)
            if response.status_code == 202:
                sent.accepted += count
            else:
                sent.errors[str(response.status_code)] += 1
        finally:
            slots.release()

    started = time.perf_counter()
    due = 0.0
    last_report = started
    try:
        for i, (body, count) in enumerate(requests):
            if time.perf_counter() - started >= seconds:
                # Out of time: what is left was never offered (the servers were behind).
                sent.unsent = sum(c for _, c in requests[i:])
                break
            wait = started + due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            if slots.locked():
                sent.late += 1
            await slots.acquire()
            client = clients[i % len(clients)]
            tasks.append(asyncio.create_task(one(client, body, count)))
            due += count / rate
            now = time.perf_counter()
            if now - last_report >= 10:
                last_report = now
                ingest.log(
                    f"[load] {now - started:5.0f} s: {sent.accepted / (now - started):,.0f} "
                    f"verdicts/s accepted, {sum(sent.errors.values())} errors, {sent.late} late"
                )
        await asyncio.gather(*tasks)
    finally:
        for client in clients:
            await client.aclose()
    return sent, time.perf_counter() - started


def run(args: argparse.Namespace) -> int:
    total = int(args.rate * args.seconds)
    verdicts = ingest.generate_verdicts(total, args.seed)
    requests = bodies(verdicts, args.max_batch, args.seed)
    ingest.log(f"[load] {total} verdicts in {len(requests)} requests, serialised")
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-load-"))
    tmp.chmod(0o755)
    cleanup = ingest.Cleanup()
    try:
        backend = ingest.postgresql_backend(tmp, cleanup, args.pgserver)
        token = ingest.prepare_database(backend)
        servers = []
        for n in range(args.replicas):
            server = ingest.start_server(backend, args.workers, tmp, cleanup, label=f"-{n}")
            server.token = token
            servers.append(server)
        pids = [s.process.pid for s in servers]
        ingest.log(f"[load] {args.replicas} replicas ready: pids {pids}")
        cpu0 = [ingest.cpu_seconds(pid) for pid in pids]
        sent, seconds = asyncio.run(
            send_all(servers, requests, args.rate, args.in_flight, args.seconds)
        )
        cpu = [ingest.cpu_seconds(pid) - c for pid, c in zip(pids, cpu0, strict=True)]
        rss = [peak_rss_mb(pid) for pid in pids]
    finally:
        cleanup.run()
    lat = sent.latencies_ms
    rate = sent.accepted / seconds
    errors = sum(sent.errors.values())
    print(
        f"\n== load: {args.replicas} replicas on one PostgreSQL, {args.rate:,.0f} verdicts/s "
        f"offered for {args.seconds:.0f} s in requests of 1..{args.max_batch}"
    )
    print(f"  accepted     {rate:10,.0f} verdicts/s ({sent.accepted} in {seconds:.1f} s)")
    print(
        f"  latency      p50 {ingest.percentile(lat, 50):8.1f} ms   "
        f"p99 {ingest.percentile(lat, 99):8.1f} ms   max {max(lat, default=0):8.1f} ms"
    )
    print(f"  errors       {errors} {dict(sent.errors) or ''}")
    print(f"  sent late    {sent.late} of {len(requests)} requests (no free slot)")
    print(f"  not offered  {sent.unsent} verdicts (still unsent when --seconds ran out)")
    for n, (c, r) in enumerate(zip(cpu, rss, strict=True)):
        print(
            f"  replica {n}    CPU {c:7.1f} s ({c / seconds:.0%} of a core)   peak RSS {r:6.1f} MB"
        )
    met = rate >= 0.99 * GOAL_RATE and errors == 0 and not sent.unsent and seconds >= 600
    print(
        f"  goal: {GOAL_RATE:,.0f} verdicts/s held for 10 minutes with no errors: "
        f"{rate / GOAL_RATE:.2f}x of it for {seconds / 60:.1f} min, {errors} errors: "
        f"{'MET' if met else 'MISSED'}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--rate", type=float, default=GOAL_RATE, help="verdicts/s offered")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--max-batch", type=int, default=50)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="engine workers per replica")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pgserver", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.max_batch <= 1000 or args.replicas < 1 or args.rate <= 0:
        parser.error("--max-batch 1..1000, --replicas >= 1, --rate > 0")
    signal.signal(signal.SIGTERM, ingest._terminate)
    try:
        return run(args)
    except KeyboardInterrupt:
        ingest.log("interrupted: cleaned up")
        return 130
    except RuntimeError as exc:
        ingest.log(f"load: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
