"""What the gateways' state files cost at a million entries: the HAProxy connector's
map/ACL files and the NGINX connector's includes, this tree against a baseline.

    .venv/bin/python bench/statefiles.py [--entries 1000000] [--changes 100]
        [--baseline 8ba55a8] [--only haproxy,nginx]

The baseline is the connectors as they were at `--baseline` (default: 8ba55a8, the last
commit whose HAProxy `observe` parsed the `show` replies on the event loop; 78e8bcd is
the last whose models held copies as lists of tuples and rendered every line at each
write), loaded from git into this process as modules of their own: the old code is
reachable here only (the toolkit and the SDK they import are this tree's). Each figure
is measured for both in the same run, and the table ends with baseline / this tree.

- haproxy: Debian's HAProxy on `sample_config()`, started with `--entries` blocked
  addresses in `blocked.acl` and their references in `blocked_ref.map` (two files of
  `--entries` lines each, as a million active blocks make). Per implementation, a
  connector of its own:
  - `observe`: `show` of both files, the model built, each file compared with it (the
    periodic reconcile's cost); its memory is measured apart, in a fresh process per
    implementation (`observe, fresh process`): the RSS the model and the observed
    entries hold (after `malloc_trim`), and the peak during the observe (VmHWM, reset
    first), both over the RSS before;
  - `flush`: both files marked changed and written from the model (`_flush`: the
    snapshot on the event loop, the write in a thread);
  - `apply`: `--changes` changes (half new blocks, half removals of held ones) over
    the real Runtime API; the files wait for the next flush, as in the server.
- nginx: no NGINX runs (a million-line reload is NGINX's cost, not the connector's):
  `blocked.conf` of `--entries` lines is surveyed as `observe` does (read, parsed into
  the connector's tables, entries listed, every include rendered), then two batches of
  `--changes` changes are each planned and the touched include rendered (`_plan` +
  `_render_lists`: what an apply computes before it writes, tests and reloads).

Per phase: wall time; CPU time of the process (all threads); how late a 1 ms asyncio
ticker on the phase's own event loop ran meanwhile (max and total: how long the phase
kept its loop from running; in the server that is the enforcement worker's loop, which
checks the followers' locks and runs every connector's batches); and how late the same
ticker ran on a loop in another thread (max: what the API's loop, in its own thread,
waits for the GIL meanwhile); and the longest garbage collection meanwhile (CPython's
collector holds the GIL, whichever thread runs it: a full collection walks every
container object, so a million new entries make it long). A phase's result is freed
after its figures are taken. `model MB`: the RSS a model of `--entries` lines adds (a
fresh process per implementation builds the model from lines made one at a time, so
only what the model keeps is counted). Figures go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import inspect
import subprocess
import sys
import tempfile
import threading
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

BASELINE = "8ba55a8"
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


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory (`VmHWM`: its peak since `reset_peak`), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Start VmHWM again from the current RSS (Linux 4.0 and later)."""
    Path("/proc/self/clear_refs").write_text("5")


# -- one phase, timed against a 1 ms ticker --------------------------------------------------


@dataclass
class Figures:
    wall: float = 0.0
    cpu: float = 0.0
    late_max: float = 0.0
    late_total: float = 0.0
    other_late_max: float = 0.0
    """The same ticker's on a loop in another thread (the API's, in the server)."""
    gc_max: float = 0.0
    """The longest garbage collection meanwhile (it holds the GIL, whichever thread)."""
    extra: dict[str, float] = field(default_factory=dict)


Row = tuple[str, Figures, Figures]
"""A phase, then its figures with the baseline and with this tree."""


async def tick(lates: list[float], done: Callable[[], bool]) -> None:
    """Ask to wake every millisecond until `done()`; note how late each wake came."""
    while not done():
        asked = time.perf_counter()
        await asyncio.sleep(0.001)
        lates.append(max(0.0, time.perf_counter() - asked - 0.001))


