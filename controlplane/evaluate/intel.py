"""Matching a verdict against every indicator before evaluation, from in-memory
indexes, so `input.context.intel_matches` costs the same with ten indicators or two
million:

- IP ranges: per prefix length in use, a sorted array of network numbers (one binary
  search per prefix length);
- account, API key and org ids: hashed under every consortium key in force (a few
  HMACs per verdict), then one binary search per hash in a sorted array of the digests'
  first 64 bits, checked against the whole digest;
- ASN (`verdict.signals.asn`) and detection signatures (by signal name): dict probes;
- org patterns: each pattern is tried (they are few; their count is shown in docs).

Each match aggregates every indicator naming the same thing: the labs that said it,
how many independent labs agree, and how many of them allow enforcement by PAP.

Memory: an indicator is a slot number into packed columns (`array`s of numbers,
indexes into small tables of the labs' names and markings, one blob of ids), not a
dict; the sorted arrays take additions in a small dict first and merge them once it
outgrows an eighth of the array, so a full load and a trickle of changes both stay
cheap.
"""

from __future__ import annotations

import ipaddress
import math
import re
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from controlplane.evaluate.prefixes import Address, parse_address
from controlplane.intel.hashing import Keyring

TLP_ORDER = ("clear", "green", "amber", "amber+strict", "red")
PAP_ORDER = ("clear", "green", "amber", "red")
ENFORCEABLE_PAP = ("clear", "green")
"""PAP markings under which intel may drive enforcement a target can notice."""
HASHED = ("account", "api_key", "org", "payment")
_COMPARE = {
    "gte": float.__ge__,
    "gt": float.__gt__,
    "lte": float.__le__,
    "lt": float.__lt__,
    "eq": float.__eq__,
}
_TLP_RANK = {m: i for i, m in enumerate(TLP_ORDER)}
_PAP_RANK = {m: i for i, m in enumerate(PAP_ORDER)}
_HEX = frozenset("0123456789abcdef")
_MASK64 = (1 << 64) - 1
_NONE = math.nan


def effective_confidence(indicator: Mapping[str, Any], now: datetime | None) -> float:
    """Confidence after decay: halved every `decay_days` since it was last seen."""
    seen = indicator.get("last_seen") or indicator.get("first_seen") or indicator.get("created_at")
    return _decayed(
        float(indicator["confidence"]),
        float(indicator.get("decay_days") or _NONE),
        seen.timestamp() if seen is not None else _NONE,
        now.timestamp() if now is not None else None,
    )


def _decayed(confidence: float, half_life: float, seen: float, now: float | None) -> float:
    if half_life != half_life or not half_life or now is None or seen != seen:  # NaN: none
        return confidence
    age_days = max(0.0, (now - seen) / 86400)
    return round(confidence * math.pow(0.5, age_days / half_life), 4)


class _Table:
    """Small strings (labs, markings, kinds, key ids) stored once, named by number."""

    __slots__ = ("names", "numbers")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.numbers: dict[str, int] = {}

    def number(self, name: str) -> int:
        found = self.numbers.get(name)
        if found is None:
            found = self.numbers[name] = len(self.names)
            self.names.append(name)
        return found


class _SortedSlots:
    """Integer key -> slots. A sorted pair of arrays (keys, slots) searched by bisection
    within the stretch a directory of the keys' top bits points to (a few keys), and a
    dict of recent additions merged into the arrays once it passes an eighth of their
    size: a bulk load sorts once, a trickle of changes costs a dict insert."""

    __slots__ = (
        "_pending",
        "_width",
        "directory",
        "keys",
        "recent",
        "recent_count",
        "shift",
        "slots",
    )
    MERGE_AT = 4096

    def __init__(self, width: int = 64) -> None:
        self._width = width
        # Keys wider than 64 bits (IPv6 networks) live in a list of ints.
        self.keys: array[int] | list[int] = [] if width > 64 else array("Q")
        self.slots: array[int] = array("I")
        self.directory: array[int] = array("I", [0, 0])
        """directory[b]: the first position whose key's top bits are >= b."""
        self.shift = width
        self.recent: dict[int, list[int]] = {}
        self.recent_count = 0
        self._pending: list[int] = []

    def add(self, key: int, slot: int) -> None:
        self._pending.append((key << 32) | slot)

    def settle(self) -> None:
        """Take the additions since the last call: merged into the sorted arrays when
        they are many, else kept in the dict."""
        pending, self._pending = self._pending, []
        if self.recent_count + len(pending) > max(self.MERGE_AT, len(self.keys) >> 3):
            self._merge(pending)
            return
        for packed in pending:
            self.recent.setdefault(packed >> 32, []).append(packed & 0xFFFFFFFF)
        self.recent_count += len(pending)

    def _merge(self, pending: list[int]) -> None:
        merged = [(k << 32) | s for k, s in zip(self.keys, self.slots, strict=True)]
        merged.extend((k << 32) | s for k, slots in self.recent.items() for s in slots)
        merged.extend(pending)
        merged.sort()  # the old arrays are one sorted run: timsort merges, hardly sorts
        keys = (p >> 32 for p in merged)
        self.keys = list(keys) if isinstance(self.keys, list) else array("Q", keys)
        self.slots = array("I", (p & 0xFFFFFFFF for p in merged))
        self.recent, self.recent_count = {}, 0
        # About two keys per stretch, at most 2**21 stretches (8 MB).
        bits = 0 if self._width > 64 else min(21, max(0, len(merged).bit_length() - 1))
        self.shift = self._width - bits
        self.directory = array(
            "I", (bisect_left(self.keys, b << self.shift) for b in range((1 << bits) + 1))
        )

    def get(self, key: int) -> list[int]:
        found: list[int] = []
        top = key >> self.shift
        lo, hi = self.directory[top], self.directory[top + 1]
        if lo != hi:
            keys = self.keys
            i = bisect_left(keys, key, lo, hi)
            while i < hi and keys[i] == key:
                found.append(self.slots[i])
                i += 1
        if self.recent:
            found += self.recent.get(key, ())
        return found


