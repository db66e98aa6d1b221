"""Hostile values never reach HAProxy's Runtime API: a zone id, `;`, a newline, a space
or non-ASCII digits once ended an `add acl` command and started `disable frontend
model_api`. The connector refuses every value not in canonical form (reported failed,
never sent); HAProxy's lists and files stay as they were and it keeps serving."""

from __future__ import annotations

import pytest

from controlplane.enforce.sdk import Diff, Entry, EntryType
from controlplane.enforce.targets import PrefixFloor
from tests.integration.connectors.haproxy_fixtures import (  # noqa: F401 (fixtures)
    Gateway,
    fingerprint,
    haproxy_binary_fixture,
    haproxy_by_id_fixture,
    haproxy_fixture,
    haproxy_id_fixture,
    haproxy_session_fixture,
    model_stub_fixture,
)

OK = 200
REFUSED = "refused before it reached the gateway"
INJECTED = "disable frontend model_api"

HOSTILE_BLOCKS = [
    Entry(EntryType.BLOCK, "cidr", f"fe80::%x;{INJECTED};/64"),
    Entry(EntryType.BLOCK, "ip", f"fe80::1%x;{INJECTED}"),
    Entry(EntryType.BLOCK, "ip", f"127.0.0.3;{INJECTED}"),
    Entry(EntryType.BLOCK, "ip", f"127.0.0.3\n{INJECTED}"),
    Entry(EntryType.BLOCK, "cidr", f"127.0.0.0/24\n{INJECTED}"),
    Entry(EntryType.BLOCK, "ip", "127.0.0.3 "),
    Entry(EntryType.BLOCK, "ip", " 127.0.0.3"),
    Entry(EntryType.BLOCK, "ip", "\u0661\u0662\u0667.\u0660.\u0660.\u0663"),  # Arabic-Indic digits
    Entry(EntryType.BLOCK, "cidr", "127.0.0.77/24"),  # host bits: not the canonical spelling
    Entry(EntryType.BLOCK, "ip", "::ffff:127.0.0.3"),  # Tollgate sends 127.0.0.3
    Entry(EntryType.BLOCK, "cidr", "0.0.0.0/0"),  # everyone
    Entry(EntryType.BLOCK, "cidr", "::/0"),
]


async def snapshot(gateway: Gateway) -> dict[str, tuple[str, str]]:
    """Each list as the runtime holds it and as its file says."""
    found = {}
    for path in gateway.proxy.files():
        kind = "acl" if path.suffix == ".acl" else "map"
        live = await gateway.runtime(f"show {kind} {path}")
        found[path.name] = (live, path.read_text(encoding="utf-8"))
    return found


async def assert_refused_and_unchanged(
    gateway: Gateway, hostile: list[Entry], **options: object
) -> None:
    before = await snapshot(gateway)

    result = await gateway.connector(**options).apply(Diff(add=tuple(hostile)))

    assert result.done == []
    assert {e for e, _ in result.rejected} == set(hostile)
    assert all(why.startswith(REFUSED) for _, why in result.rejected), result.rejected
    assert await snapshot(gateway) == before
    assert "model_api" in await gateway.runtime("show stat")


async def test_hostile_blocks_are_refused_and_haproxy_keeps_serving(haproxy: Gateway) -> None:
    good = Entry(EntryType.BLOCK, "ip", "127.0.0.2")
    done = await haproxy.connector().apply(Diff(add=(good,)))
    assert done.done == [good]

    await assert_refused_and_unchanged(haproxy, HOSTILE_BLOCKS)

    assert await haproxy.get("127.0.0.3") == OK  # the frontend still serves
    assert await haproxy.get("127.0.0.2") == 403  # and still enforces


async def test_a_large_hostile_change_is_refused_too(haproxy: Gateway) -> None:
    # Past bulk_threshold the connector stages the whole list (prepare/add @N/commit).
    good = [Entry(EntryType.BLOCK, "ip", "127.0.0.9"), Entry(EntryType.BLOCK, "ip", "127.0.0.10")]
    acl = haproxy.proxy.options.blocked_acl
    version = await haproxy.runtime("show acl")

    result = await haproxy.connector(bulk_threshold=2).apply(Diff(add=(*HOSTILE_BLOCKS, *good)))

    assert sorted(result.done, key=str) == sorted(good, key=str)
    assert len(result.rejected) == len(HOSTILE_BLOCKS)
    assert await haproxy.runtime("show acl") != version  # staged and committed
    held = [line.split()[-1] for line in (await haproxy.runtime(f"show acl {acl}")).splitlines()]
    assert held == ["127.0.0.9", "127.0.0.10"]
    assert await haproxy.get("127.0.0.3") == OK


@pytest.mark.parametrize(
    "value",
    [
        "key_3\n",
        f"key_3\n{INJECTED}",
        f"key_3;{INJECTED}",
        "key 3",
        "key_\u0663",
        "",
    ],
)
async def test_hostile_key_and_account_ids_never_reach_the_maps(
    haproxy_id: Gateway, value: str
) -> None:
    hostile = [
        Entry(EntryType.REVOKE_KEY, "api_key", value),
        Entry(EntryType.RATE_LIMIT, "api_key", value, 10),
        Entry(EntryType.RATE_LIMIT, "account", value, 10),
    ]

    await assert_refused_and_unchanged(haproxy_id, hostile)

    assert await haproxy_id.get(**{"x-api-key-id": "key_3"}) == OK


async def test_a_fingerprint_with_a_trailing_newline_is_refused(haproxy: Gateway) -> None:
    await assert_refused_and_unchanged(
        haproxy, [Entry(EntryType.REVOKE_KEY, "api_key", fingerprint("sk-1") + "\n")]
    )


async def test_the_floor_is_the_connectors(haproxy: Gateway) -> None:
    wide = Entry(EntryType.BLOCK, "cidr", "127.0.0.0/8")
    await assert_refused_and_unchanged(haproxy, [wide])

    connector = haproxy.connector()
    connector.min_prefix = PrefixFloor(ipv4=8, ipv6=32)  # what a provider's min_prefix sets
    result = await connector.apply(Diff(add=(wide,)))

    assert result.done == [wide]
    assert await haproxy.get("127.0.0.3") == 403
