"""Fairness: a simulated hour of traffic through the API, judged by who got refused.

Populations (all seeded, so a run is repeatable; each of `--seeds` draws another hour):
- verified enterprise document processors: huge volume, templated prompts, noisy
  volume-detector scores, one network;
- evaluation researchers (half verified): broad capability coverage, templates,
  chain-of-thought prompts, noisy sweep-detector scores, one or two keys;
- application developers (unverified): moderate volume, some behind mobile apps whose
  users' addresses rotate;
- distillation operations: an org with one or two accounts rotating over 12-40 keys
  through a few /24s, templated sweeps eliciting reasoning, detected key by key.

Detector verdicts are posted to a `tollgate serve` subprocess (SQLite, the bundled
policies) in time order, in one request per simulated 10 s. Each operation also sends
a request every 5 s of the hour; it is refused when the desired state at that moment
(the actions the API planned up to then, with the simulated time of the verdict that
planned them) suspends its account or org, revokes its key, or blocks its address.

Prints, per seed, per population the accounts with a hard action (suspend,
revoke_key, block), a rate limit and a review; the share of each operation's requests
refused from 2 minutes after its first verdict; and the time from its first verdict to
its first refused request. Then one line per seed and the aggregate over all seeds.
Goals: no hard action on a verified customer, at most 1 in 20 unverified legitimate
heavy accounts hard-actioned, and >= 95% of operations' traffic refused from 2 minutes
on; the exit code is 0 only when every seed meets every goal.

    .venv/bin/python bench/fairness.py [--seeds 7,11,23] [--operations 6]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import ingest  # noqa: E402

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
HOUR = 3600
WINDOW = 10
"""Simulated seconds of verdicts per request."""
REQUEST_EVERY = 5
GRACE = 120
HARD = {"suspend", "revoke_key", "block"}

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
                    otlp_endpoint="", policy_allow_uncommitted=True)
uvicorn.run(create_app(settings), host="127.0.0.1", port=cfg["port"], log_level="warning")
"""


@dataclass
class Account:
    population: str
    account: str
    org: str
    keys: list[str]
    networks: list[str]
    verified: bool | None
    """None: no customer record."""
    profile: dict[str, tuple[float, float]]
    """Signal -> (mean, spread)."""
    score: tuple[float, float]
    detector: str
    labels: list[str] = field(default_factory=list)
    start: int = 0
    key_every: int = HOUR
    """An operation moves to its next key after this many seconds."""
    mobile: bool = False


def _draw(rng: random.Random, mean: float, spread: float, low: float = 0, high: float = 1) -> float:
    return round(min(high, max(low, rng.gauss(mean, spread))), 3)


def _net(rng: random.Random) -> str:
    return f"{rng.randrange(11, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.0/24"


def _ip(network: str, rng: random.Random) -> str:
    return str(ipaddress.ip_network(network)[rng.randrange(1, 255)])


