"""One connector following the change log.

The follower applies the changes after its cursor, in `seq` order, in batches: for
each target a batch touches it reads that target's desired state now (an indexed
query), so the cost of a batch is what it holds, never what is already enforced,
and a lift that races a plan on the same entry ends with the entry as the log's
last word says. The outcome (per-action state, overall transitions with their
audit events) and the new cursor are saved in one transaction: a crash between an
apply and that commit re-applies the batch, idempotently, and records it once.

A gateway that cannot be reached holds the cursor: the batch is tried again with
growing pauses until it goes through, so an outage delays and never loses. An
entry the gateway refuses for now is retried on its own with backoff; one it can
never hold is recorded as a permanent failure and not retried.

A full reconcile (at start, every `reconcile_seconds`, on demand) repairs drift:
it observes the gateway once, then pages through the desired state, applying each
page's difference and the pending changes between pages, then removes what the
gateway holds that nothing asks for.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.util.types import AttributeValue
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from controlplane.audit import service as audit
from controlplane.domain.redact import key_handle, redact_keys
from controlplane.domain.vocabulary import ActionState
from controlplane.enforce import repository
from controlplane.enforce.actions import Actions
from controlplane.enforce.desired import DesiredState, entry_of
from controlplane.enforce.events import action_event
from controlplane.enforce.sdk import (
    ApplyResult,
    Connector,
    ConnectorConfig,
    ConnectorError,
    Diff,
    Entry,
    EntryType,
)
from controlplane.enforce.toolkit import release_freed_memory
from controlplane.remedy import repository as remedy_repo
from controlplane.settings import takeover_grace_for
from controlplane.store.db import OUTAGES, Database, outage_reason
from controlplane.store.models import ActionRow, ChangeRow, ConnectorStatusRow
from controlplane.store.repository import ping_connection, try_advisory_lock
from controlplane.store.types import utcnow
from controlplane.telemetry.tracing import tracer

log = logging.getLogger(__name__)

ATTEMPTS = 4
BACKOFF_BASE = 0.2
BACKOFF_CAP = 2.0
OUTAGE_BACKOFF_CAP = 30.0
"""Longest pause between two tries of a batch while the gateway is unreachable."""
RETRY_CAP = 300.0
"""Longest pause before an entry the gateway refused is tried again."""
BATCH = 1000
"""Changes applied together at most."""
PAGE = 2000
"""Desired actions per page of a full reconcile."""
SPAN_APPLY = "connector.apply"
SPAN_RECONCILE = "connector.reconcile"
TRACED_PER_BATCH = 100
"""Parent spans an apply span is repeated under, at most (the rest are counted only)."""
LOCK_CHECK_SECONDS = 1.0
"""How often an applying follower makes sure the connection holding its lock lives (and
how long that check may take before the lock counts as lost)."""
TAKEOVER_GRACE_SECONDS = takeover_grace_for(LOCK_CHECK_SECONDS)
"""How long a standby that just took its connector's lock waits before applying: a
holder whose lock connection was cut learns it at its next check, within two
`LOCK_CHECK_SECONDS` (the wait between checks, then the check itself), so the two never
apply, or say they apply, at once. (A follower that finds the lock free at its first try
starts at once.)"""
FOLLOW_LOCK = 0x74_6C_66_00
"""Advisory locks (plus a hash of the connector's name): one follower per connector."""

Key = tuple[str, str, str]


@dataclass
class ReconcileReport:
    connector: str
    ok: bool
    desired: int = 0
    applied: int = 0
    added: int = 0
    removed: int = 0
    changed: int = 0
    failed: int = 0
    rejected: int = 0
    drift_repaired: int = 0
    error: str | None = None
    failures: list[str] = field(default_factory=list)


@dataclass
class _Applied:
    result: ApplyResult
    unreachable: str | None = None
    """Why the gateway could not be reached at all (nothing was recorded)."""
    tries: dict[Key, int] = field(default_factory=dict)


@dataclass
class _Retry:
    due: float
    attempt: int


class Follower:
    """Keeps one connector's gateway in step; runs on the enforcement worker's loop."""

    def __init__(
        self,
        db: Database,
        actions: Actions,
        config: ConnectorConfig,
        connector: Connector,
        expected: Callable[[str, str, str], list[str]],
        poll_seconds: float,
    ) -> None:
        self.config = config
        self.connector = connector
        self._db = db
        self._actions = actions
        self._expected = expected
        """(provider, action type, target kind) -> the connectors that must hold such an
        action."""
        self._poll = poll_seconds
        scoped = config.scope.types
        self._types = sorted(
            t.value for t in connector.capabilities() if scoped is None or t in scoped
        )
        kinds = config.scope.target_kinds
        self._kinds = sorted(kinds) if kinds is not None else None
        self._providers = None if "*" in config.providers else list(config.providers)
        self.cursor = 0
        self.attempted = 0
        """The last seq tried, applied or not (`settle` waits for it)."""
        self._tries = 0
        """Batches tried so far."""
        self.active = False
        """Holds its connector's lock: the one follower applying for this connector."""
        self.taking_over = False
        """Took the lock as a standby and waits out `TAKEOVER_GRACE_SECONDS` first."""
        self._wake = asyncio.Event()
        self._requests: list[asyncio.Future[ReconcileReport]] = []
        self._retry: dict[Key, _Retry] = {}
        self._outage = 0
        self._database_down = False
        self._lock_connection: AsyncConnection | None = None
        self._lock_checked = 0.0
        self._next_reconcile = 0.0
        self._reconciled = False
        """The first reconcile tries permanent failures again (the gateway's config may
        have been fixed since); later ones leave them alone."""
        self._progress = asyncio.Condition()
        self._state = "healthy"
        """healthy, degraded (entries failing) or down (gateway unreachable): each change
        is logged once, at WARNING, so an operator sees outages and recoveries."""
        self._downs: tuple[int, str] = (0, "")
        """How many times the gateway was found unreachable, and the last reason why."""

    def _note(self, state: str, why: str = "") -> None:
        if state == "down":
            self._downs = (self._downs[0] + 1, why)
        previous, self._state = self._state, state
        if state == previous:
            return
        name = self.config.name
        if state == "down":
            log.warning("connector %s is down: %s", name, why)
        elif state == "degraded":
            log.warning("connector %s is degraded: %s", name, why)
        else:
            log.warning("connector %s recovered (was %s)", name, previous)

    # -- from the worker ---------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    @property
    def types(self) -> list[str]:
        """The entry types this connector enforces (its capabilities, within its scope)."""
        return self._types

    def holds(self, provider: str, entry_type: str, target_kind: str) -> bool:
        """Whether this connector must hold an action of this provider, type and target
        kind: its providers, its scope and its gateway's capabilities say so."""
        return entry_type in self._types and self.config.covers(provider, entry_type, target_kind)

    async def request_reconcile(self) -> ReconcileReport:
        future: asyncio.Future[ReconcileReport] = asyncio.get_running_loop().create_future()
        self._requests.append(future)
        self._wake.set()
        return await future

    async def settle(self, head: int) -> None:
        """Until every change up to `head` is applied, or has been tried since this call
        began and failed visibly (the gateway is down, say)."""
        async with self._progress:
            tries = self._tries
            await self._progress.wait_for(
                lambda: (
                    self.cursor >= head
                    or (self.attempted >= head and self._tries > tries)
                    or not (self.active or self.taking_over)
                )
            )

    async def run(self) -> None:
        async with self._exclusive():
            self.active = True
            try:
                await self._follow()
            finally:
                self.active = False
                async with self._progress:
                    self._progress.notify_all()

    # -- the loop ----------------------------------------------------------------------

    async def _follow(self) -> None:
        async with self._db.read() as session:
            self.cursor = (await repository.cursors(session)).get(self.config.name, 0)
        self.attempted = self.cursor
        self._requests.append(asyncio.get_running_loop().create_future())  # at start
        while True:
            # Cleared before looking, so a wake that comes while a batch is applied is
            # kept, and the next look follows at once.
            self._wake.clear()
            try:
                await self._check_lock()
                if self._requests or time.monotonic() >= self._next_reconcile:
                    await self._reconcile_now()
                worked = await self._drain()
                if self._database_down:
                    self._database_down = False
                    log.warning("connector %s: the database answers again", self.config.name)
            except asyncio.CancelledError:
                raise
            except OUTAGES as exc:
                # The database, not the gateway. Its advisory lock may have gone with
                # it (a restarted server holds none): stop applying, and let the
                # supervisor take the lock again before this follower goes on.
                self.database_unavailable(exc)
                raise
            except Exception:
                log.exception("connector %s: enforcement step failed; retrying", self.config.name)
                worked = False
                await asyncio.sleep(1.0)
            if not worked:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._pause())

    async def _check_lock(self) -> None:
        """Raise when the connection holding this connector's advisory lock is gone (the
        database restarted, or the connection was cut): the lock went with it, another
        worker may hold it now, and applying on would make two appliers. Checked at most
        every `LOCK_CHECK_SECONDS`, and so before applying after any longer pause."""
        if self._lock_connection is None:
            return
        now = time.monotonic()
        if now - self._lock_checked < LOCK_CHECK_SECONDS:
            return
        await _ping_lock(self._lock_connection)
        self._lock_checked = now

    def database_unavailable(self, exc: BaseException) -> None:
        """One WARNING line when the database goes away (the cursor holds meanwhile, so
        nothing is skipped); `_follow` logs one more when it answers again."""
        if not self._database_down:
            log.warning(
                "connector %s: the database is unavailable (%s); enforcement waits and retries",
                self.config.name,
                outage_reason(exc),
            )
        self._database_down = True

    def _pause(self) -> float:
        """How long to wait for a wake: the poll (changes from other replicas), less when
        a retry falls due, more while the gateway is unreachable."""
        pause = self._poll
        if self._lock_connection is not None:
            pause = min(pause, LOCK_CHECK_SECONDS)  # the lock is checked even when idle
        if self._retry:
            due = min(r.due for r in self._retry.values()) - time.monotonic()
            pause = min(pause, max(0.0, due))
        if self._outage:
            pause = max(pause, min(OUTAGE_BACKOFF_CAP, BACKOFF_BASE * 2**self._outage))
            pause = random.uniform(pause / 2, pause)
        return pause

    async def _drain(self) -> bool:
        """Apply one batch of changes (and the retries that are due); True when it did
        something and more may be waiting."""
        async with self._db.read() as session:
            changes = await repository.changes_after(session, self.cursor, BATCH)
        now_mono = time.monotonic()
        due = [k for k, r in self._retry.items() if r.due <= now_mono]
        if not changes and not due:
            return False
        last = changes[-1].seq if changes else self.cursor
        keys = {
            (c.type, c.target_kind, c.target_value)
            for c in changes
            if self.holds(c.provider, c.type, c.target_kind)
        }
        keys.update(due)
        ok = await self._apply_keys(keys, changes, last)
        async with self._progress:
            self.attempted = max(self.attempted, last)
            self._tries += 1
            self._progress.notify_all()
        # After a batch, look again at once: more may have come while it was applied.
        return ok and bool(changes)

    async def _apply_keys(self, keys: set[Key], changes: Sequence[ChangeRow], last: int) -> bool:
        now = utcnow()
        desired = await self._desired_for(keys, now)
        if not keys:
            await self._commit(desired, _Applied(ApplyResult()), set(), now, cursor=last)
            self.cursor = last
            return True
        change = Diff(
            add=tuple(desired.entries.values()),
            remove=tuple(
                Entry(EntryType(k[0]), k[1], k[2]) for k in keys if k not in desired.entries
            ),
        )
        with _apply_span(self.config, changes) as span:
            applied = await self._apply(change)
            result, unreachable = applied.result, applied.unreachable
            span.set_attribute("tollgate.done", len(result.done))
            span.set_attribute("tollgate.failed", len(result.failed) + len(result.rejected))
            if unreachable:
                span.set_status(trace.StatusCode.ERROR, unreachable)
        if unreachable:
            self._outage += 1
            self._note("down", unreachable)
            await self._save_status(
                now, error=unreachable, lag_from=changes[0].at if changes else None
            )
            return False
        self._outage = 0
        present = {e.key for e in result.done if e.key in desired.entries}
        taken_off = {e.key for e in result.done if e.key not in desired.entries}
        # When each lifted action left this gateway: the remediation report's "to lift".
        removed = [
            c.action_id
            for c in changes
            if c.action_id and c.cause != "planned" and _change_key(c) in taken_off
        ]
        await self._commit(desired, applied, present, now, cursor=last, removed=removed)
        self.cursor = last
        self._schedule_retries(result, keys)
        failing = [*result.failed, *result.rejected]
        if failing or self._retry:
            why = "; ".join(f"{e.type.value} {e.target_kind}:{_shown(e)}: {w}" for e, w in failing)
            self._note("degraded", why[:500] or f"{len(self._retry)} entries waiting to retry")
        else:
            self._note("healthy")
        return True

    def _schedule_retries(self, result: ApplyResult, keys: Iterable[Key]) -> None:
        """Entries refused for now are tried again on their own, each with its backoff."""
        failed = {e.key for e, _ in result.failed}
        for key in keys:
            if key not in failed:
                self._retry.pop(key, None)
        for entry, _ in result.failed:
            previous = self._retry.get(entry.key)
            attempt = previous.attempt + 1 if previous else 1
            pause = min(RETRY_CAP, BACKOFF_BASE * 2 ** (attempt + 2))
            self._retry[entry.key] = _Retry(
                time.monotonic() + random.uniform(pause / 2, pause), attempt
            )

    async def _desired_for(self, keys: set[Key], now: datetime) -> DesiredState:
        targets = [(k[1], k[2]) for k in keys]
        async with self._db.read() as session:
            rows = await self._actions.desired_for_targets(
                session, self._providers, self._types, targets, now, self._kinds
            )
        desired = DesiredState()
        for action_id, _, kind, target_kind, value, params, created_at in rows:
            if (kind, target_kind, value) not in keys:
                continue
            entry = entry_of(kind, target_kind, value, params)
            if entry is not None:
                desired.add(action_id, entry, created_at)
        allowed = [(k[1], k[2]) for k in keys if k[0] == EntryType.ALLOW.value]
        if allowed:
            await self._allowed(desired, allowed, now)
        return desired

    async def _allowed(
        self, desired: DesiredState, targets: list[tuple[str, str]] | None, now: datetime
    ) -> None:
        """Live IP and CIDR exemptions as `allow` entries (of these targets, or all)."""
        async with self._db.read() as session:
            found = await remedy_repo.live_network_exemptions(
                session, self._providers, targets, now
            )
        for _, kind, value in found:
            desired.allow(Entry(EntryType.ALLOW, kind, value))

    async def _apply(self, change: Diff) -> _Applied:
        """Apply with retries (exponential backoff, full jitter) on retryable failures."""
        done: list[Entry] = []
        rejected: list[tuple[Entry, str]] = []
        failed: list[tuple[Entry, str]] = []
        pending = change
        ids = _key_ids(change)
        timeout = self.config.timeout_seconds * max(1, change.size // 500 + 1)
        tries: dict[Key, int] = {}
        for attempt in range(1, ATTEMPTS + 1):
            for entry in _entries(pending):
                tries[entry.key] = attempt
            try:
                result = await asyncio.wait_for(self.connector.apply(pending), timeout)
            except (ConnectorError, TimeoutError) as exc:
                # The whole apply failed: the connector or its gateway, not an entry, is at
                # fault (down, or misconfigured). Nothing is recorded against the entries;
                # the batch waits, visibly, until the connector works again.
                why = redact_keys(str(exc) or "timed out", ids)
                if not getattr(exc, "retryable", True) or attempt == ATTEMPTS:
                    partial = ApplyResult(done=done, rejected=rejected)
                    return _Applied(partial, f"gateway unavailable: {why}", tries)
                await _backoff(attempt)
                continue
            done.extend(result.done)
            rejected.extend((e, redact_keys(w, ids)) for e, w in result.rejected)
            failed = [(e, redact_keys(w, ids)) for e, w in result.failed]
            if not failed or attempt == ATTEMPTS:
                break
            keys = {e.key for e, _ in failed}
            pending = Diff(
                add=tuple(e for e in pending.add if e.key in keys),
                remove=tuple(e for e in pending.remove if e.key in keys),
                change=tuple(e for e in pending.change if e.key in keys),
            )
            await _backoff(attempt)
        return _Applied(ApplyResult(done=done, failed=failed, rejected=rejected), None, tries)

    # -- recording ---------------------------------------------------------------------

    async def _commit(
        self,
        desired: DesiredState,
        applied: _Applied,
        present: set[Key],
        now: datetime,
        *,
        cursor: int | None = None,
        removed: Sequence[str] = (),
    ) -> int:
        """Per-action state at this connector (`removed` for lifted or expired actions it
        took off), overall transitions with their audit events, and the cursor: one
        transaction, on a sync session in a thread, so it holds the database's write lock
        (SQLite's is the whole file's) for its statements alone. Returns how many entries
        that were recorded as applied had to be applied again (drift repaired)."""
        return await asyncio.to_thread(
            self._commit_blocking, desired, applied, present, now, cursor, removed
        )

    def _commit_blocking(
        self,
        desired: DesiredState,
        applied: _Applied,
        present: set[Key],
        now: datetime,
        cursor: int | None,
        removed: Sequence[str],
    ) -> int:
        name = self.config.name
        result = applied.result
        failed = {e.key: (why, True) for e, why in result.failed}
        failed.update({e.key: (why, False) for e, why in result.rejected})
        re_added = {e.key for e in result.done}
        action_ids = [a for ids in desired.actions.values() for a in ids]
        with self._db.write_blocking() as session, session.begin():
            before = repository.enforcement_at_blocking(session, name, action_ids)
            rows: list[dict[str, Any]] = []
            repaired: set[Key] = set()
            for key, ids in desired.actions.items():
                outcome = failed.get(key)
                state = "failed" if outcome else ("applied" if key in present else None)
                if state is None:
                    continue
                for action_id in ids:
                    previous = before.get(action_id)
                    if previous is not None and previous[0] == state == "applied":
                        if key in re_added:
                            repaired.add(key)
                        continue
                    attempts = (previous[2] if previous else 0) + applied.tries.get(key, 1)
                    rows.append(
                        {
                            "action_id": action_id,
                            "connector": name,
                            "state": state,
                            "attempts": attempts,
                            "error": outcome[0] if outcome else None,
                            "retryable": outcome[1] if outcome else True,
                            "updated_at": now,
                        }
                    )
            rows += [
                {
                    "action_id": action_id,
                    "connector": name,
                    "state": "removed",
                    "attempts": 0,
                    "error": None,
                    "retryable": True,
                    "updated_at": now,
                }
                for action_id in dict.fromkeys(removed)
            ]
            repository.upsert_enforcement(session, rows)
            touched = [r["action_id"] for r in rows]
            changes = self._overall(session, touched, now)
            events = [
                action_event(
                    action, changes[action.id], name, now, failed.get(_key_of(action), (None,))[0]
                )
                for action in self._actions.actions_by_id_blocking(session, list(changes))
            ]
            audit.record_blocking(session, events)
            if cursor is not None:
                repository.save_cursor_blocking(session, name, cursor, now)
            fields: dict[str, Any] = {}
            if failed:
                fields["last_error"] = "; ".join(
                    f"{e.type.value} {e.target_kind}:{_shown(e)}: {why}"
                    for e, why in (*result.failed, *result.rejected)
                )[:2000]
            repository.save_status(session, self._status(session, now, fields))
        return len(repaired)

    def _overall(
        self, session: Session, action_ids: Sequence[str], now: datetime
    ) -> dict[str, str]:
        """New overall states: applied when every connector that should enforce an action
        has it, failed when one failed; only transitions are returned (and stored)."""
        if not action_ids:
            return {}
        states = repository.enforcement_states(session, action_ids)
        actions = self._actions.action_states(session, action_ids)
        changes: dict[str, str] = {}
        for action_id, current, provider, kind, target_kind in actions:
            if current not in self._actions.ACTIVE:
                continue
            expected = self._expected(provider, kind, target_kind)
            mine = states.get(action_id, {})
            if any(mine.get(n) == "failed" for n in expected):
                new = ActionState.FAILED.value
            elif expected and all(mine.get(n) == "applied" for n in expected):
                new = ActionState.APPLIED.value
            else:
                new = ActionState.PENDING.value
            if new != current:
                changes[action_id] = new
        self._actions.set_action_states_blocking(session, changes, now)
        return changes

    def _status(
        self, session: Session, now: datetime, fields: dict[str, Any] | None
    ) -> dict[str, Any]:
        previous = repository.statuses_blocking(session).get(self.config.name)
        failed, rejected, standing = self._failing(session)
        row: dict[str, Any] = {
            "name": self.config.name,
            "healthy": True,
            "detail": "",
            "last_reconcile_at": previous.last_reconcile_at if previous else None,
            "last_success_at": previous.last_success_at if previous else None,
            "desired": previous.desired if previous else 0,
            "applied": previous.applied if previous else 0,
            "failed": failed,
            "rejected": rejected,
            "drift_repaired": previous.drift_repaired if previous else 0,
            "lag_seconds": 0.0,
            # An outage's error goes when the gateway answers again, an entry's when
            # nothing fails any more; while something fails, some error is shown (a
            # status saved when nothing failed yet left none to keep).
            "last_error": (
                (previous.last_error if previous and previous.healthy else None) or standing
            )
            if failed or rejected
            else None,
        }
        row.update(fields or {})
        return row

    def _failing(self, session: Session) -> tuple[int, int, str | None]:
        """(retryable, permanent) failures at this connector of still-active actions, and
        the error of one of them (what the status shows once an outage's error goes)."""
        failed = repository.failed_at(session, self.config.name)
        active = self._actions.active_among(session, [a for a, _, _ in failed])
        standing = [(a, r, e) for a, r, e in failed if a in active]
        retryable = sum(1 for _, r, _ in standing if r)
        error = next((e for _, _, e in standing if e), None)
        return retryable, len(standing) - retryable, error

    async def _save_status(self, now: datetime, *, error: str, lag_from: datetime | None) -> None:
        lag = (now - lag_from).total_seconds() if lag_from else 0.0
        fields = {
            "healthy": False,
            "detail": error,
            "last_error": error,
            "lag_seconds": max(lag, 0.0),
        }
        await asyncio.to_thread(self._write_status, now, lambda _: fields)

    def _write_status(
        self, now: datetime, fields: Callable[[ConnectorStatusRow | None], dict[str, Any]]
    ) -> None:
        """Store this connector's status: `fields(previous status)` over the counts."""
        with self._db.write_blocking() as session, session.begin():
            previous = repository.statuses_blocking(session).get(self.config.name)
            repository.save_status(session, self._status(session, now, fields(previous)))

    # -- full reconcile ----------------------------------------------------------------

    async def _reconcile_now(self) -> None:
        requests, self._requests = self._requests, []
        self._next_reconcile = time.monotonic() + self.config.reconcile_seconds
        try:
            report = await self._reconcile()
        except Exception as exc:
            for future in requests:
                if not future.done():
                    future.set_exception(exc)
            raise
        for future in requests:
            if not future.done():
                future.set_result(report)

    async def _reconcile(self) -> ReconcileReport:
        name = self.config.name
        report = ReconcileReport(connector=name, ok=False)
        now = utcnow()
        async with self._db.read() as session:
            head = await repository.change_head(session)
        with tracer().start_as_current_span(
            SPAN_RECONCILE,
            attributes={"tollgate.connector": name, "tollgate.gateway": self.config.type},
        ) as span:
            try:
                observed = await asyncio.wait_for(
                    self.connector.observe(), self.config.timeout_seconds * 4
                )
            except (ConnectorError, TimeoutError) as exc:
                report.error = f"gateway unavailable: {exc or 'timed out'}"
                self._note("down", report.error)
                span.set_status(trace.StatusCode.ERROR, report.error)
                await self._save_status(now, error=report.error, lag_from=None)
                return report
            # What the gateway holds and no page has asked for yet: pages take their
            # entries out, and what is left at the end are strays. Indexed in a thread:
            # at a million entries that is most of a second of Python, which this loop
            # (its lock checks, the other connectors' batches) would otherwise wait out.
            downs = self._downs[0]
            held = await asyncio.to_thread(_Held, observed.entries)
            del observed
            await asyncio.to_thread(release_freed_memory)
            after: tuple[str, str] | None = None
            first = True
            while first or after is not None:
                first = False
                async with self._db.read() as session:
                    rows, after = await self._actions.desired_page(
                        session, self._providers, self._types, after, PAGE, now, self._kinds
                    )
                desired = DesiredState()
                for action_id, _, kind, target_kind, value, params, created_at in rows:
                    entry = entry_of(kind, target_kind, value, params)
                    if entry is not None:
                        desired.add(action_id, entry, created_at)
                await self._reconcile_page(desired, held, report, now)
                await self._drain()  # pending changes wait for one page at most
            if EntryType.ALLOW.value in self._types:
                carve_outs = DesiredState()
                await self._allowed(carve_outs, None, now)
                await self._reconcile_page(carve_outs, held, report, now)
            strays = await self._strays(held.keys(), now)
            if strays:
                applied = await self._apply(Diff(remove=tuple(held.entry(k) for k in strays)))
                result = applied.result
                if applied.unreachable:
                    report.error = applied.unreachable
                removed = {e.key for e in result.done}
                report.removed += len(removed & set(strays))
                report.failed += len(result.failed) + len(result.rejected)
            if report.error is None and self._downs[0] != downs:
                # Pushes between its pages found the gateway unreachable after it was
                # observed: what it read is stale, and it must not say "recovered".
                report.error = self._downs[1]
            report.ok = report.error is None and report.failed == 0 and report.rejected == 0
            for key in (
                "desired",
                "applied",
                "added",
                "removed",
                "failed",
                "rejected",
                "drift_repaired",
            ):
                span.set_attribute(f"tollgate.{key}", getattr(report, key))
        if report.error is None and self.cursor < head:
            async with self._db.write() as session, session.begin():
                await repository.save_cursor(session, name, head, utcnow())
            self.cursor = head
            async with self._progress:
                self.attempted = max(self.attempted, head)
                self._progress.notify_all()
        await self._save_reconcile(report, now)
        if report.error:
            self._note("down", report.error)
        elif not report.ok:
            self._note("degraded", "; ".join(report.failures[:3]) or "entries failed")
        else:
            self._note("healthy")
        self._reconciled = self._reconciled or report.error is None
        return report

    async def _reconcile_page(
        self,
        desired: DesiredState,
        held: _Held,
        report: ReconcileReport,
        now: datetime,
    ) -> None:
        async with self._db.read() as session:
            ids = [a for ids in desired.actions.values() for a in ids]
            before = await repository.enforcement_at(session, self.config.name, ids)
        add: list[Entry] = []
        change: list[Entry] = []
        had: set[Key] = set()
        for key, entry in desired.entries.items():
            have = held.pop(key)
            if have is not None:
                had.add(key)
            if have is None:
                if (
                    self._reconciled
                    and desired.actions[key]
                    and all(
                        (b := before.get(a)) is not None and b[0] == "failed" and not b[1]
                        for a in desired.actions[key]
                    )
                ):
                    report.rejected += 1  # permanent: not tried again
                    if len(report.failures) < 20:
                        why = before[desired.actions[key][0]][3]
                        shown = f"{entry.type.value} {entry.target_kind}:{_shown(entry)}"
                        report.failures.append(f"{shown}: {why} (permanent)")
                    continue
                add.append(entry)
            elif have[0] != entry.requests_per_minute:
                change.append(entry)
        applied = _Applied(ApplyResult())
        if add or change:
            applied = await self._apply(Diff(add=tuple(add), change=tuple(change)))
        result = applied.result
        if applied.unreachable:
            report.error = applied.unreachable
        failed = {e.key for e, _ in (*result.failed, *result.rejected)}
        present = (had | {e.key for e in result.done}) - failed
        report.desired += len(desired.entries)
        report.added += sum(1 for e in result.done if e.key not in had)
        report.changed += sum(1 for e in result.done if e.key in had)
        report.failed += len(result.failed)
        report.rejected += len(result.rejected)
        report.failures += [
            f"{e.type.value} {e.target_kind}:{_shown(e)}: {why}"
            for e, why in (*result.failed, *result.rejected)
        ][: max(0, 20 - len(report.failures))]
        report.applied += len(present)
        report.drift_repaired += await self._commit(desired, applied, present, now)

    async def _strays(self, remaining: set[Key], now: datetime) -> list[Key]:
        """Of what the gateway held and no page asked for, what is still not desired
        (a push may have planned it while the pages went by)."""
        if not remaining:
            return []
        keys = set(remaining)
        desired = await self._desired_for(keys, now)
        return [k for k in keys if k not in desired.entries]

    async def _save_reconcile(self, report: ReconcileReport, now: datetime) -> None:
        def fields(previous: ConnectorStatusRow | None) -> dict[str, Any]:
            said = report.error or "; ".join(report.failures[:3])
            return {
                "healthy": report.error is None,
                "detail": report.error or "",
                "last_reconcile_at": now,
                "last_success_at": now
                if report.ok
                else (previous.last_success_at if previous else None),
                "desired": report.desired,
                "applied": report.applied,
                "drift_repaired": (previous.drift_repaired if previous else 0)
                + report.drift_repaired,
                # A reconcile with nothing to say leaves the error of an entry that still
                # fails (a refused one is not sent again, so it is not in the report).
                **({"last_error": said} if said else {}),
            }

        await asyncio.to_thread(self._write_status, now, fields)

    # -- one follower per connector ----------------------------------------------------

    @asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        """On PostgreSQL, replicas each run a follower per connector but only the holder
        of the connector's advisory lock applies; the others wait to take over."""
        if self._db.dialect != "postgresql":
            yield
            return
        key = FOLLOW_LOCK + zlib.crc32(self.config.name.encode()) % 0xFF
        stood_by = False
        while True:
            connection: AsyncConnection = await self._db.engine.connect()
            try:
                taken = await try_advisory_lock(connection, key)
                if taken:
                    if stood_by:
                        # Taking over from a holder whose connection was cut: it may
                        # not know yet, and applies until its next check.
                        self.taking_over = True
                        try:
                            await asyncio.sleep(TAKEOVER_GRACE_SECONDS)
                            await _ping_lock(connection)
                        finally:
                            self.taking_over = False
                            async with self._progress:
                                self._progress.notify_all()
                    self._lock_checked = time.monotonic()
                    self._lock_connection = connection
                    try:
                        yield
                    finally:
                        self._lock_connection = None
                        await connection.invalidate()
                    return
            finally:
                await connection.close()
            stood_by = True
            await asyncio.sleep(5.0)


@contextmanager
def _apply_span(config: ConnectorConfig, changes: Sequence[ChangeRow]) -> Iterator[trace.Span]:
    """The apply continues the trace of each change it carries: one span under the
    span that made the first change, and a twin with the same times and attributes
    under each other one (at most `TRACED_PER_BATCH`), linked to it, so every
    verdict's trace shows the apply that enforced it."""
    parents: dict[tuple[str, str], SpanContext] = {}
    for c in changes:
        if c.trace_id and c.span_id and len(parents) < TRACED_PER_BATCH:
            parents.setdefault(
                (c.trace_id, c.span_id),
                SpanContext(
                    int(c.trace_id, 16),
                    int(c.span_id, 16),
                    is_remote=True,
                    trace_flags=TraceFlags(TraceFlags.SAMPLED),
                ),
            )
    contexts = list(parents.values())
    attributes: dict[str, AttributeValue] = {
        "tollgate.connector": config.name,
        "tollgate.gateway": config.type,
        "tollgate.changes": len(changes),
    }
    t = tracer()
    started = time.time_ns()
    parent = trace.set_span_in_context(NonRecordingSpan(contexts[0])) if contexts else None
    with t.start_as_current_span(SPAN_APPLY, context=parent, attributes=attributes) as span:
        yield span
    ended = time.time_ns()
    main = span.get_span_context()
    for other in contexts[1:]:
        twin = t.start_span(
            SPAN_APPLY,
            context=trace.set_span_in_context(NonRecordingSpan(other)),
            attributes={**attributes, **(getattr(span, "attributes", None) or {})},
            links=[Link(main)],
            start_time=started,
        )
        twin.end(end_time=ended)


async def _ping_lock(connection: AsyncConnection) -> None:
    """Raise (as an outage) unless the connection holding a lock answers within
    `LOCK_CHECK_SECONDS`: one that hangs may be gone, and its lock with it."""
    try:
        await asyncio.wait_for(ping_connection(connection), LOCK_CHECK_SECONDS)
    except TimeoutError:
        raise DisconnectionError(
            f"the connection holding the lock did not answer within {LOCK_CHECK_SECONDS:g} s"
        ) from None


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)))


