"""The AWS connector against a real moto server (AWS's APIs emulated on loopback):
WAFv2 IP sets (sharding, LockToken conflicts, the limits AWS enforces and moto does not),
API Gateway keys (disable, usage plans as tiers), and what the connector refuses."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from connectors.aws import WAF_SET_LIMIT, AwsConnector, marks_of
from controlplane.enforce.sdk import (
    ConnectorConfig,
    ConnectorError,
    Diff,
    Entry,
    EntryType,
    GatewayUnavailable,
)
from tests.support.moto_server import MotoServer, free_port, moto_server

SCOPE = "REGIONAL"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture
def aws(moto: MotoServer) -> Iterator[MotoServer]:
    moto.reset()
    yield moto


def connector(moto: MotoServer | None, **options: Any) -> AwsConnector:
    config = ConnectorConfig(
        name="edge-aws",
        type="aws",
        providers=("*",),
        options={
            "endpoint_url": moto.url if moto else f"http://127.0.0.1:{free_port()}",
            "writes_per_second": 1000.0,
            "write_burst": 1000,
            **options,
        },
        secrets={"access_key_id": "testing", "secret_access_key": "testing"},
        timeout_seconds=2.0,
    )
    return AwsConnector(config, httpx.AsyncClient())


def block(value: str) -> Entry:
    return Entry(EntryType.BLOCK, "cidr" if "/" in value else "ip", value)


def revoke(key: str) -> Entry:
    return Entry(EntryType.REVOKE_KEY, "api_key", key)


def limit(key: str, rpm: int) -> Entry:
    return Entry(EntryType.RATE_LIMIT, "api_key", key, rpm)


def ip_sets(moto: MotoServer) -> dict[str, list[str]]:
    waf = moto.client("wafv2")
    found = waf.list_ip_sets(Scope=SCOPE, Limit=100)["IPSets"]
    return {
        s["Name"]: sorted(
            waf.get_ip_set(Name=s["Name"], Scope=SCOPE, Id=s["Id"])["IPSet"]["Addresses"]
        )
        for s in found
    }


# -- WAF ----------------------------------------------------------------------------------


async def test_blocks_land_in_ip_sets_by_version_and_come_back_at_observe(
    aws: MotoServer,
) -> None:
    c = connector(aws)
    result = await c.apply(
        Diff(add=(block("203.0.113.7"), block("198.51.100.0/24"), block("2001:db8::/48")))
    )
    assert len(result.done) == 3, (result.failed, result.rejected)
    sets = ip_sets(aws)
    assert sets["tollgate-blocked-ipv4-0"] == ["198.51.100.0/24", "203.0.113.7/32"]
    assert sets["tollgate-blocked-ipv6-0"] == ["2001:db8::/48"]

    fresh = connector(aws)  # what a restarted Tollgate sees
    state = await fresh.observe()
    assert state.entries == {
        block("203.0.113.7"),
        block("198.51.100.0/24"),
        block("2001:db8::/48"),
    }
    result = await fresh.apply(Diff(remove=(block("203.0.113.7"),)))
    assert result.done == [block("203.0.113.7")]
    assert ip_sets(aws)["tollgate-blocked-ipv4-0"] == ["198.51.100.0/24"]
    await c.close()
    await fresh.close()


async def test_an_ip_and_its_slash_32_share_one_address_until_both_are_lifted(
    aws: MotoServer,
) -> None:
    c = connector(aws)
    await c.apply(Diff(add=(block("203.0.113.9"), block("203.0.113.9/32"))))
    await c.apply(Diff(remove=(block("203.0.113.9"),)))
    assert ip_sets(aws)["tollgate-blocked-ipv4-0"] == ["203.0.113.9/32"]
    await c.apply(Diff(remove=(block("203.0.113.9/32"),)))
    assert ip_sets(aws)["tollgate-blocked-ipv4-0"] == []


async def test_past_a_sets_limit_addresses_go_to_the_next_shard(aws: MotoServer) -> None:
    """AWS's real limit: 10,001 addresses need two sets (moto would take them in one)."""
    c = connector(aws, ipv4_shards=2, ipv6_shards=0)
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    entries = [block(str(ipaddress.IPv4Address(base + i))) for i in range(WAF_SET_LIMIT + 1)]
    result = await c.apply(Diff(add=tuple(entries)))
    assert len(result.done) == WAF_SET_LIMIT + 1 and not result.failed
    sets = ip_sets(aws)
    assert len(sets["tollgate-blocked-ipv4-0"]) == WAF_SET_LIMIT
    assert len(sets["tollgate-blocked-ipv4-1"]) == 1
    state = await connector(aws, ipv4_shards=2, ipv6_shards=0).observe()
    assert len(state.entries) == WAF_SET_LIMIT + 1