class IntelIndex:
    """Every indicator in force, indexed by what it names. Grows as indicators arrive;
    a revoked one is dropped (`drop`); an expired one stops matching at its expiry."""

    def __init__(
        self, indicators: Iterable[Mapping[str, Any]] = (), keyring: Keyring | None = None
    ) -> None:
        self.keyring = keyring or Keyring()
        self.size = 0
        # One entry per slot in each column.
        self._id_blob = bytearray()
        self._id_ends: array[int] = array("Q")
        self._kind: array[int] = array("B")
        self._source: array[int] = array("H")
        self._tlp: array[int] = array("B")
        self._pap: array[int] = array("B")
        self._confidence: array[float] = array("d")
        self._decay: array[float] = array("d")
        self._seen: array[float] = array("d")
        self._expires: array[float] = array("d")
        self._dropped = bytearray()
        self._digests = bytearray()
        """32 bytes per hashed-identifier slot, in slot order."""
        self._digest_at: array[int] = array("i")
        """Where a slot's digest starts in `_digests` (in 32-byte units; -1: none)."""
        self._tag: array[int] = array("H")
        """A range's prefix length; a hashed identifier's consortium key id (a `_key_ids`
        number)."""
        self._extra: dict[int, tuple[str, Mapping[str, Any] | None]] = {}
        """The value (and detail) of the slots whose value the index cannot rebuild:
        ASNs, patterns, signatures, ranges written with host bits."""
        self._kinds, self._sources, self._markings, self._key_ids = (
            _Table(),
            _Table(),
            _Table(),
            _Table(),
        )
        # What the slots name.
        self._ids = _SortedSlots()
        self._ranges: dict[tuple[int, int], _SortedSlots] = {}
        self._families: dict[int, list[tuple[int, _SortedSlots]]] = {}
        """Per IP version, (prefix length, ranges), longest prefix first."""
        self._hashes: dict[str, _SortedSlots] = {}
        self._exact: dict[tuple[str, str], list[int]] = {}
        self._exact_kinds: set[str] = set()
        self._signals: dict[str, list[int]] = {}
        self._patterns: list[tuple[re.Pattern[str], int]] = []
        self.extend(indicators)

    # -- building ---------------------------------------------------------------------

    def extend(self, indicators: Iterable[Mapping[str, Any]]) -> None:
        for indicator in indicators:
            self._add(indicator)
        self._ids.settle()
        for ranges in self._ranges.values():
            ranges.settle()
        for hashes in self._hashes.values():
            hashes.settle()

    def _add(self, indicator: Mapping[str, Any]) -> None:
        kind = str(indicator.get("kind", "cidr"))
        value = str(indicator["value"])
        slot = len(self._kind)
        if kind == "cidr":
            network = ipaddress.ip_network(value, strict=False)
        elif kind == "org_pattern":
            try:
                pattern = re.compile(value)
            except re.error:
                return
        identifier = str(indicator.get("id") or "")
        self._id_blob += identifier.encode()
        self._id_ends.append(len(self._id_blob))
        if identifier:
            self._ids.add(hash(identifier) & _MASK64, slot)
        self._kind.append(self._kinds.number(kind))
        self._source.append(self._sources.number(str(indicator["source"])))
        self._tlp.append(self._markings.number(str(indicator.get("tlp", "amber"))))
        self._pap.append(self._markings.number(str(indicator.get("pap", "green"))))
        self._confidence.append(float(indicator["confidence"]))
        self._decay.append(float(indicator.get("decay_days") or _NONE))
        seen = indicator.get("last_seen") or indicator.get("first_seen")
        seen = seen or indicator.get("created_at")
        self._seen.append(seen.timestamp() if seen is not None else _NONE)
        expires = indicator.get("expires_at")
        self._expires.append(expires.timestamp() if expires is not None else math.inf)
        self._dropped.append(0)
        self._digest_at.append(-1)
        self._tag.append(0)
        self.size += 1
        if kind == "cidr":
            key = (network.version, network.prefixlen)
            ranges = self._ranges.get(key)
            if ranges is None:
                ranges = self._ranges[key] = _SortedSlots(network.max_prefixlen)
                self._families[network.version] = sorted(
                    ((p, r) for (v, p), r in self._ranges.items() if v == network.version),
                    key=lambda pr: -pr[0],
                )
            ranges.add(int(network.network_address), slot)
            self._tag[slot] = network.prefixlen
            if str(network) != value:
                self._extra[slot] = (value, None)
        elif kind == "signature":
            detail = indicator.get("detail") or {}
            self._signals.setdefault(str(detail.get("signal", value)), []).append(slot)
            self._extra[slot] = (value, detail)
        elif kind == "org_pattern":
            self._patterns.append((pattern, slot))
            self._extra[slot] = (value, None)
        elif kind in HASHED and (digest := _keyed_digest(value)) is not None:
            key_id, raw = digest
            self._digest_at[slot] = len(self._digests) // 32
            self._digests += raw
            self._tag[slot] = self._key_ids.number(key_id)
            hashes = self._hashes.get(kind)
            if hashes is None:
                hashes = self._hashes[kind] = _SortedSlots()
            hashes.add(int.from_bytes(raw[:8]), slot)
        else:
            self._exact.setdefault((kind, value), []).append(slot)
            self._exact_kinds.add(kind)
            self._extra[slot] = (value, None)

    def drop(self, indicator_ids: Iterable[str]) -> None:
        """Stop matching these indicators (revoked, or replaced by a newer version)."""
        for indicator_id in indicator_ids:
            for slot in self._ids.get(hash(indicator_id) & _MASK64):
                if not self._dropped[slot] and self._id(slot) == indicator_id:
                    self._dropped[slot] = 1
                    self.size -= 1

    # -- reading a slot ---------------------------------------------------------------

    def _id(self, slot: int) -> str:
        start = self._id_ends[slot - 1] if slot else 0
        return self._id_blob[start : self._id_ends[slot]].decode()

    def _live(self, slots: Iterable[int], now: float | None) -> list[int]:
        dropped, expires = self._dropped, self._expires
        return [s for s in slots if not dropped[s] and (now is None or expires[s] > now)]

    def _hash_hits(self, kind: str, probe: str) -> list[int]:
        """Slots holding this keyed hash (`probe` as the keyring writes it)."""
        hashes = self._hashes.get(kind)
        key_id, _, hexdigest = probe.partition(":")
        if hashes is None or len(hexdigest) != 64:
            return []
        candidates = hashes.get(int(hexdigest[:16], 16))
        if not candidates:
            return candidates
        raw, key_number = bytes.fromhex(hexdigest), self._key_ids.numbers.get(key_id)
        found = []
        for slot in candidates:
            at = self._digest_at[slot] * 32
            if self._tag[slot] == key_number and self._digests[at : at + 32] == raw:
                found.append(slot)
        return found

    # -- matching ---------------------------------------------------------------------

    def matches(self, ip: str, now: datetime | None = None) -> list[dict[str, Any]]:
        """The IP's range matches (one per range, longest prefix first)."""
        return self._range_matches(ip, parse_address(ip), _stamp(now))

    def _range_matches(
        self, ip: str, address: Address, stamp: float | None
    ) -> list[dict[str, Any]]:
        bits, number, family = address.max_prefixlen, int(address), address.version
        slots: list[int] = []
        for prefix, ranges in self._families.get(family, ()):
            shift = bits - prefix
            slots += ranges.get(number >> shift << shift)
        if not slots:
            return []
        by_range: dict[str, list[int]] = {}
        for slot in self._live(slots, stamp):
            extra = self._extra.get(slot)
            if extra:
                cidr = extra[0]
            else:
                prefix = self._tag[slot]
                cidr = _network_text(family, number >> (bits - prefix) << (bits - prefix), prefix)
            by_range.setdefault(cidr, []).append(slot)
        return [
            self._match("cidr", cidr, {"kind": "ip", "value": ip}, found, stamp, cidr=cidr, ip=ip)
            for cidr, found in by_range.items()
        ]

    def match_verdict(
        self,
        ips: Iterable[str],
        identifiers: Iterable[tuple[str, str]],
        signals: Mapping[str, float],
        now: datetime,
    ) -> list[dict[str, Any]]:
        """Every match for one verdict: its IPs, hashed identifiers, ASN, org patterns
        and detection signatures."""
        stamp = _stamp(now)
        found = []
        if self._ranges:
            for ip in ips:
                found.extend(self._range_matches(ip, parse_address(ip), stamp))
        for kind, raw in identifiers:
            if kind in self._hashes or kind in self._exact_kinds:
                hits: list[int] = []
                first = ""
                for probe in self.keyring.hashes_for_matching(kind, raw, now):
                    live = self._live(self._hash_hits(kind, probe), stamp)
                    if (kind, probe) in self._exact:
                        live += self._live(self._exact[(kind, probe)], stamp)
                    if live and not hits:
                        first = probe
                    hits.extend(live)
                if hits:
                    found.append(
                        self._match(kind, first, {"kind": kind, "value": raw}, hits, stamp)
                    )
            if kind == "org" and self._patterns:
                pattern_hits = self._live((s for p, s in self._patterns if p.fullmatch(raw)), stamp)
                by_value: dict[str, list[int]] = {}
                for slot in pattern_hits:
                    by_value.setdefault(self._extra[slot][0], []).append(slot)
                for value in sorted(by_value):
                    found.append(
                        self._match(
                            "org_pattern",
                            value,
                            {"kind": "org", "value": raw},
                            by_value[value],
                            stamp,
                        )
                    )
        asn = signals.get("asn")
        if asn is not None and self._exact:
            number = str(int(asn))
            hits = self._live(self._exact.get(("asn", number), ()), stamp)
            if hits:
                found.append(
                    self._match("asn", number, {"kind": "asn", "value": number}, hits, stamp)
                )
        for name, measured in signals.items():
            candidates = self._live(self._signals.get(name, ()), stamp)
            hits = [s for s in candidates if _fires(self._extra[s][1] or {}, float(measured))]
            if hits:
                found.append(
                    self._match("signature", name, {"kind": "signal", "value": name}, hits, stamp)
                )
        return found

    def _match(
        self,
        kind: str,
        value: str,
        target: dict[str, str],
        found: list[int],
        stamp: float | None,
        **extra: str,
    ) -> dict[str, Any]:
        sources, markings = self._sources.names, self._markings.names
        labs = sorted({sources[self._source[s]] for s in found})
        enforceable = sorted(
            {sources[self._source[s]] for s in found if markings[self._pap[s]] in ENFORCEABLE_PAP}
        )
        confidence = max(
            _decayed(self._confidence[s], self._decay[s], self._seen[s], stamp) for s in found
        )
        tlps = {markings[self._tlp[s]] for s in found}
        paps = {markings[self._pap[s]] for s in found}
        return {
            "kind": kind,
            "value": value,
            **extra,
            "target": target,
            "source": labs[0],
            "sources": labs,
            "labs": len(labs),
            "enforceable_labs": len(enforceable),
            "confidence": confidence,
            "tlp": max(tlps, key=lambda m: _TLP_RANK.get(m, 9)) if len(tlps) > 1 else tlps.pop(),
            "pap": max(paps, key=lambda m: _PAP_RANK.get(m, 9)) if len(paps) > 1 else paps.pop(),
            "indicators": sorted(i for s in found if (i := self._id(s))),
        }


def _stamp(now: datetime | None) -> float | None:
    return now.timestamp() if now is not None else None


def _keyed_digest(value: str) -> tuple[str, bytes] | None:
    """`<key id>:<64 hex>` as (key id, 32 bytes); None for anything else."""
    key_id, _, digest = value.partition(":")
    if not key_id or len(digest) != 64 or not _HEX.issuperset(digest):
        return None
    return key_id, bytes.fromhex(digest)


def _network_text(version: int, network: int, prefix: int) -> str:
    if version == 4:
        return (
            f"{network >> 24}.{network >> 16 & 255}.{network >> 8 & 255}.{network & 255}/{prefix}"
        )
    return f"{ipaddress.IPv6Address(network)}/{prefix}"


def _fires(detail: Mapping[str, Any], value: float) -> bool:
    try:
        threshold = float(detail.get("threshold", "nan"))
    except ValueError:
        return False
    compare = _COMPARE.get(str(detail.get("op", "gte")))
    return compare is not None and bool(compare(value, threshold))
