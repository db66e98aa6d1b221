"""The ingest step: the request boundary of the pipeline. It takes verdicts, hands
them to evaluate (which plans through plan), and stores verdicts, decisions,
actions, their audit events and their enforcement changes in ONE transaction,
before the 202. Nothing is acknowledged before it is stored; a fault while deciding
(a bug, not a policy error) still stores the verdicts, as `received`, answers 500
and leaves them to `decide_undecided` (start-up and every 15 s) or a retry.

Group commit: requests that arrive while a group is being decided and stored wait
and go together in the next group, so concurrent single-verdict requests cost what
one batch does. Each request keeps its own answer, its own trace and its own
errors: a 409 in one request stores nothing of that request and does not touch the
others; a repeat of a verdict id across requests of one group is a repeat, as
within a batch.

A group is read, decided and stored in the decide thread, on a sync connection (no
event-loop round trip per statement), while the event loop goes on serving requests;
only the engine's evaluation hops back to the loop's side.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from opentelemetry import context as otel_context
from opentelemetry import trace
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane.audit import service as audit
from controlplane.audit.chain import EventDraft, canonical_parts
from controlplane.domain.verdict import Verdict
from controlplane.domain.vocabulary import VerdictStatus
from controlplane.errors import Conflict, DecisionFailed, TollgateError
from controlplane.evaluate import repository as decisions_repo
from controlplane.evaluate import service as decisions
from controlplane.evaluate.service import Decided, Decider, Outcome, Pending
from controlplane.ingest import repository
from controlplane.ingest.schemas import IngestResult, VerdictResult
from controlplane.plan import repository as actions_repo
from controlplane.plan import service as plan_service
from controlplane.plan.schemas import ActionOut
from controlplane.store.db import OUTAGES, Database, outage_reason
from controlplane.store.types import utcnow
from controlplane.telemetry import metrics
from controlplane.telemetry.tracing import SPAN_INGEST, pipeline_span, trace_id_hex

log = logging.getLogger(__name__)


GROUP_VERDICTS = 1000
"""Verdicts stored and decided together at most (a request larger than this goes alone)."""

GATHER_SECONDS = 0.002
"""How long a small group waits for the callers of the group just answered: callers that
send a verdict, wait for its 202 and send the next come back a moment after their
answers, and without the wait half of them always miss the next group (at 4
connections: two groups of two instead of one of four, and each group costs its
reads, its transaction and its commit whatever its size). Sparse traffic never waits."""

GATHER_BELOW = 64
"""Verdicts queued from which a group goes without waiting: its fixed cost is shared
enough already."""


@dataclass
class _Submission:
    """One request waiting for its group."""

    verdicts: list[Verdict]
    """Its verdicts, exact repeats inside the request dropped."""
    given: list[str]
    """Every verdict id as sent, for the answer."""
    index: dict[str, int]
    """Verdict id -> its first index in the request (errors name it)."""
    actor: str
    context: otel_context.Context
    """The request's trace context: its spans continue the caller's trace."""
    answer: asyncio.Future[IngestResult]
    queued: float = field(default_factory=time.perf_counter)
    """When it joined the queue: its `verdict.ingest` spans say how long it waited for
    the decide thread and its group's start (`tollgate.queued_ms`)."""
    error: TollgateError | None = None
    """Why this request is refused (set in the decide thread, answered on the loop)."""
    pending: list[Pending] = field(default_factory=list)
    duplicates: set[str] = field(default_factory=set)


