"""Intel at scale: matching against millions of indicators, and pulling a large feed.

    .venv/bin/python bench/intel.py [--cidrs 1000000] [--hashes 1000000]
        [--lookups 50000] [--decisions 2000] [--feed 100000] [--only index,decisions,pull]

1. index: an `IntelIndex` (controlplane/evaluate/intel.py) holding `--cidrs` CIDR
   indicators (IPv4, a mix of /16, /20, /24, /28 and /32) and `--hashes` keyed-hash
   identifier indicators (accounts, API keys, orgs under one consortium key). Printed:
   build time, the process's resident memory before and after (and per indicator; the
   indicators are made one at a time, so this is the index's own memory), and
   lookups/s of `match_verdict` for verdicts with two IPs and an account, key and org
   id (every lookup hashes each id under the keys in force), for verdicts that match
   nothing and for verdicts that match, each against the full index and against one
   of 20,000 indicators in the same run (the ratio shows cost independent of size).
2. decisions: the bundled policies in the embedded OPA engine; `--decisions` verdicts,
   each built into an input and evaluated twice in the same run, interleaved: once with
   the full index, once with an empty one. Printed: p50/p99 of build + evaluate, both
   ways, and their ratio.
3. pull: a Tollgate server (uvicorn, in this process, on 127.0.0.1) whose TAXII
   collection holds `--feed` signed indicator objects, and a second database pulling it
   with `Puller` (pages of 5,000, every signature verified, rows stored on SQLite).
   Printed: objects/s and the time of the whole pull.

Figures go to stdout, progress to stderr. Exit 0 whatever the figures, 1 when the run
itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import itertools
import random
import secrets
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from controlplane.audit.keys import generate, load_signer  # noqa: E402
from controlplane.domain.verdict import Verdict  # noqa: E402
from controlplane.evaluate.context import Lookups, build_input  # noqa: E402
from controlplane.evaluate.intel import IntelIndex  # noqa: E402
from controlplane.intel.hashing import ConsortiumKey, Keyring  # noqa: E402

NOW = datetime.now(UTC)
KEY = ConsortiumKey("k1", secrets.token_bytes(32))
KEYRING = Keyring([KEY])
PREFIXES = (16, 20, 24, 24, 24, 28, 32, 32)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


MISS = ipaddress.ip_network("198.18.0.0/15")
"""No indicator covers it: lookups there measure the index, not the matches."""


def cidr_indicators(n: int) -> Iterator[dict[str, Any]]:
    """Made one at a time (the same ones on every call), so the memory measured is the
    index's, not a list of inputs'."""
    rng = random.Random(7)
    for i in range(n):
        prefix = PREFIXES[i % len(PREFIXES)]
        address = rng.getrandbits(32) & ~((1 << (32 - prefix)) - 1)
        while (address >> 17) == (int(MISS.network_address) >> 17):
            address = rng.getrandbits(32) & ~((1 << (32 - prefix)) - 1)
        yield {
            "id": indicator_id("c", i),
            "kind": "cidr",
            "value": f"{ipaddress.IPv4Address(address)}/{prefix}",
            "source": f"lab-{'bcd'[i % 3]}",
            "confidence": 0.9,
            "tlp": "green",
            "pap": "green",
        }


def hashed_indicators(n: int) -> Iterator[dict[str, Any]]:
    kinds = ("account", "api_key", "org")
    for i in range(n):
        yield {
            "id": indicator_id("h", i),
            "kind": kinds[i % 3],
            "value": KEY.digest(kinds[i % 3], f"{kinds[i % 3]}-{i}"),
            "source": f"lab-{'bcd'[i % 3]}",
            "confidence": 0.9,
            "tlp": "green",
            "pap": "green",
        }


def indicator_id(prefix: str, i: int) -> str:
    """Shaped like the ids Tollgate gives (`ind_` + 24 hex), so their memory is real."""
    return f"ind_{prefix}{i:023x}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def probes(n: int, cidrs: list[str], hashes: int, rng: random.Random) -> list[Any]:
    """Half misses (IPs in MISS, unknown ids), half hits (an IP in a known range, a
    known id)."""
    made = []
    for i in range(n):
        ids = {k: f"{k}-x{i}" for k in ("account", "api_key", "org")}
        miss = int(MISS.network_address) + rng.randrange(MISS.num_addresses)
        ips = [str(ipaddress.IPv4Address(miss)), str(ipaddress.IPv4Address(miss ^ 1))]
        if i % 2:
            network = ipaddress.ip_network(cidrs[rng.randrange(len(cidrs))])
            ips[0] = str(network.network_address)
            k = rng.randrange(max(hashes, 1))
            kind = ("account", "api_key", "org")[k % 3]
            ids[kind] = f"{kind}-{k}"
        made.append((ips, list(ids.items()), i % 2 == 1))
    return made


def lookups_per_second(index: IntelIndex, made: list[Any], hits: bool) -> float:
    chosen = [(ips, ids) for ips, ids, hit in made if hit == hits]
    started = time.perf_counter()
    found = sum(bool(index.match_verdict(ips, ids, {}, NOW)) for ips, ids in chosen)
    elapsed = time.perf_counter() - started
    assert found == (len(chosen) if hits else 0), (found, len(chosen), hits)
    return len(chosen) / elapsed


def bench_index(args: argparse.Namespace) -> IntelIndex:
    rng = random.Random(8)
    before = rss_mb()
    started = time.perf_counter()
    index = IntelIndex([], KEYRING)
    index.extend(cidr_indicators(args.cidrs))
    index.extend(hashed_indicators(args.hashes))
    built = time.perf_counter() - started
    after = rss_mb()
    small = IntelIndex(itertools.chain(cidr_indicators(10_000), hashed_indicators(10_000)), KEYRING)
    cidrs = [i["value"] for i in cidr_indicators(args.cidrs)]
    total = args.cidrs + args.hashes
    print(f"index: {args.cidrs:,} CIDR + {args.hashes:,} hashed-identifier indicators")
    print(
        f"  build {built:.1f} s; RSS {before:.0f} -> {after:.0f} MB "
        f"({(after - before) * 2**20 / max(total, 1):.0f} bytes per indicator)"
    )
    made = probes(args.lookups, cidrs, args.hashes, rng)
    small_made = probes(args.lookups, cidrs[:10_000], 10_000, rng)
    for label, hits in (("no match", False), ("matching", True)):
        big_rate = lookups_per_second(index, made, hits)
        small_rate = lookups_per_second(small, small_made, hits)
        print(
            f"  lookups, {label}: {big_rate:,.0f} verdicts/s at {index.size:,} indicators, "
            f"{small_rate:,.0f}/s at {small.size:,} (ratio {big_rate / small_rate:.2f}); "
            "each verdict: 2 IPs, 3 ids hashed and probed"
        )
    del cidrs
    return index


def bench_decisions(args: argparse.Namespace, index: IntelIndex) -> None:
    from controlplane.engine.runtime import load_embedded

    engine = load_embedded(REPO / "policies", "tollgate.decision", 1)
    empty, full = Lookups(), Lookups()
    full.intel = index
    rng = random.Random(11)
    verdicts = [
        Verdict.model_validate(
            {
                "id": f"v{i}",
                "provider": "lab-a",
                "detector": {"name": "sweep", "version": "1"},
                "observed_at": NOW.isoformat(),
                "subject": {
                    "account_id": f"account-{i * 3}",
                    "api_key_id": f"api_key-x{i}",
                    "org_id": f"org-x{i}",
                    "ips": [str(ipaddress.IPv4Address(rng.getrandbits(32)))],
                },
                "score": 0.6,
                "confidence": 0.8,
                "signals": {"requests_24h": 400000},
            }
        )
        for i in range(args.decisions)
    ]
    with_intel, without = [], []
    for v in verdicts:
        for lookups, out in ((full, with_intel), (empty, without)):
            started = time.perf_counter()
            given = build_input(v, NOW, lookups, NOW)
            evaluation = engine.evaluate_sync(given)
            out.append((time.perf_counter() - started) * 1000)
            assert evaluation.ok, evaluation.error
    engine.close()
    p50w, p99w = percentile(with_intel, 0.5), percentile(with_intel, 0.99)
    p50o, p99o = percentile(without, 0.5), percentile(without, 0.99)
    print(f"decisions ({args.decisions:,}, input + evaluation, same run, interleaved):")
    print(f"  without intel: p50 {p50o:.3f} ms, p99 {p99o:.3f} ms")
    print(
        f"  with {index.size:,} indicators: p50 {p50w:.3f} ms, p99 {p99w:.3f} ms "
        f"(ratio p50 {p50w / p50o:.2f}, p99 {p99w / p99o:.2f})"
    )
    print(f"  mean {statistics.fmean(with_intel):.3f} vs {statistics.fmean(without):.3f} ms")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def bench_pull(args: argparse.Namespace) -> None:
    import uvicorn
    import yaml

    from controlplane.api.app import create_app
    from controlplane.auth.roles import Role
    from controlplane.intel import repository
    from controlplane.intel.config import DEFAULT_COLLECTION, load_intel
    from controlplane.intel.jobs import Puller
    from controlplane.intel.pull import Intake
    from controlplane.intel.service import IntelService
    from controlplane.intel.signing import sign
    from controlplane.intel.stix.objects import indicator_object
    from controlplane.runtime import Runtime
    from controlplane.settings import Settings
    from controlplane.store.db import Database, upgrade

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "a").mkdir()
        (root / "b").mkdir()
        generate(root / "a" / "intel.key", root / "a" / "intel.pub.pem")
        (root / "secret").write_text(secrets.token_hex(32))
        port = _free_port()
        keys = [{"id": "k1", "secret": {"file": str(root / "secret")}}]
        config_a = {
            "intel": {
                "lab": "lab-a",
                "signing_key_file": str(root / "a" / "intel.key"),
                "consortium_keys": keys,
                "collections": [
                    {"id": DEFAULT_COLLECTION, "title": "shared", "readers": ["lab-b"]}
                ],
            }
        }
        (root / "a" / "tollgate.yaml").write_text(yaml.safe_dump(config_a))
        settings = Settings(
            data_dir=root / "a",
            database_url="",
            policy_dir=REPO / "policies",
            config=root / "a" / "tollgate.yaml",
            engine_workers=1,
            span_retention_hours=0,
            policy_allow_uncommitted=False,
        )
        runtime = Runtime.create(settings)
        await asyncio.to_thread(upgrade, runtime.db.url)
        token, _ = await runtime.tokens.create("lab-b", Role.PEER, actor="bench")
        log(f"pull: signing {args.feed:,} indicator objects")
        signer = load_signer(root / "a" / "intel.key")
        template = indicator_object(
            {
                "kind": "cidr",
                "value": "10.0.0.0/24",
                "source": "lab-a",
                "confidence": 0.9,
                "tlp": "green",
                "pap": "green",
                "created_at": NOW,
                "stix_id": f"indicator--{uuid.uuid4()}",
            },
            "lab-a",
        )
        objects = []
        for i in range(args.feed):
            value = f"{ipaddress.IPv4Address(0x0B000000 + i * 256)}/24"
            obj = {**template, "id": f"indicator--{uuid.uuid4()}"}
            obj["pattern"] = f"[ipv4-addr:value ISSUBSET '{value}']"
            ext = dict(next(iter(obj["extensions"].values())))
            ext["value"] = value
            obj["extensions"] = {next(iter(obj["extensions"])): ext}
            objects.append(sign(obj, signer))
        for i in range(0, len(objects), 5000):
            async with runtime.db.write() as session, session.begin():
                await repository.append_objects(
                    session, DEFAULT_COLLECTION, objects[i : i + 5000], datetime.now(UTC)
                )
        app = create_app(settings, runtime)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.05)
        (root / "b" / "token").write_text(token)
        config_b = {
            "intel": {
                "lab": "lab-b",
                "consortium_keys": keys,
                "peers": [
                    {
                        "name": "lab-a",
                        "url": f"http://127.0.0.1:{port}/taxii2/tollgate/",
                        "collection": DEFAULT_COLLECTION,
                        "token": {"file": str(root / "b" / "token")},
                        "public_key_file": str(root / "a" / "intel.pub.pem"),
                    }
                ],
            }
        }
        (root / "b" / "tollgate.yaml").write_text(yaml.safe_dump(config_b))
        url_b = f"sqlite+aiosqlite:///{root / 'b' / 'tollgate.db'}"
        await asyncio.to_thread(upgrade, url_b)
        db_b = Database(url_b)
        intel_b = load_intel(root / "b" / "tollgate.yaml")
        service = IntelService(intel_b, bundle=lambda: None, lift=None, floor=lambda: None)  # type: ignore[arg-type,return-value]
        from controlplane.enforce.targets import DEFAULT_FLOOR

        service.floor = lambda: DEFAULT_FLOOR
        log("pull: pulling")
        started = time.perf_counter()
        report = await Puller(db_b, Intake(service)).pull(intel_b.peers[0])
        elapsed = time.perf_counter() - started
        print(
            f"pull: {args.feed:,} signed objects over TAXII on loopback "
            "(server and puller share one process)"
        )
        print(
            f"  {report.accepted:,} accepted, {report.rejected} refused, {report.pages} pages, "
            f"{elapsed:.1f} s: {report.accepted / elapsed:,.0f} objects/s "
            f"(error: {report.error})"
        )
        server.should_exit = True
        await task
        await db_b.dispose()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cidrs", type=int, default=1_000_000)
    parser.add_argument("--hashes", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=50_000)
    parser.add_argument("--decisions", type=int, default=2_000)
    parser.add_argument("--feed", type=int, default=100_000)
    parser.add_argument("--only", default="index,decisions,pull", help="Parts to run.")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if only & {"index", "decisions"}:
        log("index: building")
        index = bench_index(args)
        if "decisions" in only:
            log("decisions: evaluating")
            bench_decisions(args, index)
        del index
    if "pull" in only:
        asyncio.run(bench_pull(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
