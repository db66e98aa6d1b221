"""Canonical targets: one spelling per IP, CIDR and id, and nothing a gateway could read
as syntax (the zone id `fe80::%x;disable frontend model_api;/64` once reached HAProxy's
Runtime API and paused a frontend)."""

from __future__ import annotations

import ipaddress

import pytest

from controlplane.enforce.sdk import Entry, EntryType
from controlplane.enforce.targets import (
    NO_FLOOR,
    PrefixFloor,
    TargetError,
    TooWide,
    canonical_cidr,
    canonical_id,
    canonical_ip,
    canonical_target,
    refusal,
)

HOSTILE_ADDRESSES = [
    "fe80::%x;disable frontend model_api;/64",
    "fe80::1%eth0",
    "fe80::1%25eth0",
    "192.0.2.7;shutdown sessions",
    "192.0.2.7\n",
    "192.0.2.7\nset map x y",
    " 192.0.2.7",
    "192.0.2.7 ",
    "192.0.2.7\t",
    "192.0.2.7\x00",
    "\u0661\u0669\u0662.\u0660.\u0662.\u0667",  # Arabic-Indic digits
    "192.0.2.\uff17",  # a fullwidth digit
    "",
    "0x7f.0.0.1",
]


@pytest.mark.parametrize("value", HOSTILE_ADDRESSES)
def test_hostile_addresses_are_refused(value: str) -> None:
    for kind in ("ip", "cidr"):
        with pytest.raises(TargetError):
            canonical_target(kind, value)


@pytest.mark.parametrize(
    "value",
    [
        "fe80::%x;disable frontend model_api;/64",
        "fe80::1%eth0/64",
        "192.0.2.0/24;x",
        "192.0.2.0/ 24",
        "192.0.2.0/24\n",
        "192.0.2.0/\u0662\u0664",
        "192.0.2.0/255.255.255.0",
        "192.0.2.0/",
        "192.0.2.0/33",
    ],
)
def test_hostile_networks_are_refused(value: str) -> None:
    with pytest.raises(TargetError):
        canonical_cidr(value)


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:DB8:0::1", "2001:db8::1"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
    ],
)
def test_addresses_have_one_spelling(value: str, canonical: str) -> None:
    assert canonical_ip(value) == canonical


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("192.0.2.77/24", "192.0.2.0/24"),
        ("192.0.2.7", "192.0.2.7/32"),
        ("2001:db8:0:0:1::/64", "2001:db8::/64"),
        ("::ffff:198.51.100.9/120", "198.51.100.0/24"),
        ("192.0.2.0/024", "192.0.2.0/24"),
    ],
)
def test_networks_have_one_spelling(value: str, canonical: str) -> None:
    assert canonical_cidr(value) == canonical


@pytest.mark.parametrize(
    "value", ["0.0.0.0/0", "::/0", "192.0.2.77/0", "10.0.0.0/8", "2001:db8::/31", "::ffff:0:0/96"]
)
def test_default_floor_refuses_wider_networks(value: str) -> None:
    with pytest.raises(TooWide, match="covers more than a block may"):
        canonical_cidr(value, PrefixFloor())


def test_floor_is_per_family_and_inclusive() -> None:
    floor = PrefixFloor(ipv4=20, ipv6=48)

    assert canonical_cidr("10.16.0.0/20", floor) == "10.16.0.0/20"
    assert canonical_cidr("2001:db8:1::/48", floor) == "2001:db8:1::/48"
    with pytest.raises(TooWide, match="/20 for IPv4"):
        canonical_cidr("10.16.0.0/19", floor)
    with pytest.raises(TooWide, match="/48 for IPv6"):
        canonical_cidr("2001:db8::/47", floor)
    assert canonical_cidr("0.0.0.0/0", NO_FLOOR) == "0.0.0.0/0"


@pytest.mark.parametrize(
    "value",
    [
        "key 3",
        "key_3;",
        "key_3\n",
        "key_3\r\nadd map",
        "-key",
        '"key"',
        "key#1",
        "k\u00e9y",
        "k\x00",
        "",
    ],
)
def test_ids_with_syntax_characters_are_refused(value: str) -> None:
    for kind in ("account", "api_key", "org"):
        with pytest.raises(TargetError):
            canonical_target(kind, value)


def test_ids_are_kept_as_given() -> None:
    assert canonical_id("acct_9") == "acct_9"
    assert canonical_id("a" * 200) == "a" * 200
    with pytest.raises(TargetError):
        canonical_id("a" * 201)


def test_a_connector_refuses_what_is_not_canonical() -> None:
    block = EntryType.BLOCK
    assert refusal(Entry(block, "ip", "192.0.2.7")) == ""
    assert refusal(Entry(block, "cidr", "192.0.2.0/24")) == ""
    assert refusal(Entry(EntryType.REVOKE_KEY, "api_key", "key_3")) == ""

    assert "is not canonical" in refusal(Entry(block, "cidr", "192.0.2.77/24"))
    assert "is not canonical" in refusal(Entry(block, "ip", "::ffff:192.0.2.7"))
    assert "covers more than" in refusal(Entry(block, "cidr", "0.0.0.0/0"))
    assert "not an IPv4 or IPv6" in refusal(Entry(block, "ip", "fe80::1%eth0"))
    assert refusal(Entry(block, "cidr", "10.0.0.0/8"), PrefixFloor(8, 32)) == ""


def test_a_refused_key_id_is_not_quoted_in_the_reason() -> None:
    why = refusal(Entry(EntryType.REVOKE_KEY, "api_key", "secret-ish key\n"))

    assert why.startswith("refused before it reached the gateway")
    assert "secret-ish" not in why


OCTET_SPELLINGS = [str(i) for i in range(256)] + ["00", "01", "001", "010", "256", "300", "", "1 "]


@pytest.mark.parametrize("position", range(4))
def test_an_ipv4_address_is_spelled_as_ipaddress_spells_it(position: int) -> None:
    # Every spelling of one octet, the others plain: the shortcut for an address already
    # in its one spelling never lets through one `ipaddress` refuses or spells otherwise.
    for octet in OCTET_SPELLINGS:
        parts = ["198", "51", "100", "7"]
        parts[position] = octet
        text = ".".join(parts)
        try:
            expected: str | None = str(ipaddress.ip_address(text))
        except ValueError:
            expected = None
        try:
            got: str | None = canonical_ip(text)
        except TargetError:
            got = None
        assert got == expected, text
