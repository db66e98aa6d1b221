"""`IntelIndex`: which CIDR indicators hold an IP."""

from __future__ import annotations

from typing import Any

from controlplane.evaluate.context import IntelIndex


def ind(value: str, source: str = "lab-b", confidence: float = 0.9) -> dict[str, Any]:
    return {"value": value, "source": source, "confidence": confidence, "tlp": "amber"}


def cidrs(index: IntelIndex, ip: str) -> list[str]:
    return [m["cidr"] for m in index.matches(ip)]


def test_ipv4_match_reports_the_indicator() -> None:
    index = IntelIndex([ind("203.0.113.0/24", "lab-b", 0.9), ind("198.51.100.0/24")])

    assert index.matches("203.0.113.7") == [
        {
            "kind": "cidr",
            "value": "203.0.113.0/24",
            "cidr": "203.0.113.0/24",
            "ip": "203.0.113.7",
            "target": {"kind": "ip", "value": "203.0.113.7"},
            "source": "lab-b",
            "sources": ["lab-b"],
            "labs": 1,
            "enforceable_labs": 1,
            "confidence": 0.9,
            "tlp": "amber",
            "pap": "green",
            "indicators": [],
        }
    ]
    assert index.size == 2


def test_ipv6_match() -> None:
    index = IntelIndex([ind("2001:db8:abcd::/48"), ind("2001:db8:ffff::/48")])

    assert cidrs(index, "2001:db8:abcd:12::1") == ["2001:db8:abcd::/48"]
    assert cidrs(index, "2001:db8:1::1") == []


def test_overlapping_prefixes_all_match_longest_first() -> None:
    index = IntelIndex(
        [
            ind("10.0.0.0/8", "a"),
            ind("10.1.2.0/24", "c"),
            ind("10.1.0.0/16", "b"),
            ind("10.1.2.3/32", "d"),
        ]
    )

    assert cidrs(index, "10.1.2.3") == ["10.1.2.3/32", "10.1.2.0/24", "10.1.0.0/16", "10.0.0.0/8"]
    assert cidrs(index, "10.1.2.4") == ["10.1.2.0/24", "10.1.0.0/16", "10.0.0.0/8"]
    assert cidrs(index, "10.9.9.9") == ["10.0.0.0/8"]


def test_same_range_from_two_sources_is_one_match_naming_both() -> None:
    index = IntelIndex([ind("203.0.113.0/24", "lab-b"), ind("203.0.113.0/24", "lab-c")])

    [match] = index.matches("203.0.113.200")
    assert (match["sources"], match["labs"]) == (["lab-b", "lab-c"], 2)


def test_no_match() -> None:
    index = IntelIndex([ind("203.0.113.0/24"), ind("2001:db8::/32")])

    assert index.matches("203.0.114.1") == []
    assert index.matches("203.0.112.255") == []
    assert index.matches("2001:db9::1") == []
    assert IntelIndex([]).matches("192.0.2.1") == []


def test_families_never_cross() -> None:
    # ::/96 holds the IPv6 addresses whose low 32 bits look like IPv4 ones.
    index = IntelIndex([ind("::/96"), ind("0.0.0.0/8")])

    assert cidrs(index, "0.0.0.1") == ["0.0.0.0/8"]
    assert cidrs(index, "::1") == ["::/96"]


def test_default_routes_match_every_address_of_their_family() -> None:
    index = IntelIndex([ind("0.0.0.0/0"), ind("::/0")])

    assert cidrs(index, "192.0.2.1") == ["0.0.0.0/0"]
    assert cidrs(index, "2001:db8::1") == ["::/0"]


def test_host_bits_in_an_indicator_are_ignored_for_matching() -> None:
    index = IntelIndex([ind("203.0.113.77/24")])

    assert cidrs(index, "203.0.113.1") == ["203.0.113.77/24"]
    assert cidrs(index, "203.0.114.1") == []
