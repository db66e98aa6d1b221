"""The evaluate step: build each verdict's input from batch-sized lookups, evaluate it
against the active revision, and turn the result into a decision (planning its
actions through the plan step). Nothing is written here: the caller records the
outcomes in its own transaction (`record`, then the plan step's `record`).

A verdict that shares a subject with earlier verdicts of its batch waits for them, so
a repeat sees what the first one planned, and for nothing else: its input is built as
soon as they are decided, while the engine processes evaluate the rest of the batch,
and each verdict is decided (parsed, planned) as soon as its evaluation is done.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from opentelemetry import trace
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from controlplane.audit.chain import EventDraft
from controlplane.customers import repository as customers_repo
from controlplane.customers.repository import ScopesRead, Sighted
from controlplane.customers.service import customer_document
from controlplane.domain.action import MalformedDecision, parse_decision
from controlplane.domain.verdict import Verdict
from controlplane.domain.vocabulary import DecisionStatus
from controlplane.engine.base import NOT_YET, Evaluation, PolicyEngine
from controlplane.engine.runtime import EngineSlot
from controlplane.evaluate import repository
from controlplane.evaluate.context import (
    HISTORY_WINDOW,
    Lookups,
    PriorVerdict,
    build_input,
    network_of,
    shown,
    subject_dependencies,
)
from controlplane.evaluate.repository import action_document
from controlplane.intel.hashing import Keyring
from controlplane.plan.service import (
    PIPELINE_ACTOR,
    Planned,
    acted_on,
    acted_targets,
    covered_keys,
    fallback_actions,
    followup_revocations,
    plan,
    planned_events,
    suspension_children,
)
from controlplane.plan.service import (
    insert as insert_planned,
)
from controlplane.settings import Providers
from controlplane.store.db import Database
from controlplane.store.models import new_id
from controlplane.store.repository import lock_keys, try_lock_each, unlock_all, unlock_keys
from controlplane.telemetry import metrics
from controlplane.telemetry.tracing import SPAN_EVALUATE, pipeline_span, trace_id_hex


def subject_locks(verdicts: Iterable[Verdict]) -> list[int]:
    """The advisory lock keys of a batch's subjects: a signed 64-bit hash of each
    (provider, kind, value) of its accounts, keys, orgs and IPs."""
    keys = set()
    for v in verdicts:
        for kind, value in v.subject.targets:
            digest = hashlib.blake2b(
                f"{v.provider}\0{kind}\0{value}".encode(), digest_size=8
            ).digest()
            keys.add(int.from_bytes(digest, "big", signed=True))
    return sorted(keys)


@dataclass(frozen=True)
class Pending:
    """A verdict to decide, with when it arrived and the span that traces it."""

    verdict: Verdict
    received_at: datetime
    span: trace.Span | None = None


@dataclass
class Outcome:
    decision: dict[str, Any]
    """The decision row."""
    planned: Planned

    @property
    def actions(self) -> list[dict[str, Any]]:
        return self.planned.actions


Sink = Callable[[Sequence[tuple[Pending, Outcome]]], None]
"""Takes outcomes as they are decided (`Recording.add`)."""


@dataclass
class Decided:
    """A batch's outcomes by verdict id, with what was read of its accounts' and orgs'
    sightings before it (so `record` writes only what is new, without reading again)."""

    outcomes: dict[str, Outcome]
    sightings: ScopesRead = field(default_factory=ScopesRead)


class _Schedule:
    """A batch's inputs, each built (on the decide thread, as the engine asks for the
    next) as soon as the verdicts it waits for are decided (`subject_dependencies`):
    the engines evaluate the dependants of the first verdicts while the others are
    still being decided, rather than the batch going in waves. `NOT_YET` while every
    verdict left waits for one under way.

    What a verdict is shown of the batch is what the verdicts it waits for (directly or
    through others) did, never what happened to be decided before it: its input is the
    same whatever the engines' timing."""

    def __init__(self, pending: Sequence[Pending], lookups: Lookups, now: datetime) -> None:
        self._pending = pending
        self._lookups = lookups
        self._now = now
        self._waits = subject_dependencies([p.verdict for p in pending])
        self._left = [len(w) for w in self._waits]
        self._then: list[list[int]] = [[] for _ in pending]
        """Per verdict, those that wait for it."""
        for position, waits in enumerate(self._waits):
            for earlier in waits:
                self._then[earlier].append(position)
        self._ready = collections.deque(i for i, n in enumerate(self._left) if not n)
        self._given: collections.deque[tuple[int, dict[str, Any]]] = collections.deque()

    def __len__(self) -> int:
        return len(self._pending)

    def __iter__(self) -> Iterator[dict[str, Any] | None]:
        while True:
            if not self._ready:
                yield NOT_YET
                continue
            position = self._ready.popleft()
            p = self._pending[position]
            given = build_input(
                p.verdict, p.received_at, self._lookups, self._now, partial(self._sees, position)
            )
            self._given.append((position, given))
            yield given

    def next_given(self) -> tuple[int, dict[str, Any]]:
        """The position and input of the evaluation the engine gives next (it gives them
        in the order the inputs were built)."""
        return self._given.popleft()

    def decided(self, position: int) -> None:
        """The verdict at `position` is decided: those waiting for it alone are ready."""
        for later in self._then[position]:
            self._left[later] -= 1
            if not self._left[later]:
                self._ready.append(later)

    def _sees(self, position: int, earlier: int) -> bool:
        """Whether the verdict at `position` waited for the one at `earlier`, directly or
        through others (only verdicts in between can link them)."""
        seen: set[int] = set()
        stack = [position]
        while stack:
            for waited in self._waits[stack.pop()]:
                if waited == earlier:
                    return True
                if waited > earlier and waited not in seen:
                    seen.add(waited)
                    stack.append(waited)
        return False


