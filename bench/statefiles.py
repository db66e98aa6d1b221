"""What the gateways' state files cost at a million entries: the HAProxy connector's
map/ACL files and the NGINX connector's includes, this tree against a baseline.

    .venv/bin/python bench/statefiles.py [--entries 1000000] [--changes 100]
        [--baseline 78e8bcd] [--only haproxy,nginx]

The baseline is the connectors as they were at `--baseline` (default: 78e8bcd, the last
commit whose models held copies as lists of tuples and rendered every line at each
write), loaded from git into this process as modules of their own: the old code is
reachable here only. Each figure is measured for both in the same run, and the table
ends with baseline / this tree.

- haproxy: Debian's HAProxy on `sample_config()`, started with `--entries` blocked
  addresses in `blocked.acl` and their references in `blocked_ref.map` (two files of
  `--entries` lines each, as a million active blocks make). Per implementation, a
  connector of its own:
  - `observe`: `show` of both files, the model built, each file compared with it (the
    periodic reconcile's cost);
  - `flush`: both files marked changed and written from the model (`_flush`: the
    snapshot on the event loop, the write in a thread);
  - `apply`: `--changes` changes (half new blocks, half removals of held ones) over
    the real Runtime API; the files wait for the next flush, as in the server.
- nginx: no NGINX runs (a million-line reload is NGINX's cost, not the connector's):
  `blocked.conf` of `--entries` lines is surveyed as `observe` does (read, parsed into
  the connector's tables, entries listed, every include rendered), then two batches of
  `--changes` changes are each planned and the touched include rendered (`_plan` +
  `_render_lists`: what an apply computes before it writes, tests and reloads).

Per phase: wall time; CPU time of the process (all threads); and how late a 1 ms
asyncio ticker ran meanwhile (max and total), which is how long the phase held the
GIL against the event loop, the API's and the decide thread's. `model MB`: the RSS a
model of `--entries` lines adds (a fresh process per implementation builds the
model from lines made one at a time, so only what the model keeps is counted).
Figures go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controlplane.enforce.sdk import ConnectorConfig, Diff, Entry, EntryType  # noqa: E402

BASELINE = "78e8bcd"
HEADER = "# Written by Tollgate (connector bench). Edits by hand are undone at the next reconcile."


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def address(i: int) -> str:
    """The i-th address of 10.0.0.0/8 (up to 16M distinct)."""
    return f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


def block(value: str) -> Entry:
    return Entry(EntryType.BLOCK, "cidr" if "/" in value else "ip", value)


def load(module: str, rev: str | None) -> Any:
    """`connectors.<module>` of this tree (rev None) or as it was at `rev`."""
    if rev is None:
        return __import__(f"connectors.{module}", fromlist=["_"])
    shown = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:connectors/{module}.py"],
        capture_output=True,
        text=True,
        check=True,
    )
    name = f"bench_{module}_at_{rev}"
    loaded = types.ModuleType(name)
    loaded.__file__ = f"{rev}:connectors/{module}.py"
    sys.modules[name] = loaded  # dataclasses look their module up
    exec(compile(shown.stdout, loaded.__file__, "exec"), loaded.__dict__)
    return loaded


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- one phase, timed against a 1 ms ticker --------------------------------------------------


@dataclass
class Figures:
    wall: float = 0.0
    cpu: float = 0.0
    late_max: float = 0.0
    late_total: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


Row = tuple[str, Figures, Figures]
"""A phase, then its figures with the baseline and with this tree."""


async def timed(work: Callable[[], Awaitable[object]]) -> Figures:
    """Run `work` while a ticker asks to wake every millisecond; lateness past the tick
    is time the event loop could not run (the GIL held, or the loop itself busy)."""
    lates: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        while not done.is_set():
            asked = time.perf_counter()
            await asyncio.sleep(0.001)
            lates.append(max(0.0, time.perf_counter() - asked - 0.001))

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    lates.clear()
    cpu, wall = time.process_time(), time.perf_counter()
    await work()
    figures = Figures(time.perf_counter() - wall, time.process_time() - cpu)
    done.set()
    await ticker
    figures.late_max, figures.late_total = max(lates, default=0.0), sum(lates)
    return figures


# -- haproxy -------------------------------------------------------------------------------


def haproxy_files(directory: Path, entries: int) -> None:
    """`blocked.acl` and `blocked_ref.map` as the connector writes them."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "blocked.acl").open("w", encoding="utf-8") as acl:
        acl.write(HEADER + "\n")
        acl.writelines(f"{address(i)}\n" for i in range(entries))
    with (directory / "blocked_ref.map").open("w", encoding="utf-8") as refs:
        refs.write(HEADER + "\n")
        refs.writelines(f"{address(i)} {block(address(i)).reference}\n" for i in range(entries))