async def test_when_every_shard_is_full_the_entry_fails_saying_what_to_raise(
    aws: MotoServer,
) -> None:
    c = connector(aws, ipv4_shards=2, addresses_per_set=2)
    adds = tuple(block(f"192.0.2.{i}") for i in range(5))
    result = await c.apply(Diff(add=adds))
    assert len(result.done) == 4
    assert [e for e, _ in result.failed] == [adds[4]]
    assert "raise ipv4_shards" in result.failed[0][1]
    # A lift makes room: the failed entry goes in on its retry.
    await c.apply(Diff(remove=(adds[0],)))
    assert (await c.apply(Diff(add=(adds[4],)))).done == [adds[4]]


async def test_a_lock_conflict_is_retried_with_a_fresh_token_keeping_the_other_write(
    aws: MotoServer,
) -> None:
    c = connector(aws)
    await c.observe()  # the connector now holds the set's LockToken
    waf = aws.client("wafv2")
    summary = waf.list_ip_sets(Scope=SCOPE, Limit=100)["IPSets"]
    ipv4 = next(s for s in summary if s["Name"] == "tollgate-blocked-ipv4-0")
    current = waf.get_ip_set(Name=ipv4["Name"], Scope=SCOPE, Id=ipv4["Id"])
    waf.update_ip_set(  # someone else writes: the connector's token is stale now
        Name=ipv4["Name"],
        Scope=SCOPE,
        Id=ipv4["Id"],
        Addresses=["192.0.2.200/32"],
        LockToken=current["LockToken"],
    )
    result = await c.apply(Diff(add=(block("203.0.113.50"),)))
    assert result.done == [block("203.0.113.50")], (result.failed, result.rejected)
    assert ip_sets(aws)["tollgate-blocked-ipv4-0"] == ["192.0.2.200/32", "203.0.113.50/32"]


async def test_values_aws_would_refuse_are_rejected_before_any_call(aws: MotoServer) -> None:
    c = connector(aws)
    hostile = (
        block("203.0.113.7/24"),  # not canonical (host bits)
        block("10.0.0.0/8"),  # wider than the /16 floor
        Entry(EntryType.BLOCK, "ip", "fe80::1%eth0"),
        Entry(EntryType.BLOCK, "api_key", "abc"),
    )
    result = await c.apply(Diff(add=hostile))
    assert [e for e, _ in result.rejected] == list(hostile)
    assert all(why for _, why in result.rejected)
    assert ip_sets(aws) == {}  # nothing was even created


# -- API Gateway --------------------------------------------------------------------------


def make_key(moto: MotoServer, name: str, *, description: str = "", enabled: bool = True) -> str:
    api = moto.client("apigateway")
    return str(api.create_api_key(name=name, enabled=enabled, description=description)["id"])


async def test_revoke_disables_the_key_and_a_lift_enables_it_again(aws: MotoServer) -> None:
    api = aws.client("apigateway")
    key = make_key(aws, "customer-1", description="lab key")
    c = connector(aws)
    assert (await c.apply(Diff(add=(revoke(key),)))).done == [revoke(key)]
    got = api.get_api_key(apiKey=key)
    assert got["enabled"] is False
    assert got["description"].startswith("lab key ")  # the lab's text is kept
    assert marks_of(got) == {"revoked": "1"}
    assert revoke(key) in (await connector(aws).observe()).entries

    assert (await c.apply(Diff(remove=(revoke(key),)))).done == [revoke(key)]
    got = api.get_api_key(apiKey=key)
    assert got["enabled"] is True and got["description"] == "lab key"


async def test_a_key_the_lab_disabled_is_neither_reported_nor_enabled_by_tollgate(
    aws: MotoServer,
) -> None:
    key = make_key(aws, "fraud-hold", enabled=False)
    c = connector(aws)
    assert revoke(key) not in (await c.observe()).entries
    await c.apply(Diff(remove=(revoke(key),)))
    assert aws.client("apigateway").get_api_key(apiKey=key)["enabled"] is False


