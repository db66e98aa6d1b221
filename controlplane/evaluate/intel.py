"""Matching a verdict against every indicator before evaluation, from in-memory
indexes, so `input.context.intel_matches` costs the same with ten indicators or two
million:

- IP ranges: a prefix index (one dict probe per prefix length in use);
- account, API key and org ids: hashed under every consortium key in force (a few
  HMACs per verdict), then one dict probe per hash;
- ASN (`verdict.signals.asn`) and detection signatures (by signal name): dict probes;
- org patterns: each pattern is tried (they are few; their count is shown in docs).

Each match aggregates every indicator naming the same thing: the labs that said it,
how many independent labs agree, and how many of them allow enforcement by PAP.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from controlplane.evaluate.prefixes import PrefixIndex, parse_address
from controlplane.intel.hashing import Keyring

TLP_ORDER = ("clear", "green", "amber", "amber+strict", "red")
PAP_ORDER = ("clear", "green", "amber", "red")
ENFORCEABLE_PAP = ("clear", "green")
"""PAP markings under which intel may drive enforcement a target can notice."""
_COMPARE = {
    "gte": float.__ge__,
    "gt": float.__gt__,
    "lte": float.__le__,
    "lt": float.__lt__,
    "eq": float.__eq__,
}


def effective_confidence(indicator: Mapping[str, Any], now: datetime | None) -> float:
    """Confidence after decay: halved every `decay_days` since it was last seen."""
    confidence = float(indicator["confidence"])
    half_life = indicator.get("decay_days")
    seen = indicator.get("last_seen") or indicator.get("first_seen") or indicator.get("created_at")
    if not half_life or now is None or seen is None:
        return confidence
    age_days = max(0.0, (now - seen).total_seconds() / 86400)
    return round(confidence * math.pow(0.5, age_days / float(half_life)), 4)


class IntelIndex:
    """Every indicator in force, indexed by what it names. Grows as indicators arrive;
    a revoked one is dropped (`drop`); an expired one stops matching at its expiry."""

    def __init__(
        self, indicators: Iterable[dict[str, Any]] = (), keyring: Keyring | None = None
    ) -> None:
        self.keyring = keyring or Keyring()
        self._prefixes: PrefixIndex[dict[str, Any]] = PrefixIndex()
        self._exact: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        self._signals: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._patterns: list[tuple[re.Pattern[str], dict[str, Any]]] = []
        self._by_id: dict[str, dict[str, Any]] = {}
        self.size = 0
        self.extend(indicators)

    def extend(self, indicators: Iterable[dict[str, Any]]) -> None:
        for indicator in indicators:
            if indicator.get("id"):
                self._by_id[indicator["id"]] = indicator
            kind = indicator.get("kind", "cidr")
            if kind == "cidr":
                self._prefixes.add(
                    ipaddress.ip_network(indicator["value"], strict=False), indicator
                )
            elif kind == "signature":
                detail = indicator.get("detail") or {}
                self._signals[str(detail.get("signal", indicator["value"]))].append(indicator)
            elif kind == "org_pattern":
                try:
                    self._patterns.append((re.compile(indicator["value"]), indicator))
                except re.error:
                    continue
            else:
                self._exact[(kind, indicator["value"])].append(indicator)
            self.size += 1

    def drop(self, indicator_ids: Iterable[str]) -> None:
        """Stop matching these indicators (revoked, or replaced by a newer version)."""
        for indicator_id in indicator_ids:
            entry = self._by_id.pop(indicator_id, None)
            if entry is not None:
                entry["dropped"] = True
                self.size -= 1

    def _live(self, found: Iterable[dict[str, Any]], now: datetime | None) -> list[dict[str, Any]]:
        return [
            i
            for i in found
            if not i.get("dropped")
            and (now is None or (e := i.get("expires_at")) is None or e > now)
        ]

    def matches(self, ip: str, now: datetime | None = None) -> list[dict[str, Any]]:
        """The IP's range matches (one per range)."""
        by_range: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for indicator in self._live(self._prefixes.lookup(parse_address(ip)), now):
            by_range[indicator["value"]].append(indicator)
        return [
            _match("cidr", cidr, {"kind": "ip", "value": ip}, found, now, cidr=cidr, ip=ip)
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
        found = [m for ip in ips for m in self.matches(ip, now)]
        for kind, raw in identifiers:
            hits: list[dict[str, Any]] = []
            for digest in self.keyring.hashes_for_matching(kind, raw, now) if self._exact else ():
                hits.extend(self._live(self._exact.get((kind, digest), ()), now))
            if hits:
                found.append(
                    _match(kind, hits[0]["value"], {"kind": kind, "value": raw}, hits, now)
                )
            if kind == "org":
                pattern_hits = self._live((i for p, i in self._patterns if p.fullmatch(raw)), now)
                for value in sorted({i["value"] for i in pattern_hits}):
                    same = [i for i in pattern_hits if i["value"] == value]
                    found.append(
                        _match("org_pattern", value, {"kind": "org", "value": raw}, same, now)
                    )
        asn = signals.get("asn")
        if asn is not None and self._exact:
            hits = self._live(self._exact.get(("asn", str(int(asn))), ()), now)
            if hits:
                found.append(
                    _match("asn", str(int(asn)), {"kind": "asn", "value": str(int(asn))}, hits, now)
                )
        for name, value in signals.items():
            candidates = self._live(self._signals.get(name, ()), now)
            hits = [i for i in candidates if _fires(i, float(value))]
            if hits:
                found.append(
                    _match("signature", name, {"kind": "signal", "value": name}, hits, now)
                )
        return found


def _fires(indicator: Mapping[str, Any], value: float) -> bool:
    detail = indicator.get("detail") or {}
    try:
        threshold = float(detail.get("threshold", "nan"))
    except ValueError:
        return False
    compare = _COMPARE.get(str(detail.get("op", "gte")))
    return compare is not None and bool(compare(value, threshold))


def _match(
    kind: str,
    value: str,
    target: dict[str, str],
    found: list[dict[str, Any]],
    now: datetime | None,
    **extra: str,
) -> dict[str, Any]:
    labs = sorted({i["source"] for i in found})
    enforceable = sorted({i["source"] for i in found if i.get("pap", "green") in ENFORCEABLE_PAP})
    confidence = max(effective_confidence(i, now) for i in found)
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
        "tlp": max((i.get("tlp", "amber") for i in found), key=TLP_ORDER.index),
        "pap": max((i.get("pap", "green") for i in found), key=PAP_ORDER.index),
        "indicators": sorted(str(i["id"]) for i in found if i.get("id")),
    }
