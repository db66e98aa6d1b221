"""The CrowdSec decision stream with Debian's real crowdsec-custom-bouncer: how fast a
block reaches a bouncer, how fast a bouncer starting syncs 10,000 blocks, and, as the
reference, CrowdSec's own LAPI driving the same bouncer.

    .venv/bin/python bench/crowdsec.py [--verdicts 40] [--poll 1s]
        [--entries 10000] [--no-lapi]

1. latency: a real Tollgate server (uvicorn, its own process, SQLite) and the custom
   bouncer polling it every `--poll`, running a script per decision. Verdicts about
   addresses in shared-intel ranges (the bundled policies block each /24) are sent one
   at a time, each after a random part of the poll (so at every phase of the bouncer's
   polling); time to enforce = from sending the verdict (and from its 202) to the
   bouncer's script being run with the range. The poll bounds it: p50 is about half.
2. startup sync: `--entries` active blocks; a new bouncer (fed through stdin: one
   long-lived reader) starts, and the time until its reader has all of them is timed,
   with the raw startup answer (bytes, time) and the server's peak RSS.
3. reference: `crowdsec -no-cs -no-capi` (the LAPI alone, offline, a config and
   database of its own under a temporary directory) with the same bouncer and poll;
   decisions added with `cscli decisions add`; time from cscli's return (the decision
   stored) to the script, beside Tollgate's time from the 202 (the block stored). When
   the LAPI cannot run here, the output says why.

Figures go to stdout, progress to stderr. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controlplane.auth.jobs import Tokens  # noqa: E402
from controlplane.auth.roles import Role  # noqa: E402
from controlplane.store.db import Database, upgrade  # noqa: E402
from tests.integration.bouncers.crowdsec_fixtures import (  # noqa: E402
    CustomBouncer,
    ensure_custom_bouncer,
)
from tests.support.actions import Planned, plan  # noqa: E402
from tests.support.server import SERVER, free_port  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def row(name: str, values: list[float]) -> str:
    return (
        f"  {name:<34} p50 {percentile(values, 0.5):7.0f} ms  p99 {percentile(values, 0.99):7.0f}"
        f" ms  max {max(values):7.0f} ms  (n={len(values)})"
    )


class Server:
    """Tollgate in a process of its own, on SQLite under `directory`."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True)
        self.url = f"sqlite+aiosqlite:///{directory / 'tollgate.db'}"
        config = directory / "tollgate.yaml"
        config.write_text(yaml.safe_dump({"crowdsec": {"providers": ["*"]}}))
        upgrade(self.url)
        self.db = Database(self.url)
        self.port = free_port()
        spec = {
            "data_dir": str(directory),
            "url": self.url,
            "policies": str(REPO / "policies"),
            "config": str(config),
            "port": self.port,
        }
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = (directory / "server.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, json.dumps(spec)],
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit("the Tollgate server did not start")
            time.sleep(0.1)

    def token(self, role: Role, name: str) -> str:
        async def create() -> str:
            return (await Tokens(self.db).create(name, role, "bench"))[0]

        return asyncio.run(create())

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        peak = next(line for line in status.splitlines() if line.startswith("VmHWM"))
        return int(peak.split()[1]) / 1024

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()
        asyncio.run(self.db.dispose())


def seconds(go: str) -> float:
    """`1s`, `500ms`: the poll interval in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)", go)
    if not match:
        raise SystemExit(f"--poll {go!r}: give seconds or milliseconds, e.g. 1s or 500ms")
    return float(match[1]) / (1000 if match[2] == "ms" else 1)


def desynchronise(poll: str) -> None:
    """A pause of a random part of the poll before each block, so blocks land at every
    phase of the bouncer's polling rather than just after a pull."""
    time.sleep(random.uniform(0, seconds(poll)))


def wait_seen(bouncer: CustomBouncer, value: str, until: float) -> float:
    while time.monotonic() < until:
        if bouncer.seen.exists() and f"add {value} " in bouncer.seen.read_text():
            return time.perf_counter()
        time.sleep(0.002)
    raise SystemExit(f"{value} did not reach the bouncer: {bouncer.log()}")


def bench_latency(server: Server, tmp: Path, count: int, poll: str) -> list[float]:
    admin = {"Authorization": f"Bearer {server.token(Role.ADMIN, 'bench-admin')}"}
    bouncer = CustomBouncer(tmp / "latency", server.base, server.token(Role.BOUNCER, "b1"), poll)
    ranges = [f"100.{70 + i // 256}.{i % 256}.0/24" for i in range(count)]
    with httpx.Client(base_url=server.base, headers=admin, timeout=30) as api:
        indicators = [
            {"kind": "cidr", "value": c, "source": "lab-b", "confidence": 0.9} for c in ranges
        ]
        api.post("/v1/intel/indicators", json={"indicators": indicators}).raise_for_status()
        bouncer.start()
        time.sleep(2)  # its startup pull is done
        from_send: list[float] = []
        from_202: list[float] = []
        for i, cidr in enumerate(ranges):
            address = cidr.replace(".0/24", ".7")
            verdict = {
                "id": f"bench-cs-{i}-{os.getpid()}",
                "provider": "lab-a",
                "detector": {"name": "bench", "version": "1"},
                "observed_at": "2026-11-26T12:00:00Z",
                "subject": {"account_id": f"acct_cs_{i}", "ips": [address]},
                "score": 0.6,  # local evidence: one lab's range may then drive a block
                "confidence": 0.8,
            }
            desynchronise(poll)
            sent = time.perf_counter()
            answer = api.post("/v1/verdicts", json=verdict)
            accepted = time.perf_counter()
            if answer.status_code != 202:
                raise SystemExit(f"verdict {i}: {answer.status_code} {answer.text}")
            seen = wait_seen(bouncer, cidr, time.monotonic() + 30)
            from_send.append((seen - sent) * 1000)
            from_202.append((seen - accepted) * 1000)
    bouncer.stop()
    print(f"\n1. time to enforce at a CrowdSec bouncer: {count} verdicts, bouncer poll {poll}")
    print(row("verdict sent -> bouncer script", from_send))
    print(row("202 (block stored) -> script", from_202))
    return from_202


def reader_bouncer(directory: Path, url: str, key: str, poll: str) -> CustomBouncer:
    """A bouncer fed through stdin: one long-lived reader appending each decision (a JSON
    line) to `bouncer.seen`, instead of a script run per decision."""
    bouncer = CustomBouncer(directory, url, key, poll)
    reader = directory / "reader.sh"
    reader.write_text(f"#!/bin/sh\nexec cat >> {bouncer.seen}\n")
    reader.chmod(0o755)
    config_path = directory / "bouncer.yaml"
    config = yaml.safe_load(config_path.read_text())
    config.update({"bin_path": str(reader), "feed_via_stdin": True})
    config_path.write_text(yaml.safe_dump(config))
    return bouncer


def startup_sync(bouncer: CustomBouncer, entries: int) -> float:
    """Seconds from starting `bouncer` to its reader holding `entries` decisions; the
    bouncer is stopped after."""
    started = time.perf_counter()
    bouncer.start()
    try:
        deadline = time.monotonic() + 300
        while True:
            lines = bouncer.seen.read_text().count("\n") if bouncer.seen.exists() else 0
            if lines >= entries:
                return time.perf_counter() - started
            if time.monotonic() > deadline:
                raise SystemExit(f"the bouncer got {lines} of {entries}: {bouncer.log()}")
            time.sleep(0.01)
    finally:
        bouncer.stop()


def bench_sync(server: Server, tmp: Path, entries: int, poll: str) -> None:
    planned = [
        Planned("block", "ip", f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}")
        for i in range(entries)
    ]
    asyncio.run(plan(server.db, *planned))
    key = server.token(Role.BOUNCER, "b-sync")
    started = time.perf_counter()
    with httpx.stream(
        "GET",
        f"{server.base}/v1/decisions/stream",
        params={"startup": "true"},
        headers={"X-Api-Key": key},
        timeout=120,
    ) as response:
        size, first_byte = 0, 0.0
        for chunk in response.iter_bytes():
            if b'"value"' in chunk and not first_byte:
                first_byte = time.perf_counter() - started
            size += len(chunk)
    raw = time.perf_counter() - started
    bouncer = reader_bouncer(tmp / "sync", server.base, server.token(Role.BOUNCER, "b2"), poll)
    synced = startup_sync(bouncer, entries)
    print(f"\n2. startup sync: {entries} active blocks")
    print(
        f"  startup answer (streamed)          {raw * 1000:7.0f} ms  {size / 1e6:.1f} MB, "
        f"first decision after {first_byte * 1000:.0f} ms"
    )
    print(f"  bouncer start -> all in its reader {synced * 1000:7.0f} ms  (feed_via_stdin)")
    print(f"  server peak RSS                    {server.rss_mb():7.0f} MB")


@dataclass
class Lapi:
    """A running CrowdSec LAPI (`crowdsec -no-cs -no-capi`) of its own, and a bouncer key."""

    url: str
    key: str
    cscli: list[str]


@contextlib.contextmanager
def running_lapi(directory: Path) -> Iterator[Lapi | str]:
    """CrowdSec's LAPI alone, offline, with a config and database of its own under
    `directory`, stopped at the end; or, when it cannot run here, why (a string)."""
    why = lapi_missing()
    if why:
        yield why
        return
    directory.mkdir()
    port = free_port()
    config = yaml.safe_load(Path("/etc/crowdsec/config.yaml").read_text())
    config["common"].update({"daemonize": False, "log_media": "file", "log_dir": str(directory)})
    config["db_config"]["db_path"] = str(directory / "crowdsec.db")
    config["prometheus"]["enabled"] = False
    credentials = directory / "local_api_credentials.yaml"
    config["api"]["client"]["credentials_path"] = str(credentials)
    config["api"]["server"]["listen_uri"] = f"127.0.0.1:{port}"
    config["api"]["server"].pop("online_client", None)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cscli = ["cscli", "-c", str(path)]
    subprocess.run(
        [*cscli, "machines", "add", "bench", "--auto", "--force", "-f", str(credentials)],
        check=True,
        capture_output=True,
    )
    key = subprocess.run(
        [*cscli, "bouncers", "add", "bench-bouncer", "-o", "raw"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    lapi = subprocess.Popen(
        ["crowdsec", "-c", str(path), "-no-cs", "-no-capi"],
        stdout=(directory / "lapi.out").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/decisions", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or lapi.poll() is not None:
                    yield f"the LAPI did not start (see {directory / 'lapi.out'})"
                    return
                time.sleep(0.1)
        yield Lapi(f"http://127.0.0.1:{port}", key, cscli)
    finally:
        lapi.terminate()
        lapi.wait(10)


def bench_lapi(tmp: Path, count: int, poll: str, tollgate: list[float]) -> None:
    print(f"\n3. reference: CrowdSec's LAPI -> the same bouncer, poll {poll}")
    with running_lapi(tmp / "lapi") as lapi:
        if isinstance(lapi, str):
            print(f"  not measured: {lapi}")
            return
        stored = lapi_latencies(lapi, tmp / "lapi" / "bouncer", count, poll)
        print(row("cscli decisions add -> script", stored))
        print(row("Tollgate 202 -> script (from 1.)", tollgate))
        print(
            f"  ratio Tollgate / LAPI at p50: "
            f"{percentile(tollgate, 0.5) / percentile(stored, 0.5):.2f}"
        )


def lapi_latencies(lapi: Lapi, directory: Path, count: int, poll: str) -> list[float]:
    """Milliseconds from `cscli decisions add` returning (the decision stored) to the
    bouncer's script running with it, `count` times, each after a random part of the poll."""
    bouncer = CustomBouncer(directory, lapi.url, lapi.key, poll)
    try:
        bouncer.start()
        time.sleep(2)
        stored: list[float] = []
        for i in range(count):
            value = f"100.90.{i // 256}.{i % 256}"
            desynchronise(poll)
            add = ["decisions", "add", "--ip", value, "--duration", "1h", "--reason", "b"]
            subprocess.run(
                [*lapi.cscli, *add],
                check=True,
                capture_output=True,
            )
            added = time.perf_counter()
            stored.append((wait_seen(bouncer, value, time.monotonic() + 30) - added) * 1000)
        return stored
    finally:
        bouncer.stop()


def lapi_missing() -> str:
    if not shutil.which("crowdsec") or not shutil.which("cscli"):
        return (
            "crowdsec is not installed (offline: create /etc/crowdsec/online_api_credentials.yaml "
            "with any content first, then `apt-get install crowdsec`)"
        )
    if not Path("/etc/crowdsec/config.yaml").exists():
        return "/etc/crowdsec/config.yaml is missing: the package is not configured"
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verdicts", type=int, default=40)
    parser.add_argument("--poll", default="1s", help="the bouncers' update_frequency")
    parser.add_argument("--entries", type=int, default=10000)
    parser.add_argument("--no-lapi", action="store_true")
    args = parser.parse_args()
    ensure_custom_bouncer()
    with tempfile.TemporaryDirectory(prefix="tollgate-crowdsec-") as name:
        tmp = Path(name)
        log("starting Tollgate")
        server = Server(tmp / "tollgate")
        try:
            log("1. latency")
            tollgate = bench_latency(server, tmp, args.verdicts, args.poll)
            log("2. startup sync")
            bench_sync(server, tmp, args.entries, args.poll)
        finally:
            server.stop()
        if args.no_lapi:
            print("\n3. reference: skipped (--no-lapi)")
        else:
            log("3. CrowdSec LAPI")
            bench_lapi(tmp, args.verdicts, args.poll, tollgate)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