async def test_rate_limits_move_keys_between_tier_plans_and_home_again(aws: MotoServer) -> None:
    api = aws.client("apigateway")
    tier60 = api.create_usage_plan(name="t60", throttle={"rateLimit": 1.0, "burstLimit": 1})
    tier600 = api.create_usage_plan(name="t600", throttle={"rateLimit": 10.0, "burstLimit": 10})
    home = api.create_usage_plan(name="standard")
    key = make_key(aws, "customer-2")
    api.create_usage_plan_key(usagePlanId=home["id"], keyId=key, keyType="API_KEY")

    def plans() -> set[str]:
        return {p["name"] for p in api.get_usage_plans(keyId=key)["items"]}

    c = connector(aws, usage_plans={tier60["id"]: 60, tier600["id"]: 600})
    assert EntryType.RATE_LIMIT in c.capabilities()
    assert (await c.apply(Diff(add=(limit(key, 100),)))).done == [limit(key, 100)]
    assert plans() == {"t60"}  # the strictest tier at or below 100/min, never looser
    assert (await c.apply(Diff(change=(limit(key, 1000),)))).done == [limit(key, 1000)]
    assert plans() == {"t600"}
    assert limit(key, 1000) in (await connector(aws).observe()).entries

    assert (await c.apply(Diff(remove=(limit(key, 1000),)))).done == [limit(key, 1000)]
    assert plans() == {"standard"}
    assert marks_of(api.get_api_key(apiKey=key)) == {}


async def test_a_limit_stricter_than_every_tier_accounts_and_unknown_keys_are_rejected(
    aws: MotoServer,
) -> None:
    api = aws.client("apigateway")
    tier = api.create_usage_plan(name="t60")
    key = make_key(aws, "customer-3")
    c = connector(aws, usage_plans={tier["id"]: 60})
    entries = (
        limit(key, 10),
        Entry(EntryType.RATE_LIMIT, "account", "acct_9", 60),
        Entry(EntryType.REVOKE_KEY, "org", "org_7"),
        revoke("nosuchkey1"),
    )
    result = await c.apply(Diff(add=entries))
    why = dict(result.rejected)
    assert set(why) == set(entries), result
    assert "add a stricter tier" in why[entries[0]]
    assert "no mapping from an account to its keys" in why[entries[1]]
    assert "no mapping from an org to its keys" in why[entries[2]]
    assert "no key with that id" in why[entries[3]]


async def test_keys_by_name(aws: MotoServer) -> None:
    key = make_key(aws, "lab-key-7")
    c = connector(aws, key_match="name")
    assert (await c.apply(Diff(add=(revoke("lab-key-7"),)))).done == [revoke("lab-key-7")]
    assert aws.client("apigateway").get_api_key(apiKey=key)["enabled"] is False
    assert revoke("lab-key-7") in (await connector(aws, key_match="name").observe()).entries


# -- the account's write rate, options, outages --------------------------------------------


async def test_writes_share_one_rate_per_account_and_region(aws: MotoServer) -> None:
    one = connector(aws, region="eu-west-3", writes_per_second=20.0, write_burst=1)
    two = connector(aws, region="eu-west-3", writes_per_second=20.0, write_burst=1)
    for i in range(3):
        await one.apply(Diff(add=(block(f"192.0.2.{i}"),)))
        await two.apply(Diff(add=(block(f"198.51.100.{i}"),)))
    limiter = await one._write_rate()
    assert limiter is await two._write_rate()  # one bucket for the account and Region
    assert limiter.waited_seconds > 0  # past the burst, writes were held back
    other = connector(aws, region="eu-west-2")
    await other.observe()
    assert await other._write_rate() is not limiter


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"region": "mars"}, "options.region 'mars' is not an AWS Region"),
        ({"scope": "GLOBAL"}, "options.scope must be one of 'REGIONAL', 'CLOUDFRONT'"),
        ({"ipv4_shards": "2"}, "options.ipv4_shards must be an int"),
        ({"addresses_per_set": 20_000}, "options.addresses_per_set must be a number from 1"),
        ({"usage_plans": {"p1": 0}}, "options.usage_plans['p1'] must be >= 1"),
        ({"usage_plans": {"p1": "x"}}, "options.usage_plans['p1'] must be an int"),
        ({"endpoint_url": "ftp://x"}, "options.endpoint_url must be http(s)://host[:port]"),
        ({"shards": 2}, "options: unknown ['shards']"),
        ({"writes_per_second": 0}, "options.writes_per_second must be more than 0, got 0"),
        ({"lock_attempts": 21}, "options.lock_attempts must be more than 0 and at most 20"),
        ({"waf": False, "api_gateway": False}, "options.waf and options.api_gateway are both"),
    ],
)
def test_option_errors_name_the_option(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConnectorError) as caught:
        connector(None, **options)
    assert message in str(caught.value) and caught.value.retryable is False


async def test_an_unreachable_endpoint_is_gateway_unavailable() -> None:
    c = connector(None, throttle_attempts=1, connect_timeout=0.5)
    with pytest.raises(GatewayUnavailable):
        await c.observe()
    health = await c.health()
    assert not health.ok
