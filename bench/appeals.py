"""Time to undo at a real HAProxy: from an uphold to the subject's next request served.

    .venv/bin/python bench/appeals.py [--appeals 30]

A Tollgate app (in this process, over httpx's ASGI transport, SQLite) with the `haproxy`
connector drives a real HAProxy on the documented config. Per round: a severe verdict
revokes a new key (timed from the POST to the first 401 at HAProxy: time to enforce),
an appeal is filed, then upheld; the client probes HAProxy with the key until it is
served (time to undo: from sending the uphold to the first 200). Probes run in the same
process as the server, so both figures carry the same overhead; the ratio undo/enforce
says what an uphold costs next to a decision. Goal: p99 undo < 1 s.

Figures go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from connectors.haproxy import HAProxyOptions  # noqa: E402
from controlplane.api.app import create_app  # noqa: E402
from controlplane.auth.roles import Role  # noqa: E402
from controlplane.cli.demo import LocalHAProxy, ModelStub, ensure_haproxy  # noqa: E402
from controlplane.runtime import Runtime  # noqa: E402
from controlplane.settings import Settings  # noqa: E402

GOAL_S = 1.0
SOURCE = "127.0.0.60"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def until(status: int, probe: Callable[[], Awaitable[int]], started: float) -> float:
    while await probe() != status:
        if time.perf_counter() - started > 30:
            raise SystemExit(f"HAProxy never answered {status} within 30 s")
    return time.perf_counter() - started


async def run(rounds: int) -> None:
    binary = ensure_haproxy(lambda m: print(m, file=sys.stderr))
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-appeals-"))
    stub = ModelStub().start()
    options = HAProxyOptions(socket=str(work / "admin.sock"), state_dir=str(work))
    proxy = LocalHAProxy(binary, work, options, backend=stub.address).start()
    config = work / "tollgate.yaml"
    connector = {
        "name": "edge",
        "type": "haproxy",
        "providers": ["lab-a"],
        "reconcile_seconds": 3600,
        "options": {"socket": options.socket, "state_dir": options.state_dir},
    }
    config.write_text(yaml.safe_dump({"connectors": [connector]}), encoding="utf-8")
    settings = Settings(
        config=config,
        data_dir=work,
        database_url=f"sqlite+aiosqlite:///{work / 'tollgate.db'}",
        policy_dir=REPO / "policies",
        otlp_endpoint="",
        span_retention_hours=0,
    )
    runtime = Runtime.create(settings)
    app = create_app(settings, runtime)
    enforce: list[float] = []
    undo: list[float] = []
    try:
        async with app.lifespan():
            tokens = {
                role: {
                    "Authorization": "Bearer "
                    + (await runtime.tokens.create(f"bench-{role}", role, "bench"))[0]
                }
                for role in (Role.DETECTOR, Role.SUPPORT, Role.REVIEWER)
            }
            api = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
            gate = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(local_address=SOURCE), timeout=5.0
            )
            async with api, gate:
                for n in range(rounds):
                    raw = f"sk-bench-{secrets.token_hex(8)}"
                    tag = secrets.token_hex(5)
                    subject = {
                        "account_id": f"acct_{tag}",
                        "api_key_id": hashlib.sha256(raw.encode()).hexdigest(),
                        "ips": [SOURCE],
                    }

                    async def probe(key: str = raw) -> int:
                        url = f"{proxy.url}/v1/messages"
                        return (await gate.get(url, headers={"x-api-key": key})).status_code

                    document = {
                        "id": f"v-bench-{tag}",
                        "provider": "lab-a",
                        "detector": {"name": "sweep", "version": "1"},
                        "observed_at": "2026-11-26T12:00:00Z",
                        "subject": subject,
                        "score": 0.93,
                        "confidence": 0.8,
                        "labels": ["distillation.capability_sweep"],
                    }
                    started = time.perf_counter()
                    sent = await api.post(
                        "/v1/verdicts", json=document, headers=tokens[Role.DETECTOR]
                    )
                    assert sent.status_code == 202, sent.text
                    enforce.append(await until(401, probe, started))
                    body = {
                        "subject": {"kind": "account", "value": subject["account_id"]},
                        "provider": "lab-a",
                        "statement": "benchmark",
                        "contact": "bench@example.com",
                    }
                    filed = await api.post("/v1/appeals", json=body, headers=tokens[Role.SUPPORT])
                    appeal_id = filed.json()["id"]
                    started = time.perf_counter()
                    upheld = await api.post(
                        f"/v1/appeals/{appeal_id}/uphold",
                        json={"reason": "benchmark", "exempt_for": "1h"},
                        headers=tokens[Role.REVIEWER],
                    )
                    assert upheld.status_code == 200, upheld.text
                    undo.append(await until(200, probe, started))
                    print(f"round {n + 1}/{rounds}", file=sys.stderr)
    finally:
        proxy.stop()
        stub.stop()
    ms = 1000.0
    print(f"rounds: {rounds} (a revoked key each, appealed and upheld) at a real HAProxy")
    print(
        f"time to enforce (verdict -> first 401): median {statistics.median(enforce) * ms:.1f} ms, "
        f"p99 {percentile(enforce, 0.99) * ms:.1f} ms"
    )
    print(
        f"time to undo (uphold -> first 200):     median {statistics.median(undo) * ms:.1f} ms, "
        f"p99 {percentile(undo, 0.99) * ms:.1f} ms"
    )
    ratio = statistics.median(undo) / statistics.median(enforce)
    print(f"ratio undo/enforce (medians): {ratio:.2f}")
    verdict = "met" if percentile(undo, 0.99) < GOAL_S else "NOT met"
    print(f"goal p99 undo < {GOAL_S:.0f} s: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--appeals", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(run(args.appeals))


if __name__ == "__main__":
    main()