@dataclass
class _Operation:
    """What is stored of a batch's accounts and orgs (`Decider._read_operation`)."""

    read: ScopesRead
    acted: set[tuple[str, str, str]]
    """The scopes' flagged keys and accounts revoked or suspended now."""
    customers: dict[str, dict[str, Any]]
    verified: dict[tuple[str, str], set[str]]
    """(provider, network) -> the verified customers' accounts seen using it."""

    def fill(self, lookups: Lookups) -> ScopesRead:
        lookups.add_sightings(self.read)
        lookups.acted |= self.acted
        lookups.customers = self.customers
        for (provider, net), who in self.verified.items():
            lookups.verified_networks.setdefault(provider, {})[net] = who
        return self.read


class Decider:
    """Decides verdicts one batch at a time per process, in the decide thread, and, on
    PostgreSQL, one batch per subject across replicas (`exclusive`): a verdict's history
    must not race another's."""

    def __init__(
        self,
        db: Database,
        engines: EngineSlot,
        providers: Providers | None = None,
        keyring: Keyring | None = None,
        *,
        verdicts: repository.VerdictHistory,
    ) -> None:
        self._db = db
        self._verdicts = verdicts
        """Earlier verdicts (ingest's repository: a stage never imports an earlier one)."""
        self._providers = providers or Providers()
        """Each provider's `min_prefix` (checked on policy output) and `fallback`."""
        self._engines = engines
        self._intel = repository.IntelCache(keyring, db)
        self._cidrs = repository.CidrTargets()
        self._locks: Connection | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tollgate-read")
        """Reads a batch's accounts and orgs while the decide thread reads its history."""

    @contextmanager
    def exclusive(self, parts: Sequence[Sequence[Verdict]]) -> Iterator[list[int]]:
        """Held (in the decide thread) from reading a batch's history to committing its
        outcomes; gives the indexes of the `parts` (requests, each decided whole) to
        decide now, in order. One decide thread per process decides one batch at a
        time; on PostgreSQL, replicas also lock the subjects decided (session advisory
        locks on hashes of their accounts, keys, orgs and IPs), so two replicas decide
        disjoint subjects at once while a subject's history always includes what another
        replica just decided about it.

        The locks are tried without waiting. A part whose subjects another replica holds
        is left out (its locks released at once), with every later part sharing a
        subject with it (a subject's verdicts keep their order); the caller decides it
        in its next batch. Without that, replicas sharing busy subjects took turns: one
        batch waited for the other's whole batch, for one subject in common. The first
        part is never left out twice: when it cannot go, the batch waits, holding
        nothing, for all its subjects in ascending order (never a deadlock)."""
        if self._db.dialect != "postgresql":
            yield list(range(len(parts)))
            return
        connection = self._lock_connection()
        wanted = [subject_locks(part) for part in parts]
        everything = sorted({k for keys in wanted for k in keys})
        started = time.perf_counter()
        waited = 0.0
        try:
            taken = try_lock_each(connection, everything)
            chosen = list(range(len(parts)))
            if len(taken) < len(everything):
                chosen = []
                blocked: set[int] = set()
                for i, keys in enumerate(wanted):
                    if taken.issuperset(keys) and blocked.isdisjoint(keys):
                        chosen.append(i)
                    else:
                        blocked.update(keys)
                if chosen[:1] == [0]:
                    used = {k for i in chosen for k in wanted[i]}
                    unlock_keys(connection, sorted(taken - used))
                else:  # the oldest cannot go: wait for everything, holding nothing
                    unlock_all(connection)
                    contended = time.perf_counter()
                    lock_keys(connection, everything)
                    waited = time.perf_counter() - contended
                    chosen = list(range(len(parts)))
        except BaseException:
            self._drop_locks()  # a broken connection holds nothing: the next batch reconnects
            raise
        metrics.decide_locked(time.perf_counter() - started, waited, len(parts) - len(chosen))
        try:
            yield chosen
        finally:
            try:
                unlock_all(connection)
            except BaseException:
                self._drop_locks()
                raise

    def _lock_connection(self) -> Connection:
        """The decide thread's own connection for subject locks, kept open (autocommit:
        one round trip to lock a batch's subjects, one to release them)."""
        if self._locks is None or self._locks.closed or self._locks.invalidated:
            self._locks = self._db.blocking.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            )
        return self._locks

    def warm(self, session: Session, now: datetime) -> None:
        """(decide thread, at start) Load what batches consult beside their own rows:
        the networks under CIDR actions and the intel index. With hundreds of thousands
        of each this takes seconds, which the first verdicts would otherwise wait."""
        self._cidrs.holding(session, set(), now)
        self._intel.index(session, now)

    def close(self) -> None:
        """(decide thread) Close the lock connection and the intel index's loader."""
        self._drop_locks()
        self._intel.close()
        self._reader.shutdown(wait=True)

    def _drop_locks(self) -> None:
        """Close the lock connection; its locks go with it."""
        if self._locks is not None:
            self._locks.invalidate()
            self._locks.close()
            self._locks = None

    def decide(
        self,
        reading: tuple[Session, Session],
        pending: Sequence[Pending],
        now: datetime,
        loop: asyncio.AbstractEventLoop,
        sink: Sink | None = None,
    ) -> Decided:
        """The outcome of each of `pending` by verdict id (in the decide thread, inside
        `exclusive`; the engine evaluates on `loop`'s side). `sink` (a `Recording`'s
        `add`) is given the outcomes SINK_EVERY at a time as they are decided, and the
        rest at the end: it writes them while the engines evaluate the next ones.
        `reading`: two read sessions, the first for the batch's history (on this
        thread), the second for its accounts and orgs (on the read thread, meanwhile)."""
        if not pending:
            return Decided({})
        lookups = Lookups()
        read = self._fill(*reading, lookups, pending, now)
        engine = self._engines.current
        schedule = _Schedule(pending, lookups, now)
        outcomes: dict[str, Outcome] = {}
        ready: list[tuple[Pending, Outcome]] = []
        # Closed however the batch ends: the engine is the next batch's.
        with closing(engine.evaluate_blocking(schedule, loop)) as evaluations:
            for evaluation in evaluations:
                position, given = schedule.next_given()
                item = pending[position]
                outcome = self._outcome(engine, item, given, evaluation, now)
                outcomes[item.verdict.id] = outcome
                named = set(item.verdict.subject.targets)
                for action in outcome.actions:
                    if not action["shadow"]:
                        own = (action["target_kind"], action["target_value"]) in named
                        lookups.add_action(
                            item.verdict.provider,
                            action_document(action),
                            None if own else position,
                        )
                lookups.saw(item.verdict)
                schedule.decided(position)
                if sink is not None:
                    ready.append((item, outcome))
                    if len(ready) >= SINK_EVERY:
                        sink(ready)
                        ready = []
        if sink is not None and ready:
            sink(ready)
        return Decided(outcomes, read)

    def _fill(
        self,
        session: Session,
        aside: Session,
        lookups: Lookups,
        pending: Sequence[Pending],
        now: datetime,
    ) -> ScopesRead:
        keys = {
            (p.verdict.provider, kind, value)
            for p in pending
            for kind, value in p.verdict.subject.targets
        }
        ips = {(p.verdict.provider, ip) for p in pending for ip in p.verdict.subject.ips}
        keys |= self._cidrs.holding(session, ips, now)
        # The batch's accounts and orgs are read on the other session meanwhile: the two
        # sets of statements need nothing of each other.
        operation = self._reader.submit(self._read_operation, aside, pending, frozenset(keys), now)
        try:
            self._fill_history(session, lookups, pending, keys, now)
        finally:
            futures.wait([operation])
        return operation.result().fill(lookups)

    def _fill_history(
        self,
        session: Session,
        lookups: Lookups,
        pending: Sequence[Pending],
        keys: set[tuple[str, str, str]],
        now: datetime,
    ) -> None:
        """The subjects' active actions, exemptions, remedies and earlier verdicts (the
        batch's own among them), and the intel index."""
        repository.fill_lookups(session, lookups, keys, now, self._providers)
        repository.fill_prior(
            session,
            lookups,
            [
                repository.HistoryAsk(
                    p.verdict.provider,
                    p.verdict.id,
                    p.verdict.subject.account_id,
                    p.verdict.subject.api_key_id,
                    p.verdict.observed_at - HISTORY_WINDOW,
                    p.received_at,
                )
                for p in pending
            ],
            self._verdicts,
        )
        # The batch's own verdicts are history for the later ones (they are stored with
        # their decisions, after this): each counts those received before it.
        for p in pending:
            v = p.verdict
            prior = PriorVerdict(
                v.id,
                v.subject.account_id,
                v.subject.api_key_id,
                v.observed_at,
                p.received_at,
                v.score,
                v.confidence,
                v.detector.name,
            )
            lookups.add_own(v.provider, prior)
        lookups.intel = self._intel.index(session, now)

    def _read_operation(
        self,
        session: Session,
        pending: Sequence[Pending],
        filled: frozenset[tuple[str, str, str]],
        now: datetime,
    ) -> _Operation:
        """(the read thread, with `aside`) Customer records of the batch's accounts; what
        is stored of what its verdicts show of their accounts and orgs (tallies, the
        sightings among them, the flagged keys and accounts, with those keys' and
        accounts' active actions); which of their networks verified customers use (read
        from the verified customers' sightings alone, however many others used a
        network). All by index, for the batch: none grows with what a scope was seen
        with before."""
        read = customers_repo.read_sightings(session, _sightings(pending))
        flagged = {(k[0], k[3], k[4]) for k in read.acted}
        acted = acted_on(session, flagged - filled, now)
        accounts = {p.verdict.subject.account_id for p in pending if p.verdict.subject.account_id}
        records = customers_repo.customers_of(session, accounts)
        networks = {
            (p.verdict.provider, network_of(ip)) for p in pending for ip in p.verdict.subject.ips
        }
        for (provider, _, _), tally in read.tallies.items():
            networks.update((provider, n) for n in tally.first_networks)
        verified = customers_repo.verified_seeing(session, "network", networks)
        return _Operation(
            read, acted, {a: customer_document(r) for a, r in records.items()}, verified
        )

    def _outcome(
        self,
        engine: PolicyEngine,
        item: Pending,
        given: dict[str, Any],
        evaluation: Evaluation,
        now: datetime,
    ) -> Outcome:
        verdict = item.verdict
        trace_id = trace_id_hex(item.span) if item.span else None
        decision_id = new_id("dec")
        status, error, shadow = DecisionStatus.OK, evaluation.error, False
        planned = Planned([])
        end_ns = evaluation.started_ns + int(evaluation.duration_ms * 1e6)
        # Never the current context (nothing below reads it); its child, the plan's span,
        # is given it.
        span = pipeline_span(
            SPAN_EVALUATE,
            item.span,
            {
                "tollgate.verdict_id": verdict.id,
                "tollgate.provider": verdict.provider,
                "tollgate.policy_revision": engine.revision,
                "tollgate.entrypoint": engine.entrypoint,
                "tollgate.decision_id": decision_id,
            },
            evaluation.started_ns or None,
        )
        settings = self._providers.of(verdict.provider)
        context = {
            "decision_id": decision_id,
            "verdict_id": verdict.id,
            "provider": verdict.provider,
            "policy_revision": engine.revision,
            "trace_id": trace_id,
            "now": now,
        }
        if evaluation.ok:
            try:
                decided = parse_decision(evaluation.result, settings.min_prefix)
            except MalformedDecision as exc:
                error = f"malformed decision: {exc}"
            else:
                shadow = decided.shadow
                if decided.actions:
                    planned = plan(decided, span, shadow_rules=engine.bundle.shadow, **context)
        if error is not None:
            status = DecisionStatus.ERROR
            span.set_status(trace.StatusCode.ERROR, error)
            # An error must never be a quiet no-action (an attacker who makes the engine
            # refuse the input would go untouched): the provider's fallback is planned.
            planned = Planned(
                fallback_actions(settings.fallback, verdict.subject.targets, error, **context)
            )
            span.set_attribute("tollgate.fallback", settings.fallback)
        # A key of a suspended account or org is revoked as it appears, whatever the
        # policy said (an operation's new keys never get through on a fresh key).
        planned.actions += followup_revocations(
            verdict.subject.targets,
            given["history"]["active_actions"],
            planned.actions,
            now,
            **{k: v for k, v in context.items() if k != "now"},
            created_at=now,
            updated_at=now,
        )
        span.set_attribute("tollgate.decision_status", status.value)
        span.end(end_time=max(end_ns, evaluation.started_ns) or None)
        decision = {
            "id": decision_id,
            "verdict_id": verdict.id,
            "provider": verdict.provider,
            "policy_revision": engine.revision,
            "entrypoint": engine.entrypoint,
            "engine": engine.name,
            "status": status.value,
            "shadow": shadow,
            "input": given,
            "result": evaluation.result,
            "error": error,
            "duration_ms": evaluation.duration_ms,
            "trace_id": trace_id,
            "decided_at": now,
        }
        return Outcome(decision, planned)


