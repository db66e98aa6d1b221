"""Tollgate's blocks as CrowdSec decisions, for any existing CrowdSec bouncer.

A decision is a target (an IP or a CIDR) that active, non-shadow block actions of the
served providers ask for: one decision per target, shown with the action that lasts
longest (its rule is the `scenario`, its end the `until`). CrowdSec's LAPI keeps each
bouncer's last pull and moves it only when a stream answer completes; here a bouncer's
position is a cursor in the enforcement change log, moved only once an answer was
sent whole, so a bouncer that loses an answer is sent its changes again and none is
missed:

- `startup=true` (or a bouncer never seen before): every decision now, as `new`,
  paged through the desired state (memory bounded whatever is active), and, for a
  bouncer seen before, what ended since its cursor as `deleted` (a restarted bouncer
  may still hold it);
- `startup=false`: the targets that changed since the bouncer's cursor, each as the
  desired state says now: a decision in `new`, or (no longer asked for) in `deleted`.

Both are generated page by page, for a streaming response.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controlplane.bouncers import repository
from controlplane.bouncers.config import StreamConfig
from controlplane.enforce import repository as enforce
from controlplane.enforce.targets import TargetError, canonical_cidr, canonical_ip
from controlplane.enforce.toolkit import Terms
from controlplane.errors import InvalidInput
from controlplane.plan import repository as actions
from controlplane.store.db import Database
from controlplane.store.types import utcnow

PAGE = 2000
"""Desired actions read per page of a startup answer."""
CHANGES = 1000
"""Change log entries read per page of a delta answer."""
FOREVER_SECONDS = 10 * 365 * 24 * 3600
"""What `duration` says of a block without an end: CrowdSec decisions always have one."""
SCOPES: Terms[str, str] = Terms({"ip": "Ip", "cidr": "Range"}, fold=str.lower)
"""Tollgate's target kinds and CrowdSec's scopes (which bouncers match ignoring case)."""
DEFAULT_SCOPES = ("ip", "range")
_NAMESPACE = uuid.UUID("5b3c1e7e-55a8-4f0e-9a7b-2f4c3d0a6b11")
_BLOCK = ["block"]


@dataclass(frozen=True)
class Filters:
    """What a bouncer asks for (`scopes`, `origins`, `scenarios_containing`,
    `scenarios_not_containing`), as CrowdSec's LAPI reads them."""

    kinds: frozenset[str]
    origins: frozenset[str] | None = None
    containing: tuple[str, ...] = ()
    not_containing: tuple[str, ...] = ()

    @classmethod
    def parse(
        cls,
        scopes: str | None,
        origins: str | None,
        containing: str | None,
        not_containing: str | None,
    ) -> Filters:
        """Comma-separated lists; unknown scopes match nothing (CrowdSec knows more kinds,
        such as `Country`, that Tollgate never decides on)."""
        asked = _split(scopes) or list(DEFAULT_SCOPES)
        kinds = frozenset(k for k in (SCOPES.ours(s) for s in asked) if k is not None)
        return cls(
            kinds=kinds,
            origins=frozenset(_split(origins)) if origins else None,
            containing=tuple(_split(containing)),
            not_containing=tuple(_split(not_containing)),
        )

    def admits(self, decision: dict[str, Any]) -> bool:
        scenario: str = decision["scenario"]
        if self.origins is not None and decision["origin"] not in self.origins:
            return False
        if self.containing and not any(c in scenario for c in self.containing):
            return False
        return not any(c in scenario for c in self.not_containing)


