"""The Cloudflare connector against a FAKE Cloudflare API (tests/support/
fake_cloudflare.py): nothing of Cloudflare runs here, so these tests check the
documented requests the connector sends (bulk operations polled by id, one per account,
rate limiting rules per tier) and how it reads the documented answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from connectors.cloudflare import CloudflareConnector
from controlplane.enforce.sdk import ConnectorConfig, ConnectorError, Diff, Entry, EntryType
from tests.support.fake_cloudflare import (
    ACCOUNT,
    LIST,
    TOKEN,
    ZONE,
    CloudflareState,
    fake_cloudflare,
)


@pytest.fixture
def cloudflare() -> Iterator[tuple[str, CloudflareState]]:
    with fake_cloudflare() as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def connector(
    base: str, http: httpx.AsyncClient, token: str = TOKEN, **options: Any
) -> CloudflareConnector:
    config = ConnectorConfig(
        name="edge-cloudflare",
        type="cloudflare",
        providers=("*",),
        options={
            "account_id": ACCOUNT,
            "list_id": LIST,
            "zone_id": ZONE,
            "tiers": [60, 600],
            "api_base": base,
            "poll_seconds": 0.01,
            **options,
        },
        secrets={"api_token": token},
        timeout_seconds=2.0,
    )
    return CloudflareConnector(config, http)


def block(value: str) -> Entry:
    return Entry(EntryType.BLOCK, "cidr" if "/" in value else "ip", value)


def limit(key: str, rpm: int) -> Entry:
    return Entry(EntryType.RATE_LIMIT, "api_key", key, rpm)


async def test_blocks_go_through_bulk_operations_polled_to_completion(
    cloudflare: tuple[str, CloudflareState], http: httpx.AsyncClient
) -> None:
    base, state = cloudflare
    c = connector(base, http)
    adds = tuple(block(v) for v in ("203.0.113.7", "198.51.100.0/24", "2001:db8::/48", "192.0.2.1"))
    assert len((await c.apply(Diff(add=adds))).done) == 4
    assert state.values() == {e.target_value for e in adds}
    polls = [p for m, p in state.requests if "bulk_operations" in p]
    assert len(polls) == 2  # saw running, then completed: it waited for the end
    assert (await connector(base, http).observe()).entries >= set(adds)  # paged, 3 per page
    # Removal by id: this connector never read the ids, so it searches for them.
    assert len((await c.apply(Diff(remove=adds[:2]))).done) == 2
    assert state.values() == {"2001:db8::/48", "192.0.2.1"}
    assert any(p.endswith("/items") for m, p in state.requests if m == "DELETE")


async def test_one_bulk_operation_at_a_time_per_account(
    cloudflare: tuple[str, CloudflareState], http: httpx.AsyncClient
) -> None:
    base, state = cloudflare
    one, two = connector(base, http), connector(base, http)
    results = await asyncio.gather(
        *(c.apply(Diff(add=(block(f"192.0.2.{i}"),))) for i, c in enumerate([one, two] * 3))
    )
    assert all(r.done and not r.failed for r in results)
    assert len(state.values()) == 6


async def test_a_failed_operation_is_retryable_and_list_limits_are_checked_first(
    cloudflare: tuple[str, CloudflareState], http: httpx.AsyncClient
) -> None:
    base, state = cloudflare
    state.max_items = 1
    c = connector(base, http)
    assert (await c.apply(Diff(add=(block("192.0.2.1"),)))).done
    result = await c.apply(Diff(add=(block("192.0.2.2"),)))
    assert "maximum number of items" in result.failed[0][1]
    refused = (block("2001:db8::1"), block("2001:db8::/96"), block("10.0.0.0/8"))
    result = await c.apply(Diff(add=refused))
    assert [e for e, _ in result.rejected] == list(refused)
    assert "/64" in dict(result.rejected)[refused[0]]


async def test_rate_limits_are_tier_rules_keyed_on_the_key_header(
    cloudflare: tuple[str, CloudflareState], http: httpx.AsyncClient
) -> None:
    base, state = cloudflare
    c = connector(base, http)
    result = await c.apply(Diff(add=(limit("key_1", 100), limit("key_2", 60), limit("key_3", 900))))
    assert len(result.done) == 3
    assert state.ruleset is not None
    rules = {r["ref"]: r for r in state.ruleset["rules"]}
    assert set(rules) == {"tollgate-tier-60", "tollgate-tier-600"}
    tier60 = rules["tollgate-tier-60"]
    assert tier60["expression"] == (
        'any(http.request.headers["x-api-key"][*] in {"key_1" "key_2"})'
    )
    assert tier60["ratelimit"]["requests_per_period"] == 60
    assert 'http.request.headers["x-api-key"]' in tier60["ratelimit"]["characteristics"]

    await c.apply(Diff(change=(limit("key_1", 700),)))
    rules = {r["ref"]: r for r in state.ruleset["rules"]}
    assert '"key_1"' in rules["tollgate-tier-600"]["expression"]
    assert '"key_1"' not in rules["tollgate-tier-60"]["expression"]
    assert (await connector(base, http).observe()).entries == {
        limit("key_1", 600),
        limit("key_2", 60),
        limit("key_3", 600),
    }
    await c.apply(Diff(remove=(limit("key_2", 60),)))
    assert {r["ref"] for r in state.ruleset["rules"]} == {"tollgate-tier-600"}


async def test_what_cloudflare_cannot_hold_is_rejected(
    cloudflare: tuple[str, CloudflareState], http: httpx.AsyncClient
) -> None:
    base, _ = cloudflare
    entries = (
        limit("key_1", 10),
        Entry(EntryType.RATE_LIMIT, "account", "acct_1", 60),
        Entry(EntryType.REVOKE_KEY, "api_key", "key_1"),
        Entry(EntryType.BLOCK, "ip", "192.0.2.1%x"),
    )
    result = await connector(base, http).apply(Diff(add=entries))
    why = dict(result.rejected)
    assert set(why) == set(entries)
    assert "add one to tiers" in why[entries[0]]


async def test_a_wrong_token_is_a_permanent_error_without_the_token(
    cloudflare: tuple[str, CloudflareState], http: httpx.AsyncClient
) -> None:
    base, _ = cloudflare
    with pytest.raises(ConnectorError) as caught:
        await connector(base, http, token="not-the-token").observe()
    assert caught.value.retryable is False and "not-the-token" not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"account_id": "abc"}, "account_id"),
        ({"tiers": []}, "tiers"),
        ({"tiers": [60, 60]}, "tiers"),
        ({"key_header": "X Key"}, "key_header"),
        ({"poll_seconds": 0}, "poll_seconds"),
    ],
)
def test_option_errors_name_the_option(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ConnectorError, match=rf": options\.{named} "):
        connector("http://127.0.0.1:1", httpx.AsyncClient(), **options)
