"""The policy input's `history` and `context`, computed before evaluation so policies
stay fast and run unchanged on a stock OPA server (DESIGN.md, 'The policy contract')."""

from __future__ import annotations

import functools
import heapq
import ipaddress
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from controlplane.customers.repository import FIRST_NETWORKS, Scope, ScopesRead, Tally
from controlplane.domain.verdict import Verdict
from controlplane.domain.vocabulary import ACTED_ON
from controlplane.evaluate.intel import IntelIndex
from controlplane.evaluate.prefixes import Address, Network, PrefixIndex, parse_address

HISTORY_WINDOW = timedelta(days=30)
T = TypeVar("T")

__all__ = ["Address", "IntelIndex", "Lookups", "Network", "PrefixIndex", "build_input"]


class NetworkSet:
    """Which of a set of networks hold an address: a prefix index of network strings,
    for the CIDR actions a verdict's IPs fall in (`evaluate.repository.CidrTargets`)."""

    def __init__(self) -> None:
        self._index: PrefixIndex[str] = PrefixIndex()

    def add(self, cidr: str) -> None:
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return  # never stored by Tollgate; nothing to match
        if cidr not in self._index.exact(network):  # no set of them beside the index
            self._index.add(network, cidr)

    def __len__(self) -> int:
        return self._index.size

    def holding(self, ip: str) -> list[str]:
        return self._index.lookup(parse_address(ip))


@dataclass(frozen=True, slots=True)
class ActiveAction:
    """An action as `history.active_actions` shows it, with its expiry parsed once."""

    document: dict[str, Any]
    expires_at: datetime | None
    source: int | None = None
    """The batch position of the verdict that planned it, when planned in this batch on a
    target that verdict does not name (a range, another scope): shown only to the
    verdicts that waited for that one (`build_input`'s `sees`)."""

    @property
    def identity(self) -> tuple[str, str, str, str]:
        """What makes two actions the same enforcement: type, target and rule."""
        d = self.document
        return (d["type"], d["target"]["kind"], d["target"]["value"], d["rule"])


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


@dataclass(frozen=True)
class PairSummary:
    """The stored history of a busy (account, key) pair (`fill_prior`): how many of its
    verdicts are surely earlier than each verdict of the batch that names it, the
    newest of those, and the few at the window's edge each verdict sorts for itself."""

    surely_earlier: int
    newest: list[PriorVerdict]
    edge: list[PriorVerdict]