async def timed(work: Callable[[], Awaitable[object]]) -> Figures:
    """Run `work` while a ticker on this loop, and one on a loop in another thread, ask
    to wake every millisecond; lateness past the tick is time the loop could not run
    (its own thread busy, or the GIL held by another)."""
    lates: list[float] = []
    other: list[float] = []
    done = asyncio.Event()
    stop = threading.Event()
    elsewhere = threading.Thread(target=lambda: asyncio.run(tick(other, stop.is_set)))
    elsewhere.start()
    ticker = asyncio.create_task(tick(lates, done.is_set))
    collections: list[float] = []
    started = [0.0]

    def collecting(phase: str, _: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            collections.append(time.perf_counter() - started[0])

    await asyncio.sleep(0.01)
    lates.clear()
    other.clear()
    gc.callbacks.append(collecting)
    cpu, wall = time.process_time(), time.perf_counter()
    result = await work()  # held until the tickers stop: freeing it is not the phase's work
    figures = Figures(time.perf_counter() - wall, time.process_time() - cpu)
    gc.callbacks.remove(collecting)
    done.set()
    stop.set()
    await ticker
    await asyncio.to_thread(elsewhere.join)
    del result
    figures.late_max, figures.late_total = max(lates, default=0.0), sum(lates)
    figures.other_late_max = max(other, default=0.0)
    figures.gc_max = max(collections, default=0.0)
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


def haproxy_observe_rss(rev: str | None, socket: str, state_dir: str) -> tuple[float, float]:
    """In this (fresh) process: an observe of the running HAProxy; the RSS the connector's
    model and the observed entries hold once what the observe freed is given back to
    the system, and the peak meanwhile (both over the RSS before, modules loaded)."""
    module = load("haproxy", rev)
    options = {"socket": socket, "state_dir": state_dir}
    config = ConnectorConfig("bench", "haproxy", ("*",), options, timeout_seconds=60)

    async def observe() -> tuple[Any, Any]:
        async with httpx.AsyncClient() as http:
            connector = module.HAProxyConnector(config, http)
            return connector, await connector.observe()

    gc.collect()
    before = rss_mb()
    reset_peak()
    held = asyncio.run(observe())
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    grown, peak = rss_mb() - before, rss_mb("VmHWM") - before
    del held
    return grown, peak


def haproxy_model_rss(rev: str | None, entries: int) -> float:
    """In this (fresh) process: the RSS a model of both files adds."""
    module = load("haproxy", rev)
    acl = module._File("/dev/null", "acl", EntryType.BLOCK, "ip")
    refs = module._File("/dev/null", "map", EntryType.BLOCK, "ip", references=True)
    reference = "TG-0123456789"  # the model keeps one string per line either way
    before = rss_mb()
    models = [module._by_key(acl, ((address(i), "") for i in range(entries)))]
    # Where the references map takes its key strings from the block ACL's model, as
    # observe has it do.
    shared = {"keys": models[0]} if "keys" in inspect.signature(module._by_key).parameters else {}
    refs_lines = ((address(i), f"{reference[:-6]}{i:06d}") for i in range(entries))
    models.append(module._by_key(refs, refs_lines, **shared))
    grown = rss_mb() - before
    del models
    return grown


def bench_haproxy(tmp: Path, args: argparse.Namespace, rows: list[Row]) -> None:
    from connectors.haproxy import HAProxyOptions
    from controlplane.cli.demo import LocalHAProxy, ModelStub, ensure_haproxy
    from controlplane.enforce.toolkit import observed

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
            # Each starts as a fresh server would: nothing cached by the other, whose
            # cache every garbage collection would walk.
            observed.cache_clear()
            gc.collect()
            phases = haproxy_phases(load("haproxy", rev), chosen, args.entries, args.changes)
            results[label] = asyncio.run(phases)
        fresh_rss = []
        for rev in (args.baseline, ""):
            say(f"haproxy: observe in a fresh process at {rev or 'this tree'} ...")
            command = ["--observe-rss", rev, options.socket, options.state_dir]
            grown, peak = (float(x) for x in fresh(command).split())
            fresh_rss.append(Figures(extra={"RSS held MB": grown, "RSS peak MB": peak}))
    finally:
        proxy.stop()
        stub.stop()
    for phase in results["this tree"]:
        rows.append((f"haproxy {phase}", results["baseline"][phase], results["this tree"][phase]))
    rows.append(("haproxy observe, fresh process", fresh_rss[0], fresh_rss[1]))
    rows.append(model_row("haproxy", args))


def fresh(arguments: list[str]) -> str:
    """This script's stdout, run in a fresh process with these arguments."""
    command = [sys.executable, __file__, *arguments]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def model_row(connector: str, args: argparse.Namespace) -> Row:
    """The RSS a model adds, each measured in a fresh process."""
    grown = []
    for rev in (args.baseline, ""):
        say(f"{connector}: model RSS at {rev or 'this tree'} ...")
        out = fresh(["--model-rss", connector, rev, "--entries", str(args.entries)])
        grown.append(Figures(extra={"model MB": float(out.strip())}))
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
            [(what, old.extra[what], new.extra[what], 1.0) for what in old.extra]
            if old.extra
            else [
                ("wall ms", old.wall, new.wall, 1000.0),
                ("cpu ms", old.cpu, new.cpu, 1000.0),
                ("loop late max ms", old.late_max, new.late_max, 1000.0),
                ("loop late sum ms", old.late_total, new.late_total, 1000.0),
                ("other loop late max ms", old.other_late_max, new.other_late_max, 1000.0),
                ("gc pause max ms", old.gc_max, new.gc_max, 1000.0),
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
    parser.add_argument("--observe-rss", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.observe_rss:
        rev, socket, state_dir = args.observe_rss
        print("{:.1f} {:.1f}".format(*haproxy_observe_rss(rev or None, socket, state_dir)))
        return 0
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