class _Undecided(Exception):
    """Deciding a group failed (a bug, not a policy error): its writes were rolled back
    and its verdicts are stored as received."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class _Decided:
    """What the decide thread did with a group."""

    outcomes: dict[str, Outcome]
    failure: Exception | None
    enforceable: bool
    deferred: list[_Submission] = field(default_factory=list)
    """Requests left for the next group: another replica was deciding one of their
    subjects (PostgreSQL)."""


class IngestService:
    def __init__(
        self,
        db: Database,
        decider: Decider,
        on_planned: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._decider = decider
        self._on_planned = on_planned
        """Told when enforceable actions were planned (wakes the connectors)."""
        self._queue: list[_Submission] = []
        self._runner: asyncio.Task[None] | None = None
        self._expected = 0
        """Requests the next group waits for (those answered by the last group and
        those already queued when it ended), if the last group ended just now."""
        self._last_ended = 0.0
        self._gathered: asyncio.Event | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tollgate-decide")
        """The decide thread: groups are read, decided and stored there, on a sync
        connection, one at a time, while the event loop goes on serving requests."""
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tollgate-write")
        """The write thread: on PostgreSQL a group's decisions and actions are inserted
        there as they are decided, while the decide thread evaluates the next ones (the
        database's work on each insert no longer holds up the decide thread); on both,
        its sightings, while the decide thread builds its audit events."""

    async def warm(self) -> None:
        """Load the decider's indexes on the decide thread before the first verdict."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._warm)

    def _warm(self) -> None:
        with self._db.read_blocking() as session:
            self._decider.warm(session, utcnow())

    def close(self) -> None:
        self._thread.submit(self._decider.close).result()
        self._thread.shutdown(wait=True)
        self._writer.shutdown(wait=True)

    async def submit(self, verdicts: Sequence[Verdict], actor: str) -> IngestResult:
        """Store, decide and report on `verdicts` (all stored, or none), together with
        the requests that arrive meanwhile."""
        unique = _unique(verdicts)
        loop = asyncio.get_running_loop()
        submission = _Submission(
            verdicts=unique,
            given=[v.id for v in verdicts],
            # Errors name a verdict by its index in the request, not in the group.
            index={v.id: i for i, v in reversed(list(enumerate(verdicts)))},
            actor=actor,
            context=otel_context.get_current(),
            answer=loop.create_future(),
        )
        self._queue.append(submission)
        if self._gathered is not None and len(self._queue) >= self._expected:
            self._gathered.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="ingest-groups")
        # Shielded: a client that goes away does not cancel its group's work.
        return await asyncio.shield(submission.answer)

    async def _run(self) -> None:
        """Take what is queued as one group, store and decide it, answer each request;
        again while requests keep arriving."""
        while self._queue:
            try:
                await self._gather()
            except asyncio.CancelledError as exc:  # stopping: no request is left waiting
                for item in self._queue:
                    if not item.answer.done():
                        item.answer.set_exception(exc)
                self._queue.clear()
                raise
            group: list[_Submission] = []
            size = 0
            while self._queue and (
                not group or size + len(self._queue[0].verdicts) <= GROUP_VERDICTS
            ):
                item = self._queue.pop(0)
                group.append(item)
                size += len(item.verdicts)
            try:
                await self._group(group)
            except BaseException as exc:  # answered to each request: nothing is dropped
                if isinstance(exc, OUTAGES):
                    # Answered 503 with Retry-After; one line, not a traceback per request.
                    log.warning("storing %d verdicts: %s", size, outage_reason(exc))
                elif not isinstance(exc, TollgateError | asyncio.CancelledError):
                    log.exception("storing %d verdicts failed", size)
                for item in group:
                    if not item.answer.done():
                        item.answer.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
            finally:
                self._expected = len(group) + len(self._queue)
                self._last_ended = time.perf_counter()

    async def _gather(self) -> None:
        """Wait up to GATHER_SECONDS for the callers the last group answered, when it
        ended just now (they are on their way back) and what is queued is little."""
        if (
            len(self._queue) >= self._expected
            or time.perf_counter() - self._last_ended > GATHER_SECONDS
            or sum(len(item.verdicts) for item in self._queue) >= GATHER_BELOW
        ):
            return
        self._gathered = asyncio.Event()
        try:
            await asyncio.wait_for(self._gathered.wait(), GATHER_SECONDS)
        except TimeoutError:
            pass
        finally:
            self._gathered = None

    async def _group(self, group: list[_Submission]) -> None:
        """Have the decide thread store and decide the group, then answer each request."""
        loop = asyncio.get_running_loop()
        decided = await loop.run_in_executor(self._thread, self._store_group, group, loop)
        if decided.deferred:
            # First in the next group, in their order (which then waits for them, if
            # their subjects are still taken, rather than leave them out again).
            self._queue[:0] = decided.deferred
            left = {id(item) for item in decided.deferred}
            group = [item for item in group if id(item) not in left]
        for item in group:
            if item.error is not None and not item.answer.done():
                item.answer.set_exception(item.error)
        live = [item for item in group if not item.answer.done()]
        if decided.enforceable and self._on_planned is not None:
            self._on_planned()
        if decided.failure is not None:
            error = DecisionFailed(
                "the verdicts were stored but deciding them failed "
                f"({type(decided.failure).__name__}); "
                "they will be decided on retry or within 15 s"
            )
            for item in live:
                item.answer.set_exception(error)
            return
        await self._answer(live, decided.outcomes)

    def _store_group(self, group: list[_Submission], loop: asyncio.AbstractEventLoop) -> _Decided:
        """(decide thread) Once more if another replica stored one of these ids between
        our read and our insert: the second attempt sees it (a repeat, or a 409)."""
        try:
            return self._store_group_once(group, loop)
        except IntegrityError:
            for item in group:
                item.error = None
            return self._store_group_once(group, loop)

    def _store_group_once(
        self, group: list[_Submission], loop: asyncio.AbstractEventLoop
    ) -> _Decided:
        """(decide thread) Read what the group repeats, decide the rest, and store
        verdicts, decisions, actions, their audit events and their changes in one
        transaction (written as the decisions come: see `_decide_and_record`)."""
        spans: list[trace.Span] = []
        with self._decider.exclusive([item.verdicts for item in group]) as chosen:
            going = set(chosen)
            deferred = [item for i, item in enumerate(group) if i not in going]
            group = [group[i] for i in chosen]
            hashes = {v.id: v.content_hash() for item in group for v in item.verdicts}
            arrived = utcnow()
            try:
                with self._db.read_blocking() as session, self._db.read_blocking() as aside:
                    stored = repository.stored_verdicts(session, list(hashes))
                    new = self._sort(group, stored, hashes, arrived, spans)
                    # Decided just after the last arrival: the audit chain's times follow
                    # its order (received, then decided).
                    now = arrived + timedelta(microseconds=len(new) + 1)
                    # A repeat of a verdict stored but not decided yet (its first attempt
                    # met an error) is decided now rather than at the next recovery run.
                    retry = [
                        Pending(v, stored[v.id].received_at)
                        for item in group
                        if item.error is None
                        for v in item.verdicts
                        if v.id in stored and stored[v.id].status == VerdictStatus.RECEIVED.value
                    ]
                    events = [
                        _received(p, hashes[p.verdict.id], item.actor)
                        for item in group
                        if item.error is None
                        for p in item.pending
                    ]
                    try:
                        decided, enforceable = self._decide_and_record(
                            (session, aside), new, retry, hashes, events, now, loop
                        )
                        failure = None
                    except _Undecided as undecided:
                        decided, enforceable, failure = Decided({}), False, undecided.cause
                if failure is not None:
                    # Stored as received, to be decided on retry or by the recovery job.
                    with self._db.write_blocking() as writing, writing.begin():
                        repository.insert_verdicts(
                            writing, [self._verdict_row(p, hashes, decided=False) for p in new]
                        )
                        audit.record_blocking(writing, events)
            except BaseException:
                for span in spans:
                    span.set_status(trace.StatusCode.ERROR, "not stored")
                    span.end()
                raise
        for span in spans:
            span.end()
        return _Decided(decided.outcomes, failure, enforceable, deferred)

    def _decide_and_record(
        self,
        reading: tuple[Session, Session],
        new: list[Pending],
        retry: list[Pending],
        hashes: dict[str, str],
        events: list[EventDraft],
        now: datetime,
        loop: asyncio.AbstractEventLoop,
    ) -> tuple[Decided, bool]:
        """Decide `new` and `retry` and store it all in one transaction. Returns the
        outcomes and whether enforceable actions were planned. A fault in deciding (not
        a policy error: those are decisions) raises `_Undecided`, nothing written.
        `reading`: two read sessions (the batch's history and its accounts and orgs are
        read at once).

        On PostgreSQL the transaction opens before deciding: the decisions and actions
        are written as they are decided, by the write thread, while the decide thread
        and the engines go on with the next ones (rows locked are only the new ones). On
        SQLite it opens once all is decided: its one write lock would otherwise keep
        every other writer (a lift, the connectors' state) waiting for whole batches."""
        pending = [*new, *retry]

        def verdict_rows(writing: Session) -> None:
            rows = [self._verdict_row(p, hashes, decided=True) for p in new]
            repository.insert_verdicts(writing, rows)
            repository.set_status(writing, [p.verdict.id for p in retry], VerdictStatus.DECIDED)

        if self._db.dialect == "sqlite":
            decided = self._decide(reading, pending, now, loop, None)
            with self._db.write_blocking() as writing, writing.begin():
                recording = decisions.Recording(
                    writing, pending, now, partial(verdict_rows, writing)
                )
                recording.add([(p, decided.outcomes[p.verdict.id]) for p in pending])
                outcomes = self._finish(writing, recording, decided, events, now)
        else:
            with self._db.write_blocking() as writing, writing.begin():
                recording = decisions.Recording(
                    writing, pending, now, partial(verdict_rows, writing)
                )
                with _Behind(self._writer, recording.add) as behind:
                    behind.run(recording.write_first)  # the verdict rows, while the batch is read
                    decided = self._decide(reading, pending, now, loop, recording, behind)
                    behind.join()
                outcomes = self._finish(writing, recording, decided, events, now)
        decisions.count(outcomes)
        enforceable = any(
            not a["shadow"] and a["type"] != "flag_review" for o in outcomes for a in o.actions
        )
        return decided, enforceable

    def _decide(
        self,
        reading: tuple[Session, Session],
        pending: list[Pending],
        now: datetime,
        loop: asyncio.AbstractEventLoop,
        recording: decisions.Recording | None,
        sink: decisions.Sink | None = None,
    ) -> Decided:
        """The outcomes (written by `recording` as they come, when given, through `sink`
        if given). A fault (not a policy error) is logged and counted and raised as
        `_Undecided`; a failed write (an outage, a race with a replica) is raised as it
        is."""
        if sink is None and recording is not None:
            sink = recording.add
        try:
            return self._decider.decide(reading, pending, now, loop, sink)
        except Exception as exc:
            if recording is not None and exc is recording.failure:
                raise
            log.exception("deciding %d verdicts failed; they are stored and retried", len(pending))
            metrics.decide_faults(type(exc).__name__)
            raise _Undecided(exc) from exc

    def _finish(
        self,
        writing: Session,
        recording: decisions.Recording,
        decided: Decided,
        events: list[EventDraft],
        now: datetime,
    ) -> list[Outcome]:
        """The rest of the group's transaction: sightings, the audit events in the
        group's order, the enforcement changes. The sightings are written by the write
        thread while this one builds the events' canonical JSON, their costliest part
        (the chain then only hashes it, once the sightings are in)."""
        outcomes = recording.outcomes()
        sightings = self._writer.submit(recording.record_sightings, decided.sightings, outcomes)
        try:
            drafts = [*events, *recording.events(outcomes)]
            parts = [canonical_parts(d) for d in drafts]
        finally:
            futures.wait([sightings])  # the session is the write thread's until it is done
        sightings.result()
        audit.record_blocking(writing, drafts, parts)
        plan_service.log_changes(writing, [o.planned for o in outcomes], now)
        return outcomes

    @staticmethod
    def _verdict_row(
        pending: Pending, hashes: dict[str, str], *, decided: bool
    ) -> dict[str, object]:
        return _row(
            pending.verdict,
            hashes[pending.verdict.id],
            pending.received_at,
            trace_id_hex(pending.span) if pending.span else None,
            decided=decided,
        )

    def _sort(
        self,
        group: list[_Submission],
        stored: dict[str, repository.Stored],
        hashes: dict[str, str],
        now: datetime,
        spans: list[trace.Span],
    ) -> list[Pending]:
        """The group's new verdicts, each with its `verdict.ingest` span in its request's
        trace. A request that reuses a stored id with other content is refused (409)
        and adds nothing; repeats are noted per request."""
        known = {i: r.content_hash for i, r in stored.items()}
        new: list[Pending] = []
        started = time.perf_counter()
        for item in group:
            request_span = trace.get_current_span(item.context)
            item.pending, item.duplicates = [], set()
            conflicts = [
                {
                    "field": f"verdicts[{item.index[v.id]}].id",
                    "message": f"{v.id!r} was stored before "
                    "with different content; a retry must resend the same verdict, a new "
                    "report needs a new id",
                }
                for v in item.verdicts
                if v.id in known and known[v.id] != hashes[v.id]
            ]
            if conflicts:
                item.error = Conflict(
                    "verdict id reused with different content; nothing was stored",
                    details=conflicts,
                )
                continue
            for verdict in item.verdicts:
                if verdict.id in known:
                    item.duplicates.add(verdict.id)
                    continue
                known[verdict.id] = hashes[verdict.id]
                span = pipeline_span(
                    SPAN_INGEST,
                    request_span,
                    {
                        "tollgate.verdict_id": verdict.id,
                        "tollgate.provider": verdict.provider,
                        "tollgate.detector": verdict.detector.name,
                        "tollgate.queued_ms": round((started - item.queued) * 1000, 3),
                    },
                )
                spans.append(span)
                # Arrival order within a group is the order given: history counts on it.
                pending = Pending(verdict, now + timedelta(microseconds=len(new)), span)
                item.pending.append(pending)
                new.append(pending)
        return new

    async def _answer(self, live: list[_Submission], outcomes: dict[str, Outcome]) -> None:
        """Each request's answer: what this group decided, from memory; what was
        stored before (repeats), from the database."""
        earlier = sorted({i for item in live for i in item.given if i not in outcomes})
        results = {i: _result(o) for i, o in outcomes.items()}
        results.update(await self._results(earlier))
        for item in live:
            item.answer.set_result(
                IngestResult(
                    accepted=len(item.pending),
                    duplicates=len(item.duplicates),
                    results=[
                        results[i].model_copy(update={"duplicate": True})
                        if i in item.duplicates
                        else results[i]  # built with duplicate=False
                        for i in item.given
                    ],
                )
            )

    async def _results(self, ids: list[str]) -> dict[str, VerdictResult]:
        """Each stored verdict's outcome (`duplicate` is the caller's to set)."""
        if not ids:
            return {}
        async with self._db.read() as session:
            found = await decisions_repo.decision_summaries(session, ids)
            actions = await actions_repo.actions_of_decisions(
                session, [d.id for d in found.values()]
            )
        results = {}
        for verdict_id in ids:
            decision = found.get(verdict_id)
            if decision is None:
                results[verdict_id] = VerdictResult(
                    verdict_id=verdict_id, status=VerdictStatus.RECEIVED, duplicate=False
                )
                continue
            results[verdict_id] = VerdictResult(
                verdict_id=verdict_id,
                status=VerdictStatus.DECIDED,
                duplicate=False,
                decision_id=decision.id,
                decision_status=decision.status,
                policy_revision=decision.policy_revision,
                error=decision.error,
                trace_id=decision.trace_id,
                actions=[ActionOut.from_row(a.model_dump()) for a in actions[decision.id]],
            )
        return results

    async def decide_undecided(self, limit: int = 1000) -> int:
        """Decide verdicts left `received` (a fault, a crash). Returns how many."""
        async with self._db.read() as session:
            rows = await repository.undecided(session, limit)
        if not rows:
            return 0
        pending = [Pending(Verdict.model_validate(r.body), r.received_at) for r in rows]
        loop = asyncio.get_running_loop()
        decided = await loop.run_in_executor(self._thread, self._redecide, pending, loop)
        if decided.enforceable and self._on_planned is not None:
            self._on_planned()
        return len(decided.outcomes)

    def _redecide(self, pending: list[Pending], loop: asyncio.AbstractEventLoop) -> _Decided:
        """(decide thread) Decide and record those of `pending` still undecided."""
        with self._decider.exclusive([[p.verdict for p in pending]]):  # waits: one part
            now = utcnow()
            with self._db.read_blocking() as session, self._db.read_blocking() as aside:
                # A concurrent retry may have decided some meanwhile.
                still = repository.undecided_among(session, [p.verdict.id for p in pending])
                pending = [p for p in pending if p.verdict.id in still]
                try:
                    decided, enforceable = self._decide_and_record(
                        (session, aside), [], pending, {}, [], now, loop
                    )
                except _Undecided as undecided:
                    return _Decided({}, undecided.cause, False)
        return _Decided(decided.outcomes, None, enforceable)


