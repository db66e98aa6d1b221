"""The policy input's `history` and `context`, computed before evaluation so policies
stay fast and run unchanged on a stock OPA server (DESIGN.md, 'The policy contract')."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from controlplane.domain.verdict import Verdict

HISTORY_WINDOW = timedelta(days=30)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class IntelIndex:
    """CIDR indicators by prefix length: a lookup costs one dict probe per length in use."""

    def __init__(self, indicators: list[dict[str, Any]]) -> None:
        self._by_prefix: dict[tuple[int, int], dict[int, list[dict[str, Any]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for indicator in indicators:
            net = ipaddress.ip_network(indicator["value"], strict=False)
            key = (net.version, net.prefixlen)
            self._by_prefix[key][int(net.network_address)].append(indicator)
        self._prefixes = sorted(self._by_prefix, key=lambda k: -k[1])
        self.size = len(indicators)

    def matches(self, ip: str) -> list[dict[str, Any]]:
        address = ipaddress.ip_address(ip)
        bits = address.max_prefixlen
        value = int(address)
        found = []
        for version, prefix in self._prefixes:
            if version != address.version:
                continue
            network = value >> (bits - prefix) << (bits - prefix) if prefix else 0
            for indicator in self._by_prefix[(version, prefix)].get(network, ()):
                found.append(
                    {
                        "cidr": indicator["value"],
                        "ip": ip,
                        "source": indicator["source"],
                        "confidence": indicator["confidence"],
                        "tlp": indicator["tlp"],
                    }
                )
        return found


RECENT_VERDICTS = 20
"""How many earlier verdicts `history.recent_verdicts` lists (newest first)."""


@dataclass
class PriorVerdict:
    id: str
    account_id: str | None
    api_key_id: str | None
    observed_at: datetime
    received_at: datetime
    score: float
    confidence: float
    detector: str


@dataclass
class Lookups:
    """What one batch's inputs are built from, fetched in a few queries, then kept
    current in memory as earlier verdicts of the batch are decided."""

    actions: dict[tuple[str, str, str], list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    """Active, non-shadow actions by (provider, target kind, target value)."""
    cidr_actions: dict[str, list[tuple[Network, dict[str, Any]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    verdicts: dict[tuple[str, str, str], list[PriorVerdict]] = field(
        default_factory=lambda: defaultdict(list)
    )
    """Stored verdicts by (provider, 'account'|'api_key', id), this batch's included:
    each counts only those received before it."""
    exemptions: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    intel: IntelIndex = field(default_factory=lambda: IntelIndex([]))

    def add_action(self, provider: str, action: dict[str, Any]) -> None:
        target = action["target"]
        if target["kind"] == "cidr":
            self.cidr_actions[provider].append((ipaddress.ip_network(target["value"]), action))
        else:
            self.actions[(provider, target["kind"], target["value"])].append(action)


def build_input(
    verdict: Verdict, received_at: datetime, lookups: Lookups, now: datetime
) -> dict[str, Any]:
    """The OPA `input` for one verdict."""
    provider = verdict.provider
    keys = verdict.subject.targets()
    active: list[dict[str, Any]] = []
    seen: set[str] = set()
    for kind, value in keys:
        for action in lookups.actions.get((provider, kind, value), ()):
            if action["id"] not in seen and _active(action, now):
                seen.add(action["id"])
                active.append(action)
    addresses = [ipaddress.ip_address(ip) for ip in verdict.subject.ips]
    for network, action in lookups.cidr_actions.get(provider, ()):
        if (
            action["id"] not in seen
            and _active(action, now)
            and any(a in network for a in addresses)
        ):
            seen.add(action["id"])
            active.append(action)

    exemption = next(
        (e for kind, value in keys if (e := lookups.exemptions.get((provider, kind, value)))),
        None,
    )
    intel = [match for ip in verdict.subject.ips for match in lookups.intel.matches(ip)]
    prior = _prior(verdict, received_at, lookups)
    return {
        "verdict": verdict.document(),
        "history": {
            "active_actions": active,
            "verdicts_30d": len(prior),
            "recent_verdicts": [
                {
                    "id": p.id,
                    "observed_at": _rfc3339(p.observed_at),
                    "score": p.score,
                    "confidence": p.confidence,
                    "detector": p.detector,
                }
                for p in prior[:RECENT_VERDICTS]
            ],
            "appeals": [],
        },
        "context": {
            "exempt": exemption is not None,
            "exemption": exemption,
            "intel_matches": intel,
        },
        "now": _rfc3339(now),
    }


def _active(action: dict[str, Any], now: datetime) -> bool:
    expires = action.get("expires_at")
    return expires is None or datetime.fromisoformat(expires) > now


def _prior(verdict: Verdict, received_at: datetime, lookups: Lookups) -> list[PriorVerdict]:
    """Earlier verdicts (received before this one) about the same account or key,
    observed in the 30 days before this one; newest first."""
    since = verdict.observed_at - HISTORY_WINDOW
    found: dict[str, PriorVerdict] = {}
    for kind, value in (
        ("account", verdict.subject.account_id),
        ("api_key", verdict.subject.api_key_id),
    ):
        if not value:
            continue
        for prior in lookups.verdicts.get((verdict.provider, kind, value), ()):
            if prior.received_at < received_at and prior.observed_at >= since:
                found[prior.id] = prior
    return sorted(found.values(), key=lambda p: (p.observed_at, p.received_at), reverse=True)


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def subject_overlaps(verdicts: list[Verdict]) -> list[int]:
    """Wave number per verdict: a verdict waits for every earlier verdict of the batch
    that shares a subject key with it, so a repeat sees what the first one planned."""
    last_wave: dict[tuple[str, str, str], int] = {}
    waves = []
    for verdict in verdicts:
        keys = [(verdict.provider, kind, value) for kind, value in verdict.subject.targets()]
        wave = 1 + max((last_wave.get(k, -1) for k in keys), default=-1)
        for k in keys:
            last_wave[k] = wave
        waves.append(wave)
    return waves
