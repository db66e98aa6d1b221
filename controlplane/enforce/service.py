"""Keeping gateways in step with the desired state.

Desired state: a provider's active, non-shadow, unexpired actions. Each
connector reconciles periodically (observe, diff, apply: repairs drift) and is
pushed changes at once (a planned, lifted or expired action is applied without
waiting for the next poll). Applies are retried with exponential backoff and
full jitter; after the last try the entry's actions are `failed`, stay desired,
and the next reconcile tries again, so a gateway outage delays enforcement and
loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from opentelemetry import trace

from controlplane.audit import service as audit
from controlplane.audit.chain import EventDraft
from controlplane.domain.redact import key_handle, redact_keys
from controlplane.domain.vocabulary import ACTIVE_STATES, ActionState
from controlplane.enforce import repository
from controlplane.enforce.desired import DesiredState, diff, entry_of
from controlplane.enforce.registry import factory
from controlplane.enforce.sdk import (
    ApplyResult,
    Connector,
    ConnectorConfig,
    ConnectorError,
    Diff,
    Entry,
    EntryType,
    GatewayState,
)
from controlplane.errors import Conflict, NotFound
from controlplane.store.db import Database
from controlplane.store.models import ActionRow
from controlplane.store.types import utcnow
from controlplane.telemetry.tracing import tracer

log = logging.getLogger(__name__)

ATTEMPTS = 4
BACKOFF_BASE = 0.2
BACKOFF_CAP = 2.0
SPAN_APPLY = "connector.apply"
SPAN_RECONCILE = "connector.reconcile"
ACTIVE = {s.value for s in ACTIVE_STATES}
_PARAMLESS = {t.value: t for t in (EntryType.BLOCK, EntryType.REVOKE_KEY)}
"""Entry types whose entry is the target alone."""


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
    drift_repaired: int = 0
    error: str | None = None
    failures: list[str] = field(default_factory=list)


@dataclass
class _Running:
    config: ConnectorConfig
    connector: Connector
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    queued: bool = False
    """A push is waiting for the running reconcile: further pushes need not queue."""

    def serves(self, provider: str) -> bool:
        return "*" in self.config.providers or provider in self.config.providers


class Enforcer:
    def __init__(self, db: Database, configs: Sequence[ConnectorConfig]) -> None:
        self._db = db
        self._configs = list(configs)
        self._running: dict[str, _Running] = {}
        self._http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self._configs]

    def config(self, name: str) -> ConnectorConfig:
        for c in self._configs:
            if c.name == name:
                return c
        raise NotFound(f"no connector {name!r}; configured: {', '.join(self.names) or 'none'}")

    async def start(self) -> None:
        """Build every configured connector (they get their HTTP client from here)."""
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0))
        for config in self._configs:
            connector = factory(config.type)(config, self._http)
            self._running[config.name] = _Running(config, connector)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for running in self._running.values():
            await running.connector.close()
        if self._http is not None:
            await self._http.aclose()

    async def health(self, name: str) -> tuple[bool, str, str]:
        running = self._running[name]
        try:
            h = await asyncio.wait_for(running.connector.health(), running.config.timeout_seconds)
        except (ConnectorError, TimeoutError) as exc:
            return False, running.config.type, str(exc) or "timed out"
        return h.ok, h.gateway, h.detail

    # -- full reconcile ----------------------------------------------------------------

    async def reconcile_all(self) -> list[ReconcileReport]:
        return [await self.reconcile(name) for name in self._running]

    async def reconcile(self, name: str) -> ReconcileReport:
        """Observe the gateway, diff it against the desired state, apply the difference."""
        running = self._running.get(name)
        if running is None:
            self.config(name)  # raises NotFound naming the configured ones
            raise NotFound(f"connector {name!r} is not running")
        async with running.lock:
            return await self._reconcile(running)

    async def _reconcile(self, running: _Running) -> ReconcileReport:
        name = running.config.name
        report = ReconcileReport(connector=name, ok=False)
        now = utcnow()
        with tracer().start_as_current_span(
            SPAN_RECONCILE,
            attributes={"tollgate.connector": name, "tollgate.gateway": running.config.type},
        ) as span:
            desired = await self._desired(running, now)
            report.desired = len(desired.entries)
            try:
                observed = await asyncio.wait_for(
                    running.connector.observe(), running.config.timeout_seconds * 4
                )
            except (ConnectorError, TimeoutError) as exc:
                report.error = f"gateway unavailable: {exc or 'timed out'}"
                span.set_status(trace.StatusCode.ERROR, report.error)
                await self._save_status(running, report, desired, set(), now)
                return report
            change = diff(desired.entries.values(), observed.entries)
            result = await self._apply(running, change)
            present = _present_after(observed, result)
            report.added, report.removed = len(change.add), len(change.remove)
            report.changed = len(change.change)
            report.failed = len(result.failed)
            report.failures = [
                f"{e.type.value} {e.target_kind}:{_shown(e)}: {why}"
                for e, why in result.failed[:20]
            ]
            report.applied = sum(1 for k in desired.entries if k in present)
            report.drift_repaired = await self._record(running, desired, present, result, now)
            report.ok = not result.failed
            for key, value in (
                ("desired", report.desired),
                ("applied", report.applied),
                ("added", report.added),
                ("removed", report.removed),
                ("failed", report.failed),
                ("drift_repaired", report.drift_repaired),
            ):
                span.set_attribute(f"tollgate.{key}", value)
            await self._save_status(running, report, desired, present, now)
        return report

    async def _desired(self, running: _Running, now: datetime) -> DesiredState:
        providers = None if "*" in running.config.providers else running.config.providers
        types = [t.value for t in running.connector.capabilities()]
        async with self._db.read() as session:
            rows = await repository.desired_actions(session, providers, types, now)
        desired = DesiredState()
        entries, actions, since = desired.entries, desired.actions, desired.since
        for action_id, _, kind, target_kind, value, params, created_at in rows:
            # entry_of, minus its enum lookup where no parameter is read (most rows)
            simple = _PARAMLESS.get(kind)
            entry = (
                Entry(simple, target_kind, value)
                if simple
                else entry_of(kind, target_kind, value, params)
            )
            if entry is None:
                continue
            key = (kind, target_kind, value)  # entry.key, without building it again
            if key in entries:
                desired.add(action_id, entry, created_at)  # more actions, one entry: rare
            else:  # what `add` does for a new key, minus its cost, 100k times
                entries[key], actions[key], since[key] = entry, [action_id], created_at
        return desired

    async def _apply(self, running: _Running, change: Diff) -> ApplyResult:
        """Apply with retries (exponential backoff, full jitter) on retryable failures."""
        if not change:
            return ApplyResult()
        done: list[Entry] = []
        pending = change
        failed: list[tuple[Entry, str]] = []
        for attempt in range(1, ATTEMPTS + 1):
            with tracer().start_as_current_span(
                SPAN_APPLY,
                attributes={
                    "tollgate.connector": running.config.name,
                    "tollgate.gateway": running.config.type,
                    "tollgate.attempt": attempt,
                    "tollgate.add": len(pending.add),
                    "tollgate.remove": len(pending.remove),
                    "tollgate.change": len(pending.change),
                },
            ) as span:
                try:
                    result = await asyncio.wait_for(
                        running.connector.apply(pending),
                        running.config.timeout_seconds * max(1, pending.size // 500 + 1),
                    )
                except (ConnectorError, TimeoutError) as exc:
                    retryable = getattr(exc, "retryable", True)
                    why = redact_keys(str(exc) or "timed out", _key_ids(change))
                    result = ApplyResult(failed=[(e, why) for e in _entries(pending)])
                    if not retryable:
                        span.set_status(trace.StatusCode.ERROR, why)
                        return ApplyResult(done=done, failed=result.failed)
                span.set_attribute("tollgate.done", len(result.done))
                span.set_attribute("tollgate.failed", len(result.failed))
            done.extend(result.done)
            failed = _redacted(result.failed, change)
            if not failed or attempt == ATTEMPTS:
                break
            keys = {e.key for e, _ in failed}
            pending = Diff(
                add=tuple(e for e in pending.add if e.key in keys),
                remove=tuple(e for e in pending.remove if e.key in keys),
                change=tuple(e for e in pending.change if e.key in keys),
            )
            await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)))
        return ApplyResult(done=done, failed=failed)

    async def _record(
        self,
        running: _Running,
        desired: DesiredState,
        present: set[tuple[str, str, str]],
        result: ApplyResult,
        now: datetime,
    ) -> int:
        """Per-action state at this connector, then each action's overall state. Returns
        how many entries were re-applied after being applied before (drift repaired)."""
        name = running.config.name
        failed = {e.key: why for e, why in result.failed}
        action_ids = [a for ids in desired.actions.values() for a in ids]
        async with self._db.write() as session, session.begin():
            # Every desired action's state here, as plain values: most are unchanged, and
            # ORM rows would cost time and memory (see `_attempts`).
            before = await repository.enforcement_states(session, action_ids)
            writes: list[tuple[str, str, tuple[str, str, str]]] = []
            repaired: set[tuple[str, str, str]] = set()
            re_added = {e.key for e in result.done}
            for key, ids in desired.actions.items():
                state = "failed" if key in failed else ("applied" if key in present else None)
                if state is None:
                    continue
                for action_id in ids:
                    previous = before.get(action_id, {}).get(name)
                    if previous == state == "applied":
                        if key in re_added:
                            repaired.add(key)
                        continue
                    writes.append((action_id, state, key))
            del before
            touched = [action_id for action_id, _, _ in writes]
            attempts = await self._attempts(session, name, touched)
            rows = [
                {
                    "action_id": action_id,
                    "connector": name,
                    "state": state,
                    "attempts": attempts.get(action_id, 0) + (ATTEMPTS if state == "failed" else 1),
                    "error": failed.get(key),
                    "updated_at": now,
                }
                for action_id, state, key in writes
            ]
            events = []
            await repository.upsert_enforcement(session, rows)
            changes = await self._overall(session, touched, now)
            for action in await repository.actions_by_id(session, list(changes)):
                events.append(
                    _event(action, changes[action.id], name, now, failed.get(_key_of(action)))
                )
            await audit.record(session, events)
        return len(repaired)

    @staticmethod
    async def _attempts(session: Any, name: str, action_ids: Sequence[str]) -> dict[str, int]:
        """Attempts so far at this connector of the actions whose state is about to be
        written. The rows are dropped from the session once read: the bulk DELETE and
        UPDATE that follow would otherwise check every loaded row against their WHERE
        clause, once per chunk of ids (quadratic: minutes for 100k actions)."""
        if not action_ids:
            return {}
        rows = await repository.enforcement_of(session, name, action_ids)
        attempts = {action_id: row.attempts for action_id, row in rows.items()}
        session.expunge_all()
        return attempts

    async def _overall(
        self, session: Any, action_ids: Sequence[str], now: datetime
    ) -> dict[str, str]:
        """New overall states: applied when every connector that should enforce an action
        has it, failed when one failed; only transitions are returned (and stored)."""
        if not action_ids:
            return {}
        states = await repository.enforcement_states(session, action_ids)
        actions = [
            (a.id, a.state, a.provider, a.type)
            for a in await repository.actions_by_id(session, action_ids)
        ]
        session.expunge_all()  # as in `_attempts`: the bulk UPDATE below would scan them
        expected_by: dict[tuple[str, str], list[str]] = {}
        changes: dict[str, str] = {}
        for action_id, current, provider, kind in actions:
            if current not in ACTIVE:
                continue
            expected = expected_by.get((provider, kind))
            if expected is None:
                expected = expected_by[(provider, kind)] = [
                    r.config.name
                    for r in self._running.values()
                    if r.serves(provider) and kind in {t.value for t in r.connector.capabilities()}
                ]
            mine = states.get(action_id, {})
            if any(mine.get(n) == "failed" for n in expected):
                new = ActionState.FAILED.value
            elif expected and all(mine.get(n) == "applied" for n in expected):
                new = ActionState.APPLIED.value
            else:
                new = ActionState.PENDING.value
            if new != current:
                changes[action_id] = new
        await repository.set_action_states(session, changes, now)
        return changes

    async def _save_status(
        self,
        running: _Running,
        report: ReconcileReport,
        desired: DesiredState,
        present: set[tuple[str, str, str]],
        now: datetime,
    ) -> None:
        missing = [desired.since[k] for k in desired.entries if k not in present]
        lag = (now - min(missing)).total_seconds() if missing else 0.0
        async with self._db.write() as session, session.begin():
            previous = (await repository.statuses(session)).get(running.config.name)
            await repository.save_status(
                session,
                {
                    "name": running.config.name,
                    "healthy": report.error is None,
                    "detail": report.error or "",
                    "last_reconcile_at": now,
                    "last_success_at": now
                    if report.ok
                    else (previous.last_success_at if previous else None),
                    "desired": report.desired,
                    "applied": report.applied,
                    "failed": report.failed,
                    "drift_repaired": (previous.drift_repaired if previous else 0)
                    + report.drift_repaired,
                    "lag_seconds": max(lag, 0.0),
                    "last_error": report.error or ("; ".join(report.failures[:3]) or None),
                },
            )

    # -- push on change ----------------------------------------------------------------

    def push(self, providers: Iterable[str]) -> None:
        """Reconcile the connectors serving these providers now, in the background."""
        wanted = set(providers)
        for running in self._running.values():
            if any(running.serves(p) for p in wanted):
                self.push_one(running.config.name)

    def push_one(self, name: str) -> None:
        running = self._running[name]
        task = asyncio.create_task(self._push(running), name=f"push-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait for pushes in flight (tests, benchmarks and shutdown use it)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _push(self, running: _Running) -> None:
        if running.lock.locked():
            # A reconcile is running; one more right after it covers this change too.
            if running.queued:
                return
            running.queued = True
        try:
            async with running.lock:
                running.queued = False
                await self._reconcile(running)
        except Exception:
            log.exception(
                "push to connector %s failed; the periodic reconcile will retry",
                running.config.name,
            )

    # -- expiry and lifts --------------------------------------------------------------

    async def expire(self, limit: int = 5000) -> int:
        """Mark actions past their TTL expired (each an audit event) and push removals."""
        now = utcnow()
        async with self._db.write() as session, session.begin():
            due = await repository.due_to_expire(session, now, limit)
            if not due:
                return 0
            changes = {a.id: ActionState.EXPIRED.value for a in due}
            await repository.set_action_states(session, changes, now)
            await audit.record(
                session, [_event(a, ActionState.EXPIRED.value, "tollgate", now) for a in due]
            )
        self.push({a.provider for a in due})
        return len(due)

    async def lift(self, action_id: str, actor: str, reason: str) -> ActionRow:
        now = utcnow()
        async with self._db.write() as session, session.begin():
            row, lifted = await repository.lift(session, action_id, now)
            if row is None:
                raise NotFound(f"no action {action_id!r}")
            if not lifted:
                raise Conflict(f"action {action_id} is {row.state}, not active: nothing to lift")
            await audit.record(
                session,
                [
                    EventDraft(
                        type="action.lifted",
                        actor=actor,
                        at=now,
                        provider=row.provider,
                        verdict_id=row.verdict_id,
                        decision_id=row.decision_id,
                        action_id=row.id,
                        trace_id=row.trace_id,
                        payload={
                            "reason": reason,
                            "type": row.type,
                            "target": {"kind": row.target_kind, "value": row.target_value},
                        },
                    )
                ],
            )
        self.push([row.provider])
        return row


def _key_ids(change: Diff) -> list[str]:
    return [e.target_value for e in _entries(change) if e.target_kind == "api_key"]


def _redacted(failed: list[tuple[Entry, str]], change: Diff) -> list[tuple[Entry, str]]:
    """Gateways may quote a key id in their errors; what Tollgate keeps shows its handle."""
    ids = _key_ids(change)
    return [(entry, redact_keys(why, ids)) for entry, why in failed]


def _shown(entry: Entry) -> str:
    return key_handle(entry.target_value) if entry.target_kind == "api_key" else entry.target_value


def _present_after(observed: GatewayState, result: ApplyResult) -> set[tuple[str, str, str]]:
    present = {e.key for e in observed.entries}
    failed = {e.key for e, _ in result.failed}
    for entry in result.done:
        present.add(entry.key)
    return present - failed


def _entries(change: Diff) -> list[Entry]:
    return [*change.add, *change.remove, *change.change]


def _key_of(action: ActionRow) -> tuple[str, str, str]:
    return (action.type, action.target_kind, action.target_value)


def _event(
    action: ActionRow, state: str, actor: str, at: datetime, error: str | None = None
) -> EventDraft:
    payload: dict[str, Any] = {
        "state": state,
        "type": action.type,
        "target": {"kind": action.target_kind, "value": action.target_value},
    }
    if error:
        payload["error"] = error
    return EventDraft(
        type=f"action.{state}",
        actor=actor,
        at=at,
        provider=action.provider,
        verdict_id=action.verdict_id,
        decision_id=action.decision_id,
        action_id=action.id,
        trace_id=action.trace_id,
        payload=payload,
    )