class _Behind:
    """`decide`'s sink on another thread: each hand-over is written there, in order,
    while the caller goes on. A write that failed is raised to the caller at its next
    hand-over or at `join`; leaving waits for every write under way (the transaction
    they use is the caller's)."""

    def __init__(self, writer: ThreadPoolExecutor, write: decisions.Sink) -> None:
        self._writer = writer
        self._write = write
        self._writes: list[Future[None]] = []
        self._failed = False

    def __call__(self, decided: Sequence[tuple[Pending, Outcome]]) -> None:
        self.run(partial(self._write, decided))

    def run(self, write: Callable[[], None]) -> None:
        """Have the write thread do `write` after the writes handed over before."""
        for done in self._writes:
            if done.done():
                done.result()  # raises what the write raised
        self._writes.append(self._writer.submit(self._run, write))

    def _run(self, write: Callable[[], None]) -> None:
        if self._failed:
            return  # the transaction is lost already: the first failure is the one raised
        try:
            write()
        except BaseException:
            self._failed = True
            raise

    def join(self) -> None:
        """Wait for every write; raise the first that failed."""
        for write in self._writes:
            write.result()

    def __enter__(self) -> _Behind:
        return self

    def __exit__(self, *exc: object) -> None:
        futures.wait(self._writes)