SINK_EVERY = 100
"""Outcomes handed to `decide`'s sink at a time: each hand-over writes them (a few
statements) while the engines go on evaluating the next ones."""


class Recording:
    """A batch's decisions and actions inserted as they are decided, in the caller's
    transaction (`add`, `decide`'s sink: the writes overlap the evaluations still under
    way), then its sightings (`record_sightings`) and the events of its decisions and
    actions, in the batch's order (`events`). The caller chains the events, logs the
    changes and commits, then `count`s the outcomes."""

    def __init__(
        self,
        session: Session,
        pending: Sequence[Pending],
        now: datetime,
        before: Callable[[], None],
    ) -> None:
        self._session = session
        self._pending = pending
        self._now = now
        self._before: Callable[[], None] | None = before
        """The caller's writes due before the first decision (its verdict rows)."""
        self._position = {p.verdict.id: i for i, p in enumerate(pending)}
        self._outcomes: list[Outcome] = []
        self._named: dict[tuple[str, str, str], list[tuple[int, str]]] | None = None
        """(provider, `account`|`org`, id) -> (position, key) of each key the batch names
        for it."""
        self.failure: BaseException | None = None
        """What a write raised (it reaches the caller through `decide`, not as a fault
        of deciding)."""

    def write_first(self) -> None:
        """Write the caller's rows due before the first decision, if not yet: early, while
        the batch is read and its first verdicts evaluated, the connection has nothing
        else to do."""
        if self._before is not None:
            before, self._before = self._before, None
            try:
                before()
            except BaseException as exc:
                self.failure = exc  # a failed write, not a fault of deciding
                raise

    def add(self, decided: Sequence[tuple[Pending, Outcome]]) -> None:
        """Insert these outcomes (`decide`'s sink): each suspension completed with the
        keys it covers (through the plan step), then the decisions and their actions."""
        try:
            self.write_first()
            suspending = [
                (p, o) for p, o in decided if any(a["type"] == "suspend" for a in o.actions)
            ]
            if suspending:
                covered = covered_keys(self._session, [o.actions for _, o in suspending])
                for p, outcome in suspending:
                    outcome.planned.actions += suspension_children(
                        outcome.actions, self._now, covered, self._seen_up_to(p, outcome)
                    )
            outcomes = [o for _, o in decided]
            repository.insert_decisions(self._session, [o.decision for o in outcomes])
            insert_planned(self._session, [o.planned for o in outcomes], self._now)
            self._outcomes.extend(outcomes)
        except BaseException as exc:
            self.failure = exc
            raise

    def _seen_up_to(self, item: Pending, outcome: Outcome) -> dict[tuple[str, str], set[str]]:
        """The keys the batch's verdicts up to this one name for the accounts and orgs
        its outcome suspends (a suspension revokes them too, though they are not stored
        yet), so a verdict's outcome never depends on the batch it came in. Only keys
        named on the same provider: an account id on another platform is another account."""
        if self._named is None:
            self._named = {}
            for i, p in enumerate(self._pending):
                for scope, keys in _keys_named(p).items():
                    self._named.setdefault((p.verdict.provider, *scope), []).extend(
                        (i, k) for k in keys
                    )
        upto = self._position[item.verdict.id]
        provider = item.verdict.provider
        return {
            scope: {k for i, k in self._named.get((provider, *scope), ()) if i <= upto}
            for scope in {
                (a["target_kind"], a["target_value"])
                for a in outcome.actions
                if a["type"] == "suspend"
            }
        }

    def outcomes(self) -> list[Outcome]:
        """The batch's outcomes in its order, once all are added (the caller's rows
        written now if nothing was decided)."""
        self.write_first()
        return sorted(self._outcomes, key=lambda o: self._position[o.decision["verdict_id"]])

    def record_sightings(self, read: ScopesRead, outcomes: Sequence[Outcome]) -> None:
        """Record what the batch's verdicts showed of each account and org (`read`: what
        was stored of it when the batch was read, under its subjects' locks), flagging
        what is revoked or suspended now (this batch's actions included)."""
        decided = {o.decision["verdict_id"] for o in outcomes}
        customers_repo.record_sightings(
            self._session,
            _sightings([p for p in self._pending if p.verdict.id in decided]),
            read,
            partial(acted_on, self._session, now=self._now),
            acted_targets(a for o in outcomes for a in o.actions),
            self._now,
        )

    def events(self, outcomes: Sequence[Outcome]) -> list[EventDraft]:
        """The `decision.recorded` and `action.planned` events of `outcomes`, in order
        (built from memory: no statement, so while the sightings are written)."""
        subjects = {p.verdict.id: p.verdict.subject.targets for p in self._pending}
        events = [
            EventDraft(
                type="decision.recorded",
                actor=PIPELINE_ACTOR,
                at=self._now,
                provider=o.decision["provider"],
                verdict_id=o.decision["verdict_id"],
                decision_id=o.decision["id"],
                trace_id=o.decision["trace_id"],
                payload={
                    "status": o.decision["status"],
                    "policy_revision": o.decision["policy_revision"],
                    "entrypoint": o.decision["entrypoint"],
                    "engine": o.decision["engine"],
                    "error": o.decision["error"],
                    "actions": len(o.actions),
                },
                subjects=subjects[o.decision["verdict_id"]],
            )
            for o in outcomes
        ]
        actions = [a for o in outcomes for a in o.actions]
        planned = planned_events(actions, PIPELINE_ACTOR, self._now, subjects=subjects)
        return [*events, *planned]


def count(outcomes: Sequence[Outcome]) -> None:
    """Committed decisions and fallbacks, for /metrics."""
    metrics.decisions_recorded(o.decision for o in outcomes)
    metrics.fallbacks_planned(
        o.actions[0]["type"] if o.actions else "none"
        for o in outcomes
        if o.decision["status"] == DecisionStatus.ERROR.value
    )


def _sightings(pending: Sequence[Pending]) -> dict[Sighted, datetime]:
    """What each verdict shows of its account and org (its key, networks and account),
    to when it was last observed."""
    seen: dict[Sighted, datetime] = {}
    for p in pending:
        v = p.verdict
        for scope, kind, value in shown(v):
            key = (*scope, kind, value)
            if key not in seen or seen[key] < v.observed_at:
                seen[key] = v.observed_at
    return seen


def _keys_named(p: Pending) -> dict[tuple[str, str], set[str]]:
    """(`account`|`org`, id) -> the key this verdict names for each."""
    v = p.verdict
    if not v.subject.api_key_id:
        return {}
    return {
        (scope, scope_id): {v.subject.api_key_id}
        for scope, scope_id in (("account", v.subject.account_id), ("org", v.subject.org_id))
        if scope_id
    }
