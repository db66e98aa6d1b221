"""The prefix index under CIDR actions, range remedies and intel: every item whose
network holds an address, one item or several per network, IPv4 and IPv6."""

from __future__ import annotations

import ipaddress

from controlplane.evaluate.context import NetworkSet
from controlplane.evaluate.prefixes import PrefixIndex, parse_address


def test_a_lookup_finds_every_item_of_every_network_holding_the_address() -> None:
    index: PrefixIndex[object] = PrefixIndex()
    wide, narrow, v6 = (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("10.1.2.0/24"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    index.add(narrow, "block-24")
    index.add(wide, "block-8")
    index.add(narrow, ["a", "list", "item"])  # an item that is itself a list
    index.add(narrow, "third")
    index.add(v6, "v6")

    assert sorted(map(str, index.lookup(parse_address("10.1.2.3")))) == sorted(
        ["block-24", "block-8", "['a', 'list', 'item']", "third"]
    )
    assert index.lookup(parse_address("10.9.9.9")) == ["block-8"]
    assert index.lookup(parse_address("11.0.0.1")) == []
    assert index.lookup(parse_address("2001:db8::1")) == ["v6"]
    assert index.lookup(parse_address("::ffff:10.1.2.3")) == []
    assert index.exact(narrow) == ["block-24", ["a", "list", "item"], "third"]
    assert index.exact(wide) == ["block-8"]
    assert index.exact(ipaddress.ip_network("10.1.0.0/16")) == []
    assert index.size == 5


def test_a_network_set_holds_each_network_once() -> None:
    networks = NetworkSet()
    for cidr in ("10.1.2.0/24", "10.1.2.0/24", "10.0.0.0/8", "not a network", "10.1.2.7/24"):
        networks.add(cidr)

    assert len(networks) == 3  # "10.1.2.7/24" is spelled otherwise: kept as given
    assert sorted(networks.holding("10.1.2.9")) == ["10.0.0.0/8", "10.1.2.0/24", "10.1.2.7/24"]
    assert networks.holding("192.0.2.1") == []