def _received(pending: Pending, content_hash: str, actor: str) -> EventDraft:
    verdict = pending.verdict
    return EventDraft(
        type="verdict.received",
        actor=actor,
        at=pending.received_at,
        provider=verdict.provider,
        verdict_id=verdict.id,
        trace_id=trace_id_hex(pending.span) if pending.span else None,
        payload={
            "content_hash": content_hash,
            "detector": verdict.detector.model_dump(),
            "score": verdict.score,
            "confidence": verdict.confidence,
        },
        subjects=verdict.subject.targets,
    )


def _result(outcome: Outcome) -> VerdictResult:
    decision = outcome.decision
    return VerdictResult(
        verdict_id=decision["verdict_id"],
        status=VerdictStatus.DECIDED,
        duplicate=False,
        decision_id=decision["id"],
        decision_status=decision["status"],
        policy_revision=decision["policy_revision"],
        error=decision["error"],
        trace_id=decision["trace_id"],
        actions=[ActionOut.from_row(a) for a in outcome.actions],
    )


def _unique(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """Drop exact repeats inside one batch; the same id with other content is an error."""
    first: dict[str, tuple[int, Verdict]] = {}
    unique, problems = [], []
    for i, verdict in enumerate(verdicts):
        seen = first.get(verdict.id)
        if seen is None:
            first[verdict.id] = (i, verdict)
            unique.append(verdict)
        elif seen[1] != verdict:
            problems.append(
                {
                    "field": f"verdicts[{i}].id",
                    "message": f"repeats verdicts[{seen[0]}].id with different content",
                }
            )
    if problems:
        # A conflict like a stored id with other content (a 409), though each verdict
        # alone is valid: the schema of a batch cannot say that ids differ.
        raise Conflict("a batch repeats a verdict id with different content", details=problems)
    return unique


def _row(
    verdict: Verdict,
    content_hash: str,
    received_at: object,
    trace_id: str | None,
    *,
    decided: bool,
) -> dict[str, object]:
    return {
        "id": verdict.id,
        "provider": verdict.provider,
        "detector_name": verdict.detector.name,
        "detector_version": verdict.detector.version,
        "account_id": verdict.subject.account_id,
        "api_key_id": verdict.subject.api_key_id,
        "org_id": verdict.subject.org_id,
        "score": verdict.score,
        "confidence": verdict.confidence,
        "observed_at": verdict.observed_at,
        "received_at": received_at,
        "body": verdict.document(),
        "content_hash": content_hash,
        "status": (VerdictStatus.DECIDED if decided else VerdictStatus.RECEIVED).value,
        "trace_id": trace_id,
    }
