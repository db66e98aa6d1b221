"""A prefix index: items keyed by network, looked up by address."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Generic, TypeVar

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=65536)
def parse_address(text: str) -> Address:
    """An address parsed once: the same IPs recur across a batch and its lookups."""
    return ipaddress.ip_address(text)


class _Several(list):  # type: ignore[type-arg]
    """The items of one network when it has more than one (most have one, held bare:
    a list per network cost about 70 bytes each, 17 MB at 250,000 networks)."""


class PrefixIndex(Generic[T]):
    """Items keyed by network: a lookup costs one dict probe per prefix length in use,
    whatever the number of networks (10k CIDRs cost what 10 do)."""

    def __init__(self) -> None:
        self._by_prefix: dict[tuple[int, int], dict[int, T | _Several]] = {}
        self._prefixes: list[tuple[int, int]] = []
        self.size = 0

    def add(self, network: Network, item: T) -> None:
        key = (network.version, network.prefixlen)
        if key not in self._by_prefix:
            self._by_prefix[key] = {}
            self._prefixes = sorted([*self._prefixes, key], key=lambda k: -k[1])
        items = self._by_prefix[key]
        start = int(network.network_address)
        held = items.get(start, _NONE)
        if held is _NONE:
            items[start] = item
        elif type(held) is _Several:
            held.append(item)
        else:
            items[start] = _Several((held, item))
        self.size += 1

    def exact(self, network: Network) -> list[T]:
        """The items added under exactly this network."""
        items = self._by_prefix.get((network.version, network.prefixlen))
        held = _NONE if items is None else items.get(int(network.network_address), _NONE)
        if held is _NONE:
            return []
        return list(held) if type(held) is _Several else [held]  # type: ignore[list-item]

    def lookup(self, address: Address) -> list[T]:
        bits = address.max_prefixlen
        value = int(address)
        found: list[T] = []
        for version, prefix in self._prefixes:
            if version == address.version:
                shift = bits - prefix
                held = self._by_prefix[(version, prefix)].get(value >> shift << shift, _NONE)
                if held is _NONE:
                    continue
                if type(held) is _Several:
                    found.extend(held)
                else:
                    found.append(held)  # type: ignore[arg-type]
        return found


_NONE: object = object()
