"""The ingest step: store verdicts durably, acknowledge, decide.

A verdict is committed (status `received`) before it is evaluated, so a policy
error, an engine failure or a crash never loses it: undecided verdicts are
decided by `decide_undecided`, at start-up and periodically.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from opentelemetry import trace
from sqlalchemy.exc import IntegrityError

from controlplane.audit import service as audit
from controlplane.audit.chain import EventDraft
from controlplane.domain.verdict import Verdict
from controlplane.domain.vocabulary import VerdictStatus
from controlplane.errors import Conflict
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


class IngestService:
    def __init__(self, db: Database, decider: Decider) -> None:
        self._db = db
        self._decider = decider

    async def submit(self, verdicts: Sequence[Verdict], actor: str) -> IngestResult:
        """Store, decide and report on `verdicts` (all stored, or none)."""
        unique = _unique(verdicts)
        # Errors name a verdict by its index in the request, not in the deduplicated list.
        index = {v.id: i for i, v in reversed(list(enumerate(verdicts)))}
        try:
            pending, retry, duplicates = await self._store(unique, index, actor)
        except IntegrityError:
            # Another request stored one of these ids between our check and insert:
            # run the check again, which now sees it (a repeat, or a 409).
            pending, retry, duplicates = await self._store(unique, index, actor)
        try:
            await self._decider.decide([*pending, *retry])
        except Exception:
            # The verdicts are stored: they stay `received` and are decided on retry.
            log.exception("deciding %d verdicts failed; they will be retried", len(pending))
        finally:
            for item in pending:
                if item.span is not None:
                    item.span.end()
        return IngestResult(
            accepted=len(pending),
            duplicates=len(duplicates),
            results=await self._results([v.id for v in verdicts], duplicates),
        )

    async def _store(
        self, verdicts: Sequence[Verdict], index: dict[str, int], actor: str
    ) -> tuple[list[Pending], list[Pending], set[str]]:
        hashes = {v.id: v.content_hash() for v in verdicts}
        async with self._db.write() as session, session.begin():
            stored = await repository.stored_verdicts(session, list(hashes))
            conflicts = [
                {
                    "field": f"verdicts[{index[v.id]}].id",
                    "message": f"{v.id!r} was stored before "
                    "with different content; a retry must resend the same verdict, a new "
                    "report needs a new id",
                }
                for v in verdicts
                if v.id in stored and stored[v.id].content_hash != hashes[v.id]
            ]
            if conflicts:
                raise Conflict(
                    "verdict id reused with different content; nothing was stored",
                    details=conflicts,
                )
            new = [v for v in verdicts if v.id not in stored]
            now = utcnow()
            pending, rows, events = [], [], []
            t = tracer()
            for i, verdict in enumerate(new):
                # Arrival order within a batch is the order given: history counts on it.
                received_at = now + timedelta(microseconds=i)
                span = t.start_span(
                    SPAN_INGEST,
                    attributes={
                        "tollgate.verdict_id": verdict.id,
                        "tollgate.provider": verdict.provider,
                        "tollgate.detector": verdict.detector.name,
                    },
                )
                trace_id = trace_id_hex(span)
                pending.append(Pending(verdict, received_at, span))
                rows.append(_row(verdict, hashes[verdict.id], received_at, trace_id))
                events.append(
                    EventDraft(
                        type="verdict.received",
                        actor=actor,
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
                for item in pending:
                    if item.span is not None:
                        item.span.set_status(trace.StatusCode.ERROR, "not stored")
                        item.span.end()
                raise
        # A repeat of a verdict stored but not decided yet (the first attempt met an
        # error) is decided now rather than at the next recovery run.
        retry = [
            Pending(v, stored[v.id].received_at)
            for v in verdicts
            if v.id in stored and stored[v.id].status == VerdictStatus.RECEIVED.value
        ]
        return pending, retry, set(stored)

    async def _results(self, ids: list[str], duplicates: set[str]) -> list[VerdictResult]:
        async with self._db.read() as session:
            decisions = await decisions_repo.decision_summaries(session, ids)
            actions = await actions_repo.actions_of_decisions(
                session, [d.id for d in decisions.values()]
            )
        results = []
        for verdict_id in ids:
            decision = decisions.get(verdict_id)
            if decision is None:
                results.append(
                    VerdictResult(
                        verdict_id=verdict_id,
                        status=VerdictStatus.RECEIVED,
                        duplicate=verdict_id in duplicates,
                    )
                )
                continue
            results.append(
                VerdictResult(
                    verdict_id=verdict_id,
                    status=VerdictStatus.DECIDED,
                    duplicate=verdict_id in duplicates,
                    decision_id=decision.id,
                    decision_status=decision.status,
                    policy_revision=decision.policy_revision,
                    error=decision.error,
                    trace_id=decision.trace_id,
                    actions=[ActionOut.from_row(a.model_dump()) for a in actions[decision.id]],
                )
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
        # A conflict like a stored id with other content (a 409), though each verdict
        # alone is valid: the schema of a batch cannot say that ids differ.
        raise Conflict("a batch repeats a verdict id with different content", details=problems)
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
