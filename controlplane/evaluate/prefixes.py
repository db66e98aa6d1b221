"""A prefix index: items keyed by network, looked up by address."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from functools import lru_cache
from typing import Generic, TypeVar

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=65536)
def parse_address(text: str) -> Address:
    """An address parsed once: the same IPs recur across a batch and its lookups."""
    return ipaddress.ip_address(text)


class PrefixIndex(Generic[T]):
    """Items keyed by network: a lookup costs one dict probe per prefix length in use,
    whatever the number of networks (10k CIDRs cost what 10 do)."""

    def __init__(self) -> None:
        self._by_prefix: dict[tuple[int, int], dict[int, list[T]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self._prefixes: list[tuple[int, int]] = []
        self.size = 0

    def add(self, network: Network, item: T) -> None:
        key = (network.version, network.prefixlen)
        if key not in self._by_prefix:
            self._prefixes = sorted([*self._prefixes, key], key=lambda k: -k[1])
        self._by_prefix[key][int(network.network_address)].append(item)
        self.size += 1

    def lookup(self, address: Address) -> list[T]:
        bits = address.max_prefixlen
        value = int(address)
        found: list[T] = []
        for version, prefix in self._prefixes:
            if version == address.version:
                shift = bits - prefix
                found.extend(self._by_prefix[(version, prefix)].get(value >> shift << shift, ()))
        return found