@dataclass
class Lookups:
    """What one batch's inputs are built from, fetched in a few queries, then kept
    current in memory as earlier verdicts of the batch are decided."""

    actions: dict[tuple[str, str, str], list[ActiveAction]] = field(
        default_factory=lambda: defaultdict(list)
    )
    """Active, non-shadow actions by (provider, target kind, target value)."""
    cidr_actions: dict[str, PrefixIndex[ActiveAction]] = field(
        default_factory=lambda: defaultdict(PrefixIndex)
    )
    verdicts: dict[tuple[str, str, str], list[PriorVerdict]] = field(
        default_factory=lambda: defaultdict(list)
    )
    """Stored verdicts by (provider, 'account'|'api_key', id), this batch's included:
    each counts only those received before it."""
    batch_verdicts: dict[tuple[str, str, str], list[PriorVerdict]] = field(
        default_factory=lambda: defaultdict(list)
    )
    """This batch's own verdicts alone, by the same keys."""
    pair_history: dict[tuple[str, str | None, str | None], PairSummary] = field(
        default_factory=dict
    )
    """(provider, account, key) -> the stored history of a busy pair: its verdicts take
    their stored history from here and only the batch's own from `batch_verdicts`."""
    exemptions: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    intel: IntelIndex = field(default_factory=lambda: IntelIndex([]))
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Customer records (as `context.customer` shows them) of the batch's accounts."""
    tallies: dict[Scope, Tally] = field(default_factory=dict)
    """(provider, 'account'|'org', id) -> what was stored of it when the batch was read:
    how many keys, networks and accounts it was seen with, its lowest networks."""
    stored: dict[Scope, dict[str, set[str]]] = field(default_factory=dict)
    """Scope -> kind ('api_key', 'network', 'account') -> the values the batch shows that
    were stored for it: each key or account of the batch, whichever verdict showed it;
    the networks its own verdicts show."""
    new: dict[Scope, dict[str, set[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(set))
    )
    """Scope -> kind -> values the batch's earlier verdicts showed that were not stored."""
    flagged: dict[Scope, dict[str, set[str]]] = field(default_factory=dict)
    """Scope -> kind -> its stored keys and accounts flagged as acted on (a superset of
    those acted on now: each is checked against `acted`, or `actions` for the batch's
    own targets)."""
    acted: set[tuple[str, str, str]] = field(default_factory=set)
    """(provider, kind, value) of the flagged keys and accounts, other than the batch's
    targets, revoked or suspended now (nothing of the batch changes them)."""
    verified_networks: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    """Provider -> network -> the verified customers' accounts seen using it."""

    _flagged_acted: dict[tuple[Scope, str], int] = field(default_factory=dict)

    def flagged_acted(self, scope: Scope, kind: str) -> int:
        """How many of the scope's flagged keys (accounts) the batch does not show are
        revoked (suspended) now: fixed for the batch (its actions are on what it shows),
        so counted once, however many of its verdicts name the scope."""
        found = self._flagged_acted.get((scope, kind))
        if found is None:
            batch = self.stored.get(scope, {}).get(kind, set())
            found = self._flagged_acted[(scope, kind)] = sum(
                1
                for v in self.flagged.get(scope, {}).get(kind, ())
                if v not in batch and (scope[0], kind, v) in self.acted
            )
        return found

    def add_own(self, provider: str, prior: PriorVerdict) -> None:
        """A verdict of this batch, history for the batch's later ones."""
        for kind, value in (("account", prior.account_id), ("api_key", prior.api_key_id)):
            if value:
                self.verdicts[(provider, kind, value)].append(prior)
                self.batch_verdicts[(provider, kind, value)].append(prior)

    def add_sightings(self, read: ScopesRead) -> None:
        """What `read_sightings` read of the batch's scopes."""
        self.tallies = read.tallies
        for provider, scope, scope_id, kind, value in read.known:
            self.stored.setdefault((provider, scope, scope_id), {}).setdefault(kind, set()).add(
                value
            )
        for provider, scope, scope_id, kind, value in read.acted:
            self.flagged.setdefault((provider, scope, scope_id), {}).setdefault(kind, set()).add(
                value
            )

    def saw(self, verdict: Verdict) -> None:
        """Count what a verdict shows (its key, networks, account) for its account and org."""
        for scope, kind, value in shown(verdict):
            if value not in self.stored.get(scope, {}).get(kind, ()):
                self.new[scope][kind].add(value)

    remedies: dict[tuple[str, str, str], list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    """Lifts and undecided or denied appeals by (provider, target kind, value): what
    `history.appeals` shows (the cool-down against re-ban loops reads it)."""
    range_remedies: dict[str, PrefixIndex[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(PrefixIndex)
    )
    """Recent lifts of CIDR blocks per provider, matched against a verdict's IPs."""

    def add_remedy(self, provider: str, remedy: dict[str, Any]) -> None:
        target = remedy["target"]
        if target["kind"] == "cidr":
            self.range_remedies[provider].add(ipaddress.ip_network(target["value"]), remedy)
        self.remedies[(provider, target["kind"], target["value"])].append(remedy)

    def add_action(self, provider: str, action: dict[str, Any], source: int | None = None) -> None:
        target = action["target"]
        expires = action.get("expires_at")
        entry = ActiveAction(action, datetime.fromisoformat(expires) if expires else None, source)
        if target["kind"] == "cidr":
            self.cidr_actions[provider].add(ipaddress.ip_network(target["value"]), entry)
        else:
            self.actions[(provider, target["kind"], target["value"])].append(entry)


@functools.lru_cache(maxsize=65_536)
def network_of(ip: str) -> str:
    """The network an address counts in for IP rotation: its /24 (IPv4) or /48 (IPv6).
    Cached: each verdict asks it for each of its addresses several times, and parsing
    an address costs more than the rest of what a verdict's history needs of it."""
    address = parse_address(ip)
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def shown(verdict: Verdict) -> list[tuple[Scope, str, str]]:
    """What a verdict shows of its account and of its org: (scope, kind, value) of its
    key, its networks and (to the org) its account."""
    provider, subject = verdict.provider, verdict.subject
    found: list[tuple[Scope, str, str]] = []
    for scope, scope_id in (("account", subject.account_id), ("org", subject.org_id)):
        if not scope_id:
            continue
        key = (provider, scope, scope_id)
        if subject.api_key_id:
            found.append((key, "api_key", subject.api_key_id))
        found.extend((key, "network", network_of(ip)) for ip in subject.ips)
        if scope == "org" and subject.account_id:
            found.append((key, "account", subject.account_id))
    return found


def _active(lookups: Lookups, provider: str, kind: str, value: str, now: datetime) -> set[str]:
    """Types of the active actions on one target."""
    return {
        a.document["type"]
        for a in lookups.actions.get((provider, kind, value), ())
        if a.expires_at is None or a.expires_at > now
    }


def _operation(verdict: Verdict, lookups: Lookups, now: datetime) -> dict[str, Any]:
    """`history.account` and `history.org`: how many keys, networks (and, for an org,
    accounts) Tollgate has seen them use, this verdict's included, and how many of those
    keys are revoked and accounts suspended now. Counted from the scope's tally, the
    batch's own sightings and its flagged keys and accounts: never from every sighting
    of a busy org."""
    mine: dict[Scope, dict[str, set[str]]] = {}
    for scope, kind, value in shown(verdict):
        mine.setdefault(scope, {}).setdefault(kind, set()).add(value)
    return {scope[1]: _summary(lookups, scope, own, now) for scope, own in mine.items()}


def _summary(
    lookups: Lookups, scope: Scope, own: dict[str, set[str]], now: datetime
) -> dict[str, Any]:
    """One scope's counts for a verdict that shows it `own` (kind -> values)."""
    tally = lookups.tallies.get(scope) or _NO_TALLY
    stored = lookups.stored.get(scope, {})
    new = lookups.new.get(scope, {})
    empty: set[str] = set()

    def added(kind: str) -> set[str]:
        """The values new to the scope: the batch's earlier verdicts' and this one's."""
        return new.get(kind, empty) | (own.get(kind, empty) - stored.get(kind, empty))

    def acted(kind: str, fresh: set[str]) -> int:
        """How many of its keys (accounts) are revoked (suspended) now: only the flagged
        ones and the batch's can be."""
        wanted, provider = ACTED_ON[kind], scope[0]
        return lookups.flagged_acted(scope, kind) + sum(
            1
            for v in stored.get(kind, empty) | fresh
            if wanted in _active(lookups, provider, kind, v, now)
        )

    keys, networks = added("api_key"), added("network")
    summary: dict[str, Any] = {
        "keys_seen": tally.keys + len(keys),
        "networks_seen": tally.networks + len(networks),
        "networks": sorted({*tally.first_networks, *networks})[:FIRST_NETWORKS],
        "keys_acted_on": acted("api_key", keys),
    }
    if scope[1] == "org":
        accounts = added("account")
        summary["accounts_seen"] = tally.accounts + len(accounts)
        summary["accounts_acted_on"] = acted("account", accounts)
    return summary


_NO_TALLY = Tally()


def _verified_networks(verdict: Verdict, lookups: Lookups, operation: dict[str, Any]) -> list[str]:
    """The networks this verdict's subject uses that a verified customer (another account)
    uses too: a range block there would refuse that customer."""
    users = lookups.verified_networks.get(verdict.provider, {})
    mine = {network_of(ip) for ip in verdict.subject.ips}
    for summary in operation.values():
        mine.update(summary["networks"])
    own = verdict.subject.account_id
    return sorted(n for n in mine if users.get(n, set()) - {own})


def build_input(
    verdict: Verdict,
    received_at: datetime,
    lookups: Lookups,
    now: datetime,
    sees: Callable[[int], bool] | None = None,
) -> dict[str, Any]:
    """The OPA `input` for one verdict. `sees` tells which of the batch's verdicts this
    one waited for: an action one of them planned on a target it does not name (a
    range, another scope) is shown only to those (`ActiveAction.source`)."""
    provider = verdict.provider
    keys = verdict.subject.targets
    candidates = [
        a for kind, value in keys for a in lookups.actions.get((provider, kind, value), ())
    ]
    cidrs = lookups.cidr_actions.get(provider)
    if cidrs is not None:
        for ip in verdict.subject.ips:
            candidates.extend(cidrs.lookup(parse_address(ip)))
    # One entry per enforcement: a policy that asks again for an active block must not
    # make every later input carry each repeat (history stays small, evaluation fast).
    latest: dict[tuple[str, str, str, str], ActiveAction] = {}
    for action in candidates:
        if action.expires_at is not None and action.expires_at <= now:
            continue
        if action.source is not None and (sees is None or not sees(action.source)):
            continue
        kept = latest.get(action.identity)
        if kept is None or _outlives(action, kept):
            latest[action.identity] = action
    active = [a.document for a in latest.values()]

    exemption = next(
        (e for kind, value in keys if (e := lookups.exemptions.get((provider, kind, value)))),
        None,
    )
    subject = verdict.subject
    intel = lookups.intel.match_verdict(
        subject.ips,
        [
            (k, v)
            for k, v in (
                ("account", subject.account_id),
                ("api_key", subject.api_key_id),
                ("org", subject.org_id),
            )
            if v
        ],
        verdict.signals,
        now,
    )
    appeals: dict[str, dict[str, Any]] = {}
    for kind, value in keys:
        for remedy in lookups.remedies.get((provider, kind, value), ()):
            appeals[remedy["id"]] = remedy
    ranges = lookups.range_remedies.get(provider)
    if ranges is not None:
        for ip in verdict.subject.ips:
            appeals.update((r["id"], r) for r in ranges.lookup(parse_address(ip)))
    verdicts_30d, recent = _prior(verdict, received_at, lookups)
    operation = _operation(verdict, lookups, now)
    context: dict[str, Any] = {
        "exempt": exemption is not None,
        "exemption": exemption,
        "intel_matches": intel,
        "verified_networks": _verified_networks(verdict, lookups, operation),
    }
    customer = lookups.customers.get(verdict.subject.account_id or "")
    if customer is not None:
        context["customer"] = customer
    return {
        "verdict": verdict.document(),
        "history": {
            "active_actions": active,
            "verdicts_30d": verdicts_30d,
            "recent_verdicts": [
                {
                    "id": p.id,
                    "observed_at": _rfc3339(p.observed_at),
                    "score": p.score,
                    "confidence": p.confidence,
                    "detector": p.detector,
                }
                for p in recent
            ],
            "appeals": sorted(appeals.values(), key=lambda r: (r["at"], r["id"])),
            **operation,
        },
        "context": context,
        "now": _rfc3339(now),
    }


def _outlives(candidate: ActiveAction, kept: ActiveAction) -> bool:
    if kept.expires_at is None:
        return False
    return candidate.expires_at is None or candidate.expires_at > kept.expires_at


def _prior(
    verdict: Verdict, received_at: datetime, lookups: Lookups
) -> tuple[int, list[PriorVerdict]]:
    """How many earlier verdicts (received before this one) there are about the same
    account or key, observed in the 30 days before this one, and the newest
    `RECENT_VERDICTS` of them, newest first."""
    since = verdict.observed_at - HISTORY_WINDOW
    subject = verdict.subject
    summary = lookups.pair_history.get((verdict.provider, subject.account_id, subject.api_key_id))
    source = lookups.verdicts if summary is None else lookups.batch_verdicts
    found: dict[str, PriorVerdict] = {}
    for kind, value in (("account", subject.account_id), ("api_key", subject.api_key_id)):
        if not value:
            continue
        for prior in source.get((verdict.provider, kind, value), ()):
            if prior.received_at < received_at and prior.observed_at >= since:
                found[prior.id] = prior
    count, candidates = len(found), list(found.values())
    if summary is not None:
        # Stored ones (the batch's own left out): disjoint from `found` and each other.
        edge = [p for p in summary.edge if p.received_at < received_at and p.observed_at >= since]
        count += summary.surely_earlier + len(edge)
        candidates += summary.newest + edge
    newest = heapq.nlargest(RECENT_VERDICTS, candidates, key=_recency)
    return count, newest


def _recency(prior: PriorVerdict) -> tuple[datetime, datetime, str]:
    return prior.observed_at, prior.received_at, prior.id


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def subject_dependencies(verdicts: Sequence[Verdict]) -> list[list[int]]:
    """Per verdict, the earlier verdicts of its batch it waits for: for each of its
    subject keys, the latest earlier verdict with that key (which waited for the one
    before, and so on), so a repeat sees what every earlier one of its subject planned.
    A subject is a (provider, kind, value): the same account at two providers is two."""
    latest: dict[tuple[str, str, str], int] = {}
    waits = []
    for position, verdict in enumerate(verdicts):
        keys = [(verdict.provider, kind, value) for kind, value in verdict.subject.targets]
        waits.append(sorted({latest[k] for k in keys if k in latest}))
        for k in keys:
            latest[k] = position
    return waits