class DecisionStream:
    """The decisions of the served providers, for bouncers."""

    def __init__(self, db: Database, config: StreamConfig) -> None:
        self._db = db
        self._config = config
        self._providers = None if "*" in config.providers else list(config.providers)

    def answer(self, bouncer: str, startup: bool, filters: Filters) -> AsyncIterator[bytes]:
        """A stream answer as JSON bytes, page by page; the bouncer's cursor moves to
        the log's head as it was at the start once the last byte was handed over."""
        return self._answer(bouncer, startup, filters)

    async def _answer(self, bouncer: str, startup: bool, filters: Filters) -> AsyncIterator[bytes]:
        async with self._db.read() as session:
            head = await enforce.change_head(session)
            cursor = await repository.cursor(session, bouncer)
        kinds = [k for k in self._config.kinds if k in filters.kinds]
        yield b'{"new":['
        first = True
        deleted: AsyncIterator[list[dict[str, Any]]] | None = None
        if startup or cursor is None:
            pages = self._everything(kinds, filters)
            if cursor is not None:  # a bouncer restarting: what it may hold that ended
                deleted = self._changed(cursor, head, kinds, filters, want_active=False)
        else:
            pages = self._changed(cursor, head, kinds, filters, want_active=True)
            deleted = self._changed(cursor, head, kinds, filters, want_active=False)
        async for page in pages:
            if page:
                yield (b"" if first else b",") + _items(page)
                first = False
        yield b'],"deleted":['
        first = True
        if deleted is not None:
            async for page in deleted:
                if page:
                    yield (b"" if first else b",") + _items(page)
                    first = False
        # Reached only once every byte before was taken by the server: a bouncer that
        # went away mid-answer keeps its cursor and is sent the same changes again.
        async with self._db.write() as session, session.begin():
            await repository.save_cursor(session, bouncer, max(head, cursor or 0), utcnow())
        yield b"]}"

    async def live(
        self, ip: str | None, network: str | None, kind: str | None, filters: Filters
    ) -> list[dict[str, Any]]:
        """Decisions covering one address (`ip`) or network (`range`): the target itself
        and every network around it, an indexed lookup of at most 129 values."""
        if kind is not None and kind != "ban":
            return []
        if ip is not None:
            try:
                address = ipaddress.ip_address(canonical_ip(ip))
            except TargetError as exc:
                raise _invalid("ip", str(exc)) from None
            targets = [("ip", str(address))]
            longest: int = address.max_prefixlen
            base = ipaddress.ip_network(address)
        elif network is not None:
            try:
                base = ipaddress.ip_network(canonical_cidr(network))
            except TargetError as exc:
                raise _invalid("range", str(exc)) from None
            targets, longest = [], base.prefixlen
        else:
            raise _invalid("ip", "give ip or range: the address or network to look up")
        targets += [("cidr", str(base.supernet(new_prefix=p))) for p in range(longest + 1)]
        kinds = [k for k in self._config.kinds if k in filters.kinds]
        now = utcnow()
        async with self._db.read() as session:
            rows = await actions.desired_for_targets(
                session, self._providers, _BLOCK, targets, now, kinds, actions.DECISION_COLUMNS
            )
        return [d for d in self._decisions(rows, now) if filters.admits(d)]

    # -- pages ---------------------------------------------------------------------------

    async def _everything(
        self, kinds: list[str], filters: Filters
    ) -> AsyncIterator[list[dict[str, Any]]]:
        if not kinds:
            return
        after: tuple[str, str] | None = None
        while True:
            now = utcnow()
            async with self._db.read() as session:
                rows, after = await actions.desired_page(
                    session,
                    self._providers,
                    _BLOCK,
                    after,
                    PAGE,
                    now,
                    kinds,
                    actions.DECISION_COLUMNS,
                )
            yield [d for d in self._decisions(rows, now) if filters.admits(d)]
            if after is None:
                return

    async def _changed(
        self, cursor: int, head: int, kinds: list[str], filters: Filters, *, want_active: bool
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The targets changed in (cursor, head] that are desired now (`want_active`) or
        no longer are, each once."""
        seen: set[tuple[str, str]] = set()
        after = cursor
        while after < head:
            async with self._db.read() as session:
                changes = await enforce.changes_after(session, after, CHANGES, upto=head)
            if not changes:
                return
            after = changes[-1].seq
            latest: dict[tuple[str, str], str | None] = {}
            for c in changes:
                target = (c.target_kind, c.target_value)
                if (
                    c.type in _BLOCK
                    and c.target_kind in kinds
                    and self._config.serves(c.provider)
                    and target not in seen
                ):
                    latest[target] = c.action_id
            if not latest:
                continue
            now = utcnow()
            async with self._db.read() as session:
                rows = await actions.desired_for_targets(
                    session,
                    self._providers,
                    _BLOCK,
                    list(latest),
                    now,
                    kinds,
                    actions.DECISION_COLUMNS,
                )
                if want_active:
                    decisions = self._decisions(rows, now)
                else:
                    active = {(r.target_kind, r.target_value) for r in rows}
                    gone = {t: a for t, a in latest.items() if t not in active}
                    rules = await self._rules(session, [a for a in gone.values() if a])
                    decisions = [
                        self._decision(kind, value, rules.get(a or "", "tollgate"), now, now, 0)
                        for (kind, value), a in gone.items()
                    ]
            chosen = [d for d in decisions if filters.admits(d)]
            seen.update(latest)
            yield chosen

    async def _rules(self, session: Any, action_ids: Sequence[str]) -> dict[str, str]:
        return {a.id: a.rule for a in await actions.actions_by_id(session, list(action_ids))}

    # -- decisions -----------------------------------------------------------------------

    def _decisions(self, rows: Iterable[Any], now: datetime) -> list[dict[str, Any]]:
        """One decision per target: the action that lasts longest speaks for it."""
        best: dict[tuple[str, str], Any] = {}
        for row in rows:
            target = (row.target_kind, row.target_value)
            held = best.get(target)
            if held is None or _later(row.expires_at, held.expires_at):
                best[target] = row
        return [
            self._decision(kind, value, row.rule, row.expires_at, now, None)
            for (kind, value), row in best.items()
        ]

    def _decision(
        self,
        kind: str,
        value: str,
        rule: str,
        until: datetime | None,
        now: datetime,
        remaining: float | None,
    ) -> dict[str, Any]:
        if remaining is None:
            remaining = (until - now).total_seconds() if until else FOREVER_SECONDS
        end = until or now
        identity = f"{kind}:{value}"
        return {
            "id": int.from_bytes(hashlib.sha256(identity.encode()).digest()[:6], "big"),
            "uuid": str(uuid.uuid5(_NAMESPACE, identity)),
            "origin": self._config.origin,
            "type": "ban",
            "scope": SCOPES[kind],
            "value": value,
            "duration": go_duration(remaining),
            "until": end.strftime("%Y-%m-%dT%H:%M:%SZ") if until else None,
            "scenario": rule,
            "simulated": False,
        }


def go_duration(seconds: float) -> str:
    """Go's `time.Duration.String()` of whole seconds: `3h59m58s`, `1m0s`, `5s`, `0s`."""
    whole = int(seconds)
    sign, whole = ("-", -whole) if whole < 0 else ("", whole)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


def _later(candidate: datetime | None, current: datetime | None) -> bool:
    if current is None:
        return False
    return candidate is None or candidate > current


def _items(decisions: list[dict[str, Any]]) -> bytes:
    return ",".join(json.dumps(d, separators=(",", ":")) for d in decisions).encode()


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _invalid(name: str, message: str) -> InvalidInput:
    return InvalidInput(f"{name}: {message}", details=[{"field": name, "message": message}])