def populations(rng: random.Random, operations: int) -> list[Account]:
    accounts: list[Account] = []
    for i in range(20):
        accounts.append(
            Account(
                "verified enterprise (documents)",
                f"acct_ent{i}",
                f"org_ent{i}",
                [f"key_ent{i}_{k}" for k in range(rng.randint(1, 2))],
                [_net(rng)],
                True,
                {
                    "requests_24h": (3e6, 1e6),
                    "prompt_template_reuse": (0.9, 0.05),
                    "capability_coverage": (0.4, 0.15),
                    "cot_request_ratio": (0.1, 0.05),
                },
                (0.7, 0.15),
                "volume",
                ["distillation.high_volume"],
            )
        )
    for i in range(16):
        accounts.append(
            Account(
                "researchers (verified)" if i % 2 == 0 else "researchers (unverified)",
                f"acct_res{i}",
                f"org_res{i}",
                [f"key_res{i}_{k}" for k in range(rng.randint(1, 2))],
                [_net(rng)],
                i % 2 == 0,
                {
                    "requests_24h": (6e5, 2e5),
                    "prompt_template_reuse": (0.88, 0.06),
                    "capability_coverage": (0.92, 0.05),
                    "cot_request_ratio": (0.7, 0.15),
                },
                (0.75, 0.15),
                "sweep",
                ["distillation.capability_sweep"],
            )
        )
    for i in range(20):
        mobile = i % 4 == 0
        accounts.append(
            Account(
                "application developers",
                f"acct_app{i}",
                f"org_app{i}",
                [f"key_app{i}_{k}" for k in range(rng.randint(1, 2))],
                [_net(rng) for _ in range(6 if mobile else 1)],
                None,
                {
                    "requests_24h": (8e5, 4e5),
                    "prompt_template_reuse": (0.78, 0.1),
                    "capability_coverage": (0.45, 0.15),
                    "cot_request_ratio": (0.3, 0.15),
                    "distinct_ips_24h": (400 if mobile else 2, 1),
                },
                (0.6, 0.2),
                "volume",
            )
        )
    for i in range(operations):
        keys = rng.randint(12, 40)
        start = rng.randrange(0, 20 * 60)
        per_account = [keys] if i % 2 == 0 else [keys // 2, keys - keys // 2]
        for j, n in enumerate(per_account):
            accounts.append(
                Account(
                    "distillation operations",
                    f"acct_op{i}_{j}",
                    f"org_op{i}",
                    [f"key_op{i}_{j}_{k}" for k in range(n)],
                    [_net(rng) for _ in range(rng.randint(2, 4))],
                    None,
                    {
                        "requests_24h": (1.2e6, 3e5),
                        "prompt_template_reuse": (0.92, 0.04),
                        "capability_coverage": (0.9, 0.06),
                        "cot_request_ratio": (0.8, 0.1),
                    },
                    (0.84, 0.07),
                    "sweep",
                    ["distillation.capability_sweep"],
                    start=start + j * 600,
                    key_every=max(60, (HOUR - start - j * 600) // n),
                )
            )
    return accounts


def key_at(a: Account, t: int) -> str:
    return a.keys[min(len(a.keys) - 1, max(0, (t - a.start) // a.key_every))]


def verdicts(accounts: Sequence[Account], rng: random.Random) -> list[tuple[int, dict[str, Any]]]:
    """(simulated second, verdict): legitimate keys every 2-4 minutes, each operation's
    current key every minute (detectors see a key once it has traffic)."""
    found: list[tuple[int, dict[str, Any]]] = []
    for a in accounts:
        every = 60 if a.population == "distillation operations" else rng.randint(120, 240)
        t = a.start + rng.randrange(0, 60)
        while t < HOUR:
            key = key_at(a, t) if a.population == "distillation operations" else rng.choice(a.keys)
            signals = {
                name: _draw(rng, mean, spread, 0, 1e9 if mean > 1 else 1)
                for name, (mean, spread) in a.profile.items()
            }
            signals = {
                k: (int(v) if k in ("requests_24h", "distinct_ips_24h") else v)
                for k, v in signals.items()
            }
            found.append(
                (
                    t,
                    {
                        "id": f"fv-{a.account}-{t}",
                        "provider": "lab-a",
                        "detector": {"name": a.detector, "version": "1.0.0"},
                        "observed_at": (START + timedelta(seconds=t)).isoformat(),
                        "subject": {
                            "account_id": a.account,
                            "api_key_id": key,
                            "org_id": a.org,
                            "ips": [_ip(rng.choice(a.networks), rng)],
                        },
                        "score": _draw(rng, *a.score),
                        "confidence": _draw(rng, 0.8, 0.08),
                        "signals": signals,
                        "labels": a.labels if rng.random() < 0.7 else [],
                    },
                )
            )
            t += every
    return sorted(found, key=lambda item: (item[0], item[1]["id"]))


@dataclass
class Desired:
    """The enforcement planned so far, with the simulated second each entry began."""

    entries: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def add(self, action: dict[str, Any], t: int) -> None:
        key = (action["type"], action["target"]["kind"], action["target"]["value"])
        self.entries.setdefault(key, t)

    def refuses(self, a: Account, key: str, ip: str, t: int) -> bool:
        def on(kind: str, target: str, value: str) -> bool:
            began = self.entries.get((kind, target, value))
            return began is not None and began <= t

        if on("suspend", "account", a.account) or on("suspend", "org", a.org):
            return True
        if on("revoke_key", "api_key", key) or on("block", "ip", ip):
            return True
        network = str(ipaddress.ip_network(f"{ip}/24", strict=False))
        return on("block", "cidr", network)


def start_server(data: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    port = ingest.free_port()
    url = f"sqlite+aiosqlite:///{data / 'tollgate.db'}"
    (data / "tollgate.yaml").write_text("connectors: []\n", encoding="utf-8")
    cfg = {
        "data_dir": str(data),
        "url": url,
        "policies": str(REPO / "policies"),
        "config": str(data / "tollgate.yaml"),
        "port": port,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    log = (data / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, json.dumps(cfg)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {(data / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("server not ready after 120 s")
        time.sleep(0.1)
    token = (
        subprocess.run(
            [
                str(Path(sys.executable).with_name("tollgate")),
                "token",
                "create",
                "--name",
                "bench",
                "--role",
                "admin",
            ],
            cwd=REPO,
            env={**env, "TOLLGATE_DATABASE_URL": url, "TOLLGATE_DATA_DIR": str(data)},
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    return process, base, token


@dataclass
class Figures:
    """What one simulated hour came to."""

    seed: int
    verdicts: int
    seconds: float
    verified_hard: int
    unverified_legit: int
    unverified_hard: int
    sent: int
    refused: int
    first_refusals: list[int]
    """Seconds from each operation's first verdict to its first refused request."""
    never_refused: int
    """Operations none of whose requests was refused."""

    @property
    def unverified_ratio(self) -> float:
        return self.unverified_hard / self.unverified_legit if self.unverified_legit else 0.0

    @property
    def share(self) -> float:
        return self.refused / self.sent if self.sent else 0.0

    def goals(self) -> list[tuple[str, bool]]:
        return [
            (
                f"hard actions on verified customers: {self.verified_hard} (goal 0)",
                self.verified_hard == 0,
            ),
            (
                f"unverified legitimate heavy accounts hard-actioned: {self.unverified_hard}/"
                f"{self.unverified_legit} = {self.unverified_ratio:.1%} (goal <= 5%)",
                self.unverified_ratio <= 0.05,
            ),
            (
                f"operations' traffic refused from +2 min: {self.share:.1%} (goal >= 95%)",
                self.share >= 0.95,
            ),
        ]


def run(seed: int, operations: int) -> Figures:
    rng = random.Random(seed)
    accounts = populations(rng, operations)
    timeline = verdicts(accounts, rng)
    by_account = {a.account: a for a in accounts}
    with tempfile.TemporaryDirectory(prefix="tollgate-fairness-") as tmp:
        process, base, token = start_server(Path(tmp))
        try:
            client = httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120
            )
            records = [
                {
                    "account_id": a.account,
                    "org_id": a.org,
                    "tier": a.population.split()[0],
                    "verified": a.verified,
                    "keys": a.keys,
                }
                for a in accounts
                if a.verified is not None
            ]
            client.post("/v1/customers", json={"customers": records}).raise_for_status()
            desired = Desired()
            acted: dict[str, set[str]] = defaultdict(set)
            first_verdict: dict[str, int] = {}
            started = time.perf_counter()
            i = 0
            while i < len(timeline):
                window = timeline[i][0] // WINDOW
                batch = []
                while i < len(timeline) and timeline[i][0] // WINDOW == window:
                    batch.append(timeline[i])
                    i += 1
                answer = client.post("/v1/verdicts", json={"verdicts": [v for _, v in batch]})
                answer.raise_for_status()
                for (t, v), result in zip(batch, answer.json()["results"], strict=True):
                    account = v["subject"]["account_id"]
                    first_verdict.setdefault(by_account[account].org, t)
                    for action in result["actions"]:
                        if action["shadow"]:
                            continue
                        desired.add(action, t)
                        acted[account].add(action["type"])
            seconds = time.perf_counter() - started
        finally:
            process.terminate()
            process.wait(30)
    return report(seed, accounts, timeline, desired, acted, first_verdict, seconds)


def report(
    seed: int,
    accounts: Sequence[Account],
    timeline: Sequence[tuple[int, dict[str, Any]]],
    desired: Desired,
    acted: dict[str, set[str]],
    first_verdict: dict[str, int],
    seconds: float,
) -> Figures:
    print(
        f"== seed {seed}: {len(timeline)} verdicts of a simulated hour posted in "
        f"{seconds:.1f} s ({len(timeline) / seconds:.0f} verdicts/s)\n"
    )
    print(f"{'population':34} {'accounts':>8} {'hard action':>11} {'rate limit':>10} {'review':>7}")
    groups: dict[str, list[Account]] = defaultdict(list)
    for a in accounts:
        groups[a.population].append(a)
    verdict_hard = 0
    unverified_legit, unverified_hard = 0, 0
    for population, members in groups.items():
        hard = sum(1 for a in members if acted[a.account] & HARD)
        limited = sum(1 for a in members if "rate_limit" in acted[a.account])
        reviewed = sum(1 for a in members if "flag_review" in acted[a.account])
        print(f"{population:34} {len(members):>8} {hard:>11} {limited:>10} {reviewed:>7}")
        if population != "distillation operations":
            verdict_hard += sum(1 for a in members if a.verified and acted[a.account] & HARD)
            unverified = [a for a in members if not a.verified]
            unverified_legit += len(unverified)
            unverified_hard += sum(1 for a in unverified if acted[a.account] & HARD)
    print()
    rng = random.Random(0)
    sent_total = refused_total = 0
    first_refusals: list[int] = []
    never = 0
    print(
        f"{'operation':12} {'keys':>5} {'networks':>8} {'refused from +2 min':>20} "
        f"{'first refusal after':>20}"
    )
    orgs: dict[str, list[Account]] = defaultdict(list)
    for a in groups["distillation operations"]:
        orgs[a.org].append(a)
    for org, members in orgs.items():
        first = first_verdict.get(org)
        sent = refused = 0
        first_refused: int | None = None
        for a in members:
            for t in range(a.start, HOUR, REQUEST_EVERY):
                key, ip = key_at(a, t), _ip(rng.choice(a.networks), rng)
                no = desired.refuses(a, key, ip, t)
                if no and (first_refused is None or t < first_refused):
                    first_refused = t
                if first is not None and t >= first + GRACE:
                    sent += 1
                    refused += no
        sent_total += sent
        refused_total += refused
        if first is not None and first_refused is not None:
            first_refusals.append(first_refused - first)
        else:
            never += 1
        share = f"{refused / sent:.1%}" if sent else "n/a"
        after = (
            f"{first_refused - first} s"
            if first is not None and first_refused is not None
            else "never"
        )
        keys = sum(len(a.keys) for a in members)
        networks = len({n for a in members for n in a.networks})
        print(f"{org:12} {keys:>5} {networks:>8} {share:>20} {after:>20}")
    figures = Figures(
        seed=seed,
        verdicts=len(timeline),
        seconds=seconds,
        verified_hard=verdict_hard,
        unverified_legit=unverified_legit,
        unverified_hard=unverified_hard,
        sent=sent_total,
        refused=refused_total,
        first_refusals=first_refusals,
        never_refused=never,
    )
    print(
        f"\nall operations: {refused_total}/{sent_total} requests refused from +2 min "
        f"({figures.share:.1%})"
    )
    for text, ok in figures.goals():
        print(("met     " if ok else "MISSED  ") + text)
    print()
    return figures


def _after(values: list[int]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.0f} / {max(values)} s"


def summary(runs: Sequence[Figures]) -> int:
    """One line per seed, then the aggregate; 0 when every seed met every goal."""
    print(
        f"{'seed':>6} {'verdicts':>8} {'verified hard':>13} {'unverified hard':>15} "
        f"{'ops refused +2 min':>18} {'first refusal median / max':>27}"
    )
    for f in runs:
        unverified = f"{f.unverified_hard}/{f.unverified_legit}"
        print(
            f"{f.seed:>6} {f.verdicts:>8} {f.verified_hard:>13} {unverified:>15} "
            f"{f.share:>18.1%} {_after(f.first_refusals):>27}"
        )
    total = Figures(
        seed=-1,
        verdicts=sum(f.verdicts for f in runs),
        seconds=sum(f.seconds for f in runs),
        verified_hard=sum(f.verified_hard for f in runs),
        unverified_legit=sum(f.unverified_legit for f in runs),
        unverified_hard=sum(f.unverified_hard for f in runs),
        sent=sum(f.sent for f in runs),
        refused=sum(f.refused for f in runs),
        first_refusals=[s for f in runs for s in f.first_refusals],
        never_refused=sum(f.never_refused for f in runs),
    )
    unverified = f"{total.unverified_hard}/{total.unverified_legit}"
    print(
        f"{'all':>6} {total.verdicts:>8} {total.verified_hard:>13} {unverified:>15} "
        f"{total.share:>18.1%} {_after(total.first_refusals):>27}"
    )
    worst = min(runs, key=lambda f: f.share)
    print(
        f"\nover {len(runs)} seeds: lowest share refused {worst.share:.1%} (seed {worst.seed}); "
        f"operations never refused: {total.never_refused}"
    )
    met_everywhere = True
    for n, (text, _) in enumerate(total.goals()):
        met = sum(1 for f in runs if f.goals()[n][1])
        met_everywhere &= met == len(runs)
        print(f"{'met     ' if met == len(runs) else 'MISSED  '}{text}: met in {met}/{len(runs)}")
    return 0 if met_everywhere else 1


def seeds(text: str) -> list[int]:
    try:
        chosen = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        why = f"{text!r}: give seeds as integers, e.g. 7,11,23"
        raise argparse.ArgumentTypeError(why) from None
    if not chosen:
        raise argparse.ArgumentTypeError("give at least one seed")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--seeds", type=seeds, default=[7, 11, 23], help="comma-separated, e.g. 7,11,23"
    )
    parser.add_argument("--seed", type=int, help="one seed only (same as --seeds N)")
    parser.add_argument("--operations", type=int, default=6)
    args = parser.parse_args(argv)
    chosen = [args.seed] if args.seed is not None else args.seeds
    return summary([run(seed, args.operations) for seed in chosen])


if __name__ == "__main__":
    raise SystemExit(main())