def _key_ids(change: Diff) -> list[str]:
    return [e.target_value for e in _entries(change) if e.target_kind == "api_key"]


def _entries(change: Diff) -> list[Entry]:
    return [*change.add, *change.remove, *change.change]


def _shown(entry: Entry) -> str:
    return key_handle(entry.target_value) if entry.target_kind == "api_key" else entry.target_value


_Limit = tuple[int | None]
"""What `_Held` keeps of an entry besides its key: its requests per minute, in a tuple
so that a held entry without a limit is told apart from one not held."""
_NO_LIMIT: _Limit = (None,)


class _Held:
    """What a gateway held at a reconcile's observe and no page has asked for yet, by
    entry type and target kind, then by target value: one dict slot per entry, with the
    value strings the connector's own. At a million entries an index of `Entry`s by key
    tuples took 170 MB (with the entries it kept); this takes about 30 MB, and keeps no
    entry."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        self._groups: dict[tuple[str, str], dict[str, _Limit]] = {}
        limits: dict[int | None, _Limit] = {None: _NO_LIMIT}  # one tuple per limit
        for e in entries:
            group = self._groups.get((e.type.value, e.target_kind))
            if group is None:
                group = self._groups[(e.type.value, e.target_kind)] = {}
            rpm = e.requests_per_minute
            limit = limits.get(rpm)
            if limit is None:
                limit = limits[rpm] = (rpm,)
            group[e.target_value] = limit

    def pop(self, key: Key) -> _Limit | None:
        """Take a key out: its limit when the gateway held it, else None."""
        group = self._groups.get((key[0], key[1]))
        return None if group is None else group.pop(key[2], None)

    def keys(self) -> set[Key]:
        return {(t, kind, value) for (t, kind), group in self._groups.items() for value in group}

    def entry(self, key: Key) -> Entry:
        """The entry held under a key not taken out."""
        (rpm,) = self._groups[(key[0], key[1])][key[2]]
        return Entry(EntryType(key[0]), key[1], key[2], rpm)


def _change_key(change: ChangeRow) -> Key:
    return (change.type, change.target_kind, change.target_value)


def _key_of(action: ActionRow) -> Key:
    return (action.type, action.target_kind, action.target_value)