async def haproxy_phases(
    module: Any, options: dict[str, Any], entries: int, changes: int
) -> dict[str, Figures]:
    options = {**options, "file_flush_seconds": 3600.0}  # flushed here only
    config = ConnectorConfig("bench", "haproxy", ("*",), options, timeout_seconds=60)
    found: dict[str, Figures] = {}
    async with httpx.AsyncClient() as http:
        connector = module.HAProxyConnector(config, http)
        found["observe"] = await timed(connector.observe)
        names = ("blocked.acl", "blocked_ref.map")
        held = [spec for spec in connector._files if spec.path.endswith(names)]

        async def flush() -> None:
            for spec in held:
                connector._changed(spec)
            await connector._flush()

        found["flush"] = await timed(flush)
        half = changes // 2
        fresh = tuple(block(address(entries + i)) for i in range(changes - half))
        gone = tuple(block(address(i * (entries // max(half, 1)))) for i in range(half))

        async def apply() -> None:
            result = await connector.apply(Diff(add=fresh, remove=gone))
            assert len(result.done) == changes, (result.failed, result.rejected)

        found["apply"] = await timed(apply)
        found["flush after apply"] = await timed(flush)
        # Back as it was, for the next implementation.
        await connector.apply(Diff(add=gone, remove=fresh))
        await connector._flush()
    return found


def haproxy_model_rss(rev: str | None, entries: int) -> float:
    """In this (fresh) process: the RSS a model of both files adds."""
    module = load("haproxy", rev)
    acl = module._File("/dev/null", "acl", EntryType.BLOCK, "ip")
    refs = module._File("/dev/null", "map", EntryType.BLOCK, "ip", references=True)
    reference = "TG-0123456789"  # the model keeps one string per line either way
    before = rss_mb()
    models = [
        module._by_key(acl, ((address(i), "") for i in range(entries))),
        module._by_key(refs, ((address(i), f"{reference[:-6]}{i:06d}") for i in range(entries))),
    ]
    grown = rss_mb() - before
    del models
    return grown


def bench_haproxy(tmp: Path, args: argparse.Namespace, rows: list[Row]) -> None:
    from connectors.haproxy import HAProxyOptions
    from controlplane.cli.demo import LocalHAProxy, ModelStub, ensure_haproxy

    binary = ensure_haproxy(say)
    directory = tmp / "haproxy"
    say(f"haproxy: writing {args.entries:,} blocks and their references ...")
    haproxy_files(directory, args.entries)
    options = HAProxyOptions(socket=str(directory / "admin.sock"), state_dir=str(directory))
    stub = ModelStub().start()
    say("haproxy: starting HAProxy on them ...")
    proxy = LocalHAProxy(binary, directory, options, stub.address).start()
    try:
        chosen = {"socket": options.socket, "state_dir": options.state_dir}
        results = {}
        for label, rev in (("baseline", args.baseline), ("this tree", None)):
            say(f"haproxy: {label} ...")
            phases = haproxy_phases(load("haproxy", rev), chosen, args.entries, args.changes)
            results[label] = asyncio.run(phases)
    finally:
        proxy.stop()
        stub.stop()
    for phase in results["this tree"]:
        rows.append((f"haproxy {phase}", results["baseline"][phase], results["this tree"][phase]))
    rows.append(model_row("haproxy", args))


def model_row(connector: str, args: argparse.Namespace) -> Row:
    """The RSS a model adds, each measured in a fresh process."""
    grown = []
    for rev in (args.baseline, ""):
        say(f"{connector}: model RSS at {rev or 'this tree'} ...")
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--model-rss",
                connector,
                rev,
                "--entries",
                str(args.entries),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        grown.append(Figures(extra={"model MB": float(out.stdout.strip())}))
    return (f"{connector} model", grown[0], grown[1])


# -- nginx ---------------------------------------------------------------------------------


def nginx_connector(module: Any, directory: Path) -> Any:
    config = ConnectorConfig("bench", "nginx", ("*",), {"include_dir": str(directory)})
    return module.NginxConnector(config, None)


def nginx_files(connector: Any, entries: int) -> dict[str, bytes | None]:
    """The includes with `blocked.conf` holding `entries` addresses, as NGINX's connector
    writes them (sorted)."""
    files: dict[str, bytes | None] = {name: None for name in connector.paths}
    ips = sorted(address(i) for i in range(entries))
    files["blocked.conf"] = "".join(f"{ip} {block(ip).reference};\n" for ip in ips).encode()
    return files


async def nginx_phases(
    module: Any, files: dict[str, bytes | None], tmp: Path, entries: int, changes: int
) -> dict[str, Figures]:
    connector = nginx_connector(module, tmp)
    found: dict[str, Figures] = {}
    held: list[Any] = []

    for name, data in files.items():
        if data is not None:
            connector.paths[name].write_bytes(data)

    async def survey() -> None:
        # What `observe` computes: the files read and parsed, the entries, the files as
        # they should be (in a thread, as `observe` does).
        held.append(await asyncio.to_thread(connector._survey))

    found["survey (observe)"] = await timed(survey)
    tables = held[0][2]
    half = changes // 2
    for round in (1, 2):
        fresh = tuple(block(address(entries + round * changes + i)) for i in range(changes - half))
        gone = tuple(block(address(round + i * (entries // max(half, 1)))) for i in range(half))

        async def apply(diff: Diff = Diff(add=fresh, remove=gone)) -> None:
            # What `_apply_batch` computes before it writes, tests and reloads.
            batch = tables.copy() if hasattr(tables, "copy") else tables
            touched: set[str] = set()
            connector._plan(batch, diff, touched)
            await asyncio.to_thread(connector._render_lists, batch, touched)

        found[f"apply #{round} (plan + render)"] = await timed(apply)
    return found


def nginx_model_rss(rev: str | None, entries: int) -> float:
    """In this (fresh) process: the RSS the tables of `blocked.conf` add."""
    import ctypes
    import gc

    module = load("nginx", rev)
    with tempfile.TemporaryDirectory() as tmp:
        connector = nginx_connector(module, Path(tmp))
        files = nginx_files(connector, entries)
        gc.collect()
        before = rss_mb()
        tables = connector._parse(files)
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # what parsing made and dropped
        grown = rss_mb() - before
        del tables
    return grown


def bench_nginx(tmp: Path, args: argparse.Namespace, rows: list[Row]) -> None:
    directory = tmp / "nginx"
    directory.mkdir()
    say(f"nginx: writing {args.entries:,} blocks ...")
    files = nginx_files(nginx_connector(load("nginx", None), directory), args.entries)
    results = {}
    for label, rev in (("baseline", args.baseline), ("this tree", None)):
        say(f"nginx: {label} ...")
        phases = nginx_phases(load("nginx", rev), files, directory, args.entries, args.changes)
        results[label] = asyncio.run(phases)
    for phase in results["this tree"]:
        rows.append((f"nginx {phase}", results["baseline"][phase], results["this tree"][phase]))
    rows.append(model_row("nginx", args))


# -- table -----------------------------------------------------------------------------------


def ratio(old: float, new: float) -> str:
    return f"{old / new:.1f}x" if new > 0 else "-"


def table(rows: list[Row], baseline: str) -> None:
    print(f"{'phase':<30}{'':>18}{'baseline':>12}{'this tree':>12}{'ratio':>8}")
    for phase, old, new in rows:
        measures = (
            [("model MB", old.extra["model MB"], new.extra["model MB"], 1.0)]
            if old.extra
            else [
                ("wall ms", old.wall, new.wall, 1000.0),
                ("cpu ms", old.cpu, new.cpu, 1000.0),
                ("loop late max ms", old.late_max, new.late_max, 1000.0),
                ("loop late sum ms", old.late_total, new.late_total, 1000.0),
            ]
        )
        for i, (what, a, b, scale) in enumerate(measures):
            figures = f"{a * scale:>12.1f}{b * scale:>12.1f}{ratio(a, b):>8}"
            print(f"{phase if i == 0 else '':<30}{what:>18}{figures}")
    print(f"(baseline: connectors at {baseline}; ratio: baseline / this tree)")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--only", default="haproxy,nginx")
    parser.add_argument("--model-rss", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model_rss:
        connector, rev = args.model_rss
        measure = {"haproxy": haproxy_model_rss, "nginx": nginx_model_rss}[connector]
        print(f"{measure(rev or None, args.entries):.1f}")
        return 0
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tollgate-statefiles-") as tmp:
        for name in args.only.split(","):
            {"haproxy": bench_haproxy, "nginx": bench_nginx}[name](Path(tmp), args, rows)
    table(rows, args.baseline)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
