"""Impact analysis throughput: replay N stored decisions against two revisions.

    .venv/bin/python bench/impact.py [--decisions 100000] [--workers 2]

Stores N synthetic decisions (inputs in the policy contract's shape, as the
pipeline would have stored them) in a fresh SQLite database, then replays them
against the repository's policies (base, the revision that "made" them) and a
head that raises the first-offense bar. Prints replayed verdicts/s, the raw
single-engine evaluations/s on the same inputs, and the goal (>= 5,000/s).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from controlplane.engine.bundle import PolicyBundle, load_bundle  # noqa: E402
from controlplane.engine.embedded import EmbeddedEngine  # noqa: E402
from controlplane.policy.impact import replay  # noqa: E402
from controlplane.store.db import Database, upgrade  # noqa: E402
from controlplane.store.models import DecisionRow, VerdictRow  # noqa: E402

GOAL = 5000.0


def synthetic_input(rng: random.Random, i: int, now: datetime) -> dict[str, Any]:
    account = f"acct_{rng.randrange(20000)}"
    score = round(rng.betavariate(2, 3), 3)
    ips = [f"198.51.100.{rng.randrange(256)}"]
    matches = []
    if rng.random() < 0.05:
        ips.append(f"203.0.113.{rng.randrange(256)}")
        matches = [
            {
                "cidr": "203.0.113.0/24",
                "ip": ips[-1],
                "source": "lab-b",
                "confidence": 0.9,
                "tlp": "amber",
            }
        ]
    prior = [
        {
            "id": f"bench-{i}-{k}",
            "observed_at": (now - timedelta(days=k + 1)).isoformat(),
            "score": round(rng.random(), 3),
            "confidence": 0.8,
            "detector": "sweep",
        }
        for k in range(rng.choice((0, 0, 0, 1, 2)))
    ]
    return {
        "verdict": {
            "id": f"bench-{i}",
            "provider": rng.choice(("lab-a", "lab-b")),
            "detector": {"name": "sweep", "version": "1.4.0"},
            "observed_at": now.isoformat(),
            "score": score,
            "confidence": round(rng.uniform(0.5, 1.0), 3),
            "subject": {
                "account_id": account,
                "api_key_id": f"key_{account}_{rng.randrange(3)}",
                "org_id": f"org_{rng.randrange(5000)}",
                "ips": ips,
            },
            "signals": {
                "requests_24h": rng.randrange(10_000, 2_000_000),
                "prompt_template_reuse": round(rng.random(), 3),
            },
            "labels": ["distillation.capability_sweep"] if rng.random() < 0.3 else [],
            "evidence": [],
        },
        "history": {
            "active_actions": [],
            "verdicts_30d": len(prior),
            "recent_verdicts": prior,
            "appeals": [],
        },
        "context": {"exempt": False, "exemption": None, "intel_matches": matches},
        "now": now.isoformat(),
    }


def stricter(bundle: PolicyBundle) -> PolicyBundle:
    data = copy.deepcopy(bundle.data)
    for path, document in data:
        if path == "tollgate.settings":
            document["default"]["graduated"]["min_score"] = 0.8
    return PolicyBundle(
        root=bundle.root, revision=bundle.revision + "+stricter", modules=bundle.modules, data=data
    )


async def store(db: Database, base: EmbeddedEngine, inputs: list[dict[str, Any]]) -> None:
    now = datetime.now(UTC)
    for start in range(0, len(inputs), 5000):
        chunk = inputs[start : start + 5000]
        results = await base.evaluate_many(chunk)
        verdicts, decisions = [], []
        for n, (given, result) in enumerate(zip(chunk, results, strict=True)):
            v = given["verdict"]
            verdicts.append(
                {
                    "id": v["id"],
                    "provider": v["provider"],
                    "detector_name": "sweep",
                    "detector_version": "1.4.0",
                    "account_id": v["subject"]["account_id"],
                    "api_key_id": v["subject"]["api_key_id"],
                    "org_id": v["subject"]["org_id"],
                    "score": v["score"],
                    "confidence": v["confidence"],
                    "observed_at": now,
                    "received_at": now,
                    "body": v,
                    "content_hash": "0" * 64,
                    "status": "decided",
                }
            )
            decisions.append(
                {
                    "id": f"dec_bench_{start + n:09d}",
                    "verdict_id": v["id"],
                    "provider": v["provider"],
                    "policy_revision": base.revision,
                    "entrypoint": base.entrypoint,
                    "engine": base.name,
                    "status": "ok",
                    "shadow": False,
                    "input": given,
                    "result": result.result,
                    "error": None,
                    "duration_ms": result.duration_ms,
                    "decided_at": now,
                }
            )
        async with db.write() as session, session.begin():
            await session.execute(insert(VerdictRow), verdicts)
            await session.execute(insert(DecisionRow), decisions)
        print(f"  stored {start + len(chunk):,}/{len(inputs):,}", file=sys.stderr)


async def main(args: argparse.Namespace) -> None:
    bundle = load_bundle(ROOT / "policies")
    base = EmbeddedEngine(bundle, "tollgate.decision", args.workers)
    head = EmbeddedEngine(stricter(bundle), "tollgate.decision", args.workers)
    single = EmbeddedEngine(stricter(bundle), "tollgate.decision", 1)
    rng = random.Random(7)
    now = datetime.now(UTC)
    inputs = [synthetic_input(rng, i, now) for i in range(args.decisions)]
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-") as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        upgrade(url)
        db = Database(url)
        print(f"storing {args.decisions:,} decisions (SQLite)", file=sys.stderr)
        await store(db, base, inputs)

        sample = inputs[: min(len(inputs), 20000)]
        started = time.perf_counter()
        for given in sample:
            single.evaluate_sync(given)
        raw = len(sample) / (time.perf_counter() - started)

        async with db.read() as session:
            report = await replay(
                session,
                base,
                head,
                None,
                lambda n: print(f"  replayed {n:,}", file=sys.stderr) if n % 20000 == 0 else None,
            )
        await db.dispose()
    for engine in (base, head, single):
        engine.close()
    print(
        f"impact replay: {report.replayed:,} stored verdicts in {report.seconds:.2f} s "
        f"= {report.rate:,.0f} verdicts/s ({args.workers} workers); "
        f"{report.changed:,} decisions change"
    )
    print(f"raw engine, one thread: {raw:,.0f} evaluations/s on the same inputs")
    print(f"ratio replay/raw single engine: {report.rate / raw:.2f}")
    verdict = "met" if report.rate >= GOAL else "NOT met"
    print(f"goal >= {GOAL:,.0f} verdicts/s: {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
