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

Both are generated page by page, for a streaming response (`answer`, which reads each
page in a session of its own).
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

from sqlalchemy.ext.asyncio import AsyncSession

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


@dataclass(frozen=True)
class Position:
    """Where an answer starts: the change log's head, and the bouncer's cursor (None
    for a bouncer never seen)."""

    head: int
    cursor: int | None


class DecisionStream:
    """The decisions of the served providers, for bouncers, page by page in the session
    each page is given (`answer` gives each page of a stream a session of its own)."""

    def __init__(self, config: StreamConfig) -> None:
        self._config = config
        self._providers = None if "*" in config.providers else list(config.providers)

    async def position(self, session: AsyncSession, bouncer: str) -> Position:
        return Position(
            await enforce.change_head(session), await repository.cursor(session, bouncer)
        )

    def kinds(self, filters: Filters) -> list[str]:
        """The target kinds served that the bouncer asks for."""
        return [k for k in self._config.kinds if k in filters.kinds]

    async def answered(self, session: AsyncSession, bouncer: str, position: Position) -> None:
        """Move the bouncer's cursor to the head its answer was made from: called once
        every byte but the last was taken, so a bouncer that went away mid-answer keeps
        its cursor and is sent the same changes again."""
        await repository.save_cursor(
            session, bouncer, max(position.head, position.cursor or 0), utcnow()
        )

    async def live(
        self,
        session: AsyncSession,
        ip: str | None,
        network: str | None,
        kind: str | None,
        filters: Filters,
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
        now = utcnow()
        rows = await actions.desired_for_targets(
            session,
            self._providers,
            _BLOCK,
            targets,
            now,
            self.kinds(filters),
            actions.DECISION_COLUMNS,
        )
        return [d for d in self._decisions(rows, now) if filters.admits(d)]

    # -- pages ---------------------------------------------------------------------------

    async def everything(
        self,
        session: AsyncSession,
        kinds: list[str],
        filters: Filters,
        after: tuple[str, str] | None,
    ) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
        """One page of every decision now, and where the next page starts (None: this
        was the last)."""
        if not kinds:
            return [], None
        now = utcnow()
        rows, after = await actions.desired_page(
            session, self._providers, _BLOCK, after, PAGE, now, kinds, actions.DECISION_COLUMNS
        )
        return [d for d in self._decisions(rows, now) if filters.admits(d)], after

    async def changed(
        self,
        session: AsyncSession,
        after: int,
        head: int,
        kinds: list[str],
        filters: Filters,
        seen: set[tuple[str, str]],
        *,
        want_active: bool,
    ) -> tuple[list[dict[str, Any]], int] | None:
        """The targets changed in the next page of (after, head] that are desired now
        (`want_active`) or no longer are, each once across the pages (`seen`), and the
        seq the page ends at; None when nothing is left."""
        changes = await enforce.changes_after(session, after, CHANGES, upto=head)
        if not changes:
            return None
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
            return [], after
        now = utcnow()
        rows = await actions.desired_for_targets(
            session, self._providers, _BLOCK, list(latest), now, kinds, actions.DECISION_COLUMNS
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
        seen.update(latest)
        return [d for d in decisions if filters.admits(d)], after

    async def _rules(self, session: AsyncSession, action_ids: Sequence[str]) -> dict[str, str]:
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


async def answer(
    db: Database, stream: DecisionStream, bouncer: str, startup: bool, filters: Filters
) -> AsyncIterator[bytes]:
    """A stream answer as JSON bytes, page by page. It outlives the request's session,
    so it is a boundary of its own: it reads each page in a session it opens (a slow
    bouncer holds no connection between pages), and moves the bouncer's cursor to the
    log's head as it was at the start, in a transaction, once every byte but the last
    was handed over."""

    async def everything() -> AsyncIterator[list[dict[str, Any]]]:
        after: tuple[str, str] | None = None
        while True:
            async with db.read() as session:
                page, after = await stream.everything(session, kinds, filters, after)
            yield page
            if after is None:
                return

    async def changed(*, want_active: bool) -> AsyncIterator[list[dict[str, Any]]]:
        seen: set[tuple[str, str]] = set()
        after = position.cursor or 0
        while after < position.head:
            async with db.read() as session:
                found = await stream.changed(
                    session, after, position.head, kinds, filters, seen, want_active=want_active
                )
            if found is None:
                return
            page, after = found
            yield page

    async with db.read() as session:
        position = await stream.position(session, bouncer)
    kinds = stream.kinds(filters)
    deleted: AsyncIterator[list[dict[str, Any]]] | None = None
    if startup or position.cursor is None:
        new = everything()
        if position.cursor is not None:  # a bouncer restarting: what it may hold that ended
            deleted = changed(want_active=False)
    else:
        new = changed(want_active=True)
        deleted = changed(want_active=False)
    yield b'{"new":['
    async for chunk in _members(new):
        yield chunk
    yield b'],"deleted":['
    if deleted is not None:
        async for chunk in _members(deleted):
            yield chunk
    # Reached only once every byte before was taken by the server: a bouncer that
    # went away mid-answer keeps its cursor and is sent the same changes again.
    async with db.transaction() as session:
        await stream.answered(session, bouncer, position)
    yield b"]}"


async def _members(pages: AsyncIterator[list[dict[str, Any]]]) -> AsyncIterator[bytes]:
    """The decisions of every page as the members of one JSON list."""
    first = True
    async for page in pages:
        if page:
            yield (b"" if first else b",") + _items(page)
            first = False


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
