"""The ingest step: store verdicts durably, acknowledge, decide.

A verdict is committed (status `received`) before it is evaluated, so a policy
error, an engine failure or a crash never loses it: undecided verdicts are
decided by `decide_undecided`, at start-up and periodically.

Group commit: requests that arrive while a group is being stored and decided
wait and go together in the next group (one transaction to store, one decision
batch, one to record), so concurrent single-verdict requests cost what one batch
does. Each request keeps its own answer and its own errors: a 409 in one request
stores nothing of that request and does not touch the others; a repeat of a
verdict id across requests of one group is a repeat, as within a batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from opentelemetry import context as otel_context
from opentelemetry import trace
from sqlalchemy.exc import IntegrityError

from controlplane.audit import service as audit
from controlplane.audit.chain import EventDraft
from controlplane.domain.verdict import Verdict
from controlplane.domain.vocabulary import VerdictStatus
from controlplane.errors import Conflict, InvalidInput
from controlplane.evaluate import repository as decisions_repo
from controlplane.evaluate.service import Decider, Pending
from controlplane.ingest import repository
from controlplane.ingest.schemas import IngestResult, VerdictResult
from controlplane.plan import repository as actions_repo
from controlplane.plan.schemas import ActionOut
from controlplane.store.db import Database
from controlplane.store.types import utcnow
from controlplane.telemetry.tracing import SPAN_INGEST, trace_id_hex, tracer

log = logging.getLogger(__name__)


GROUP_VERDICTS = 1000
"""Verdicts stored and decided together at most (a request larger than this goes alone)."""


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
    pending: list[Pending] = field(default_factory=list)
    duplicates: set[str] = field(default_factory=set)


class IngestService:
    def __init__(self, db: Database, decider: Decider) -> None:
        self._db = db
        self._decider = decider
        self._queue: list[_Submission] = []
        self._runner: asyncio.Task[None] | None = None

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
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="ingest-groups")
        # Shielded: a client that goes away does not cancel its group's work.
        return await asyncio.shield(submission.answer)

    async def _run(self) -> None:
        """Take what is queued as one group, store and decide it, answer each request;
        again while requests keep arriving."""
        while self._queue:
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
                for item in group:
                    if not item.answer.done():
                        item.answer.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise

    async def _group(self, group: list[_Submission]) -> None:
        try:
            retry = await self._store(group)
        except IntegrityError:
            # Another replica stored one of these ids between our check and insert:
            # run the check again, which now sees it (a repeat, or a 409).
            retry = await self._store(group)
        live = [item for item in group if not item.answer.done()]
        pending = [p for item in live for p in item.pending]
        try:
            await self._decider.decide([*pending, *retry])
        except Exception:
            # The verdicts are stored: they stay `received` and are decided on retry.
            log.exception("deciding %d verdicts failed; they will be retried", len(pending))
        finally:
            for stored in pending:
                if stored.span is not None:
                    stored.span.end()
        results = await self._results(sorted({i for item in live for i in item.given}))
        for item in live:
            item.answer.set_result(
                IngestResult(
                    accepted=len(item.pending),
                    duplicates=len(item.duplicates),
                    results=[
                        results[i].model_copy(update={"duplicate": i in item.duplicates})
                        for i in item.given
                    ],
                )
            )

    async def _store(self, group: list[_Submission]) -> list[Pending]:
        """Store the group's new verdicts in one transaction. A request that reuses a
        stored id with other content is answered 409 and stores nothing; the others go
        on. Returns the stored but undecided verdicts the group repeats."""
        hashes = {v.id: v.content_hash() for item in group for v in item.verdicts}
        async with self._db.write() as session, session.begin():
            stored = await repository.stored_verdicts(session, list(hashes))
            known = {i: r.content_hash for i, r in stored.items()}
            now = utcnow()
            rows: list[dict[str, object]] = []
            events: list[EventDraft] = []
            spans: list[trace.Span] = []
            t = tracer()
            for item in group:
                if item.answer.done():
                    continue  # answered 409 by a first attempt
                item.pending, item.duplicates = [], set()
                conflicts = [
                    {
                        "field": f"verdicts[{item.index[v.id]}].id",
                        "message": f"{v.id!r} was stored before "
                        "with different content; a retry must resend the same verdict, a new "
                        "report needs a new id",
                    }
                    for v in item.verdicts
                    if v.id in known and known[v.id] != v.content_hash()
                ]
                if conflicts:
                    item.answer.set_exception(
                        Conflict(
                            "verdict id reused with different content; nothing was stored",
                            details=conflicts,
                        )
                    )
                    continue
                for verdict in item.verdicts:
                    if verdict.id in known:
                        item.duplicates.add(verdict.id)
                        continue
                    known[verdict.id] = hashes[verdict.id]
                    # Arrival order within a group is the order given: history counts on it.
                    received_at = now + timedelta(microseconds=len(rows))
                    span = t.start_span(
                        SPAN_INGEST,
                        context=item.context,
                        attributes={
                            "tollgate.verdict_id": verdict.id,
                            "tollgate.provider": verdict.provider,
                            "tollgate.detector": verdict.detector.name,
                        },
                    )
                    spans.append(span)
                    trace_id = trace_id_hex(span)
                    item.pending.append(Pending(verdict, received_at, span))
                    rows.append(_row(verdict, hashes[verdict.id], received_at, trace_id))
                    events.append(
                        EventDraft(
                            type="verdict.received",
                            actor=item.actor,
                            at=received_at,
                            provider=verdict.provider,
                            verdict_id=verdict.id,
                            trace_id=trace_id,
                            payload={
                                "content_hash": hashes[verdict.id],
                                "detector": verdict.detector.model_dump(),
                                "score": verdict.score,
                                "confidence": verdict.confidence,
                            },
                        )
                    )
            try:
                await repository.insert_verdicts(session, rows)
                await audit.record(session, events)
            except BaseException:
                for span in spans:
                    span.set_status(trace.StatusCode.ERROR, "not stored")
                    span.end()
                raise
        # A repeat of a verdict stored but not decided yet (the first attempt met an
        # error) is decided now rather than at the next recovery run.
        return [
            Pending(v, stored[v.id].received_at)
            for item in group
            if not item.answer.done()
            for v in item.verdicts
            if v.id in stored and stored[v.id].status == VerdictStatus.RECEIVED.value
        ]

    async def _results(self, ids: list[str]) -> dict[str, VerdictResult]:
        """Each verdict's outcome (`duplicate` is the caller's to set)."""
        async with self._db.read() as session:
            decisions = await decisions_repo.decision_summaries(session, ids)
            actions = await actions_repo.actions_of_decisions(
                session, [d.id for d in decisions.values()]
            )
        results = {}
        for verdict_id in ids:
            decision = decisions.get(verdict_id)
            if decision is None:
                results[verdict_id] = VerdictResult(
                    verdict_id=verdict_id,
                    status=VerdictStatus.RECEIVED,
                    duplicate=False,
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
        """Decide verdicts left `received` (crash, engine outage). Returns how many."""
        async with self._db.read() as session:
            rows = await repository.undecided(session, limit)
        pending = [Pending(Verdict.model_validate(r.body), r.received_at) for r in rows]
        await self._decider.decide(pending)
        return len(pending)


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
        raise InvalidInput("a batch repeats a verdict id with different content", details=problems)
    return unique


def _row(
    verdict: Verdict, content_hash: str, received_at: object, trace_id: str | None
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
        "status": VerdictStatus.RECEIVED.value,
        "trace_id": trace_id,
    }
