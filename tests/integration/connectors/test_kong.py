"""The Kong connector against a FAKE Kong Admin API (tests/support/fake_kong.py): no Kong
runs here, so these tests check the documented requests the connector sends and how it
reads Kong's documented answers, not enforcement by Kong."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from connectors.kong import KongConnector
from controlplane.enforce.sdk import (
    ConnectorConfig,
    ConnectorError,
    Diff,
    Entry,
    EntryType,
    GatewayUnavailable,
)
from tests.support.fake_kong import KongState, fake_kong
from tests.support.moto_server import free_port


@pytest.fixture
def kong() -> Iterator[tuple[str, KongState]]:
    with fake_kong() as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def connector(
    url: str, http: httpx.AsyncClient, secrets: dict[str, str] | None = None, **options: Any
) -> KongConnector:
    config = ConnectorConfig(
        name="edge-kong",
        type="kong",
        providers=("*",),
        options={"admin_url": url, **options},
        secrets=secrets or {},
        timeout_seconds=2.0,
    )
    return KongConnector(config, http)


def block(value: str) -> Entry:
    return Entry(EntryType.BLOCK, "cidr" if "/" in value else "ip", value)


def account_limit(account: str, rpm: int) -> Entry:
    return Entry(EntryType.RATE_LIMIT, "account", account, rpm)


async def test_revoke_deletes_the_key_auth_credential(
    kong: tuple[str, KongState], http: httpx.AsyncClient
) -> None:
    url, state = kong
    consumer = state.add_consumer("acct_1")
    credential = state.add_key(consumer, "sk-secret")
    keep = state.add_key(consumer, "sk-other")
    entry = Entry(EntryType.REVOKE_KEY, "api_key", credential["id"])
    c = connector(url, http)
    assert (await c.apply(Diff(add=(entry,)))).done == [entry]
    assert credential["id"] not in state.key_auths and keep["id"] in state.key_auths
    assert ("DELETE", f"/key-auths/{credential['id']}") in state.requests
    # Idempotent: deleting again (Kong answers 404) is done.
    assert (await c.apply(Diff(add=(entry,)))).done == [entry]
    assert entry in (await c.observe()).entries


async def test_account_limits_are_consumer_rate_limiting_plugins(
    kong: tuple[str, KongState], http: httpx.AsyncClient
) -> None:
    url, state = kong
    consumers = [state.add_consumer(f"acct_{i}") for i in range(3)]
    c = connector(url, http)
    limits = tuple(account_limit(f"acct_{i}", 60 + i) for i in range(3))
    assert len((await c.apply(Diff(add=limits))).done) == 3
    plugins = {p["consumer"]["id"]: p for p in state.plugins.values()}
    assert plugins[consumers[1]["id"]]["config"]["minute"] == 61
    assert plugins[consumers[1]["id"]]["config"]["limit_by"] == "consumer"

    fresh = connector(url, http)  # paged: 3 plugins, 2 per page
    assert (await fresh.observe()).entries == set(limits)
    await fresh.apply(Diff(change=(account_limit("acct_1", 10),)))
    assert plugins[consumers[1]["id"]]["id"] in state.plugins
    assert state.plugins[plugins[consumers[1]["id"]]["id"]]["config"]["minute"] == 10
    await fresh.apply(Diff(remove=(account_limit("acct_1", 10),)))
    assert len(state.plugins) == 2


async def test_consumers_by_custom_id(kong: tuple[str, KongState], http: httpx.AsyncClient) -> None:
    url, state = kong
    consumer = state.add_consumer("someone", custom_id="acct_77")
    c = connector(url, http, consumer_by="custom_id")
    assert (await c.apply(Diff(add=(account_limit("acct_77", 5),)))).done
    (plugin,) = state.plugins.values()
    assert plugin["consumer"]["id"] == consumer["id"]


async def test_blocks_are_one_ip_restriction_deny_list(
    kong: tuple[str, KongState], http: httpx.AsyncClient
) -> None:
    url, state = kong
    c = connector(url, http)
    adds = (block("203.0.113.7"), block("198.51.100.0/24"), block("2001:db8::/48"))
    assert len((await c.apply(Diff(add=adds))).done) == 3
    (plugin,) = state.plugins.values()
    assert plugin["name"] == "ip-restriction" and plugin["config"]["status"] == 403
    assert sorted(plugin["config"]["deny"]) == sorted(e.target_value for e in adds)
    assert (await connector(url, http).observe()).entries == set(adds)
    await c.apply(Diff(remove=adds[:2]))
    assert state.plugins[plugin["id"]]["config"]["deny"] == ["2001:db8::/48"]
    await c.apply(Diff(remove=adds[2:]))
    assert state.plugins == {}  # Kong refuses an empty ip-restriction: it is removed


async def test_what_kong_cannot_hold_is_rejected(
    kong: tuple[str, KongState], http: httpx.AsyncClient
) -> None:
    url, _ = kong
    c = connector(url, http)
    entries = (
        Entry(EntryType.RATE_LIMIT, "api_key", "key_3", 60),
        Entry(EntryType.REVOKE_KEY, "api_key", "key_3"),
        Entry(EntryType.REVOKE_KEY, "account", "acct_1"),
        account_limit("nobody", 60),
        block("10.0.0.0/8"),
    )
    result = await c.apply(Diff(add=entries))
    why = dict(result.rejected)
    assert set(why) == set(entries)
    assert "cannot be scoped to one credential" in why[entries[0]]
    assert "UUID" in why[entries[1]]
    assert "no consumer" in why[entries[3]]


async def test_5xx_is_retried_then_unavailable_and_a_wrong_token_is_permanent(
    kong: tuple[str, KongState], http: httpx.AsyncClient
) -> None:
    url, state = kong
    state.add_consumer("acct_1")
    state.fail_next(503, times=1)
    assert (await connector(url, http).apply(Diff(add=(account_limit("acct_1", 9),)))).done
    state.fail_next(502, times=5)
    with pytest.raises(GatewayUnavailable):
        await connector(url, http, attempts=2).observe()
    state.failures.clear()
    state.token = "right"
    with pytest.raises(ConnectorError) as caught:
        await connector(url, http, {"admin_token": "wrong"}).observe()
    assert caught.value.retryable is False and "wrong" not in str(caught.value)
    await connector(url, http, {"admin_token": "right"}).observe()


async def test_unreachable_and_health(kong: tuple[str, KongState], http: httpx.AsyncClient) -> None:
    url, _ = kong
    assert (await connector(url, http).health()).gateway.startswith("kong 3.9.0")
    dead = connector(f"http://127.0.0.1:{free_port()}", http, attempts=1)
    with pytest.raises(GatewayUnavailable):
        await dead.observe()
    assert not (await dead.health()).ok


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({}, "admin_url"),
        ({"admin_url": "ftp://kong"}, "admin_url"),
        ({"admin_url": "http://k:8001", "consumer_by": "email"}, "consumer_by"),
        ({"admin_url": "http://k:8001", "attempts": 0}, "attempts"),
        ({"admin_url": "http://k:8001", "deny_status": 200}, "deny_status"),
    ],
)
def test_option_errors_name_the_option(options: dict[str, Any], named: str) -> None:
    config = ConnectorConfig(name="k", type="kong", providers=("*",), options=options)
    with pytest.raises(ConnectorError, match=rf"^connector k: options\.{named} "):
        KongConnector(config, httpx.AsyncClient())
