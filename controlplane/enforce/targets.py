"""Canonical targets: the one spelling of every IP, CIDR and id Tollgate stores or sends.

Part of the connector toolkit, and the check every entry point uses (verdicts, intel,
exemptions, policy output), so what a connector receives was parsed by the same code
that it checks it with. It imports nothing of Tollgate's, so the domain and the
connectors can both use it.

Why so strict: Python's `ipaddress` accepts an IPv6 zone id with almost any text
(`fe80::%x;disable frontend api;/64` parses), and a gateway's command channel or
configuration file reads `;`, spaces and newlines as syntax. So a target is only the
characters an address or an id can have, parsed, then rendered back: a value is
canonical when it equals its rendering.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controlplane.enforce.sdk import Entry

_ADDRESS_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}")
"""What an IPv4 or IPv6 address can be made of (ASCII only: no zone id, no space)."""
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")
"""An IPv4 address as `ipaddress` spells it (what most verdicts carry): parsing it
again would cost five times the match."""
_PREFIX = re.compile(r"[0-9]{1,3}")
ID_CHARS = r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]*"
"""Account, key and org ids (the verdict schema's pattern too): no spaces, control
characters, quotes, `;`, `#`, `$` or backslashes, which map files and CLIs read as syntax."""
_IDENTIFIER = re.compile(ID_CHARS)
ID_MAX = 200
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
ID_KINDS = frozenset({"account", "api_key", "org"})


class TargetError(ValueError):
    """A value is not a target Tollgate accepts; the message says what it should be."""


class TooWide(TargetError):
    """A well-formed network wider than the prefix floor allows."""


@dataclass(frozen=True, slots=True)
class PrefixFloor:
    """The widest network a block may cover: a CIDR with a shorter prefix is refused."""

    ipv4: int = 16
    ipv6: int = 32


DEFAULT_FLOOR = PrefixFloor()
NO_FLOOR = PrefixFloor(0, 0)


def canonical_ip(text: str) -> str:
    """The address's one spelling; an IPv4-mapped IPv6 address (`::ffff:203.0.113.7`) is
    the IPv4 address, so it meets the same blocks and intel as its plain form."""
    if not isinstance(text, str) or not _ADDRESS_CHARS.fullmatch(text):
        raise TargetError(f"{text!r} is not an IPv4 or IPv6 address")
    if _DOTTED_QUAD.fullmatch(text):
        return text  # already its one spelling: no leading zeros, each part 0-255
    return _canonical_ip(text)


@functools.lru_cache(maxsize=65_536)
def _canonical_ip(text: str) -> str:
    """Cached: the same addresses come back in verdict after verdict, and parsing one
    costs more than the rest of its checks (a failure is raised, never cached)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise TargetError(f"{text!r} is not an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def canonical_cidr(text: str, floor: PrefixFloor = NO_FLOOR) -> str:
    """The network's one spelling: host bits cleared (`192.0.2.77/24` is `192.0.2.0/24`),
    an IPv4-mapped IPv6 network as IPv4; a bare address is its /32 or /128. Refused when
    wider than `floor` allows."""
    if not isinstance(text, str):
        raise TargetError(f"{text!r} is not a CIDR like 203.0.113.0/24")
    return _canonical_cidr(text, floor)


@functools.lru_cache(maxsize=16_384)
def _canonical_cidr(text: str, floor: PrefixFloor) -> str:
    address, slash, prefix = text.partition("/")
    if not _ADDRESS_CHARS.fullmatch(address) or (slash and not _PREFIX.fullmatch(prefix)):
        raise TargetError(f"{text!r} is not a CIDR like 203.0.113.0/24")
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise TargetError(f"{text!r} is not a CIDR like 203.0.113.0/24") from None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None  # inside ::ffff:0:0/96
        network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    least = floor.ipv4 if network.version == 4 else floor.ipv6
    if network.prefixlen < least:
        raise TooWide(
            f"{network} covers more than a block may (nothing wider than /{least} for "
            f"IPv{network.version}): name a narrower range, or raise the provider's "
            "min_prefix in the config file"
        )
    return str(network)


def canonical_id(text: str) -> str:
    """An account, key or org id, checked (ids have no other spelling to normalise)."""
    if not isinstance(text, str) or len(text) > ID_MAX or not _IDENTIFIER.fullmatch(text):
        raise TargetError(
            f"{text!r} is not an id: up to 200 of A-Z a-z 0-9 . _ : @ / + = -, "
            "starting with a letter or digit"
        )
    return text


def canonical_target(kind: str, value: str, floor: PrefixFloor = NO_FLOOR) -> str:
    """`value` as Tollgate stores a target of `kind`; `TargetError` says why not."""
    if kind == "ip":
        return canonical_ip(value)
    if kind == "cidr":
        return canonical_cidr(value, floor)
    if kind in ID_KINDS:
        return canonical_id(value)
    raise TargetError(f"{kind!r} is not a target kind (account, api_key, org, ip, cidr)")


def refusal(entry: Entry, floor: PrefixFloor = DEFAULT_FLOOR) -> str:
    """Why a connector must not send `entry` to its gateway ('' when it may): its value
    is not in canonical form, or is a network wider than `floor`. Tollgate stores only
    canonical targets, so a refusal means a value got past every check before this one:
    it is reported, never sent."""
    try:
        canonical = canonical_target(entry.target_kind, entry.target_value, floor)
    except TargetError as exc:
        if entry.target_kind in ID_KINDS:  # a key id is never quoted in a reason
            return (
                f"refused before it reached the gateway: the {entry.target_kind} id has "
                "characters other than A-Z a-z 0-9 . _ : @ / + = - (or is empty or too long)"
            )
        return f"refused before it reached the gateway: {exc}"
    if canonical != entry.target_value:
        return (
            f"refused before it reached the gateway: {entry.target_value!r} is not "
            f"canonical (Tollgate sends {canonical!r})"
        )
    return ""
