"""Deciding stored verdicts: build inputs, evaluate, record decisions, plan actions.

A batch is decided in waves: verdicts that share a subject with an earlier verdict
of the batch wait for it, so a repeat sees what the first one planned; a wave's
verdicts are evaluated in parallel on the engine's threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opentelemetry import trace
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.audit import service as audit
from controlplane.audit.chain import EventDraft
from controlplane.domain.action import MalformedDecision, parse_decision
from controlplane.domain.verdict import Verdict
from controlplane.domain.vocabulary import DecisionStatus, VerdictStatus
from controlplane.enforce.service import record_changes
from controlplane.engine.base import Evaluation, PolicyEngine
from controlplane.engine.runtime import EngineSlot
from controlplane.evaluate import repository
from controlplane.evaluate.context import (
    HISTORY_WINDOW,
    Lookups,
    build_input,
    subject_overlaps,
)
from controlplane.evaluate.repository import action_document
from controlplane.ingest import repository as verdicts_repo
from controlplane.intel.hashing import Keyring
from controlplane.plan import repository as actions_repo
from controlplane.plan.service import fallback_actions, plan_actions
from controlplane.settings import Providers
from controlplane.store.db import Database
from controlplane.store.models import new_id
from controlplane.store.types import utcnow
from controlplane.telemetry import metrics
from controlplane.telemetry.tracing import SPAN_EVALUATE, SPAN_PLAN, trace_id_hex, tracer

PIPELINE_ACTOR = "tollgate"
DECIDE_LOCK = 0x74_6C_67_64  # "tlgd": the advisory lock replicas decide under


@dataclass(frozen=True)
class Pending:
    """A stored verdict waiting for its decision, with the span that traces it."""

    verdict: Verdict
    received_at: datetime
    span: trace.Span | None = None


@dataclass
class Outcome:
    decision: dict[str, Any]
    actions: list[dict[str, Any]]
    span_id: str | None = None
    """The `action.plan` span: the gateway apply that follows continues from it."""


class Decider:
    """Decides verdicts one batch at a time per process (history must not race)."""

    def __init__(
        self,
        db: Database,
        engines: EngineSlot,
        on_planned: Callable[[set[str]], None] | None = None,
        providers: Providers | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self._db = db
        self._providers = providers or Providers()
        """Each provider's `min_prefix` (checked on policy output) and `fallback`."""
        self._engines = engines
        self._on_planned = on_planned
        """Told the providers that got new enforceable actions (push to their gateways)."""
        self._lock = asyncio.Lock()
        self._intel = repository.IntelCache(keyring)
        self._cidrs = repository.CidrTargets()

    async def decide(self, pending: Sequence[Pending]) -> dict[str, Outcome]:
        """Decide and record `pending`; returns the outcome by verdict id."""
        if not pending:
            return {}
        async with self._lock, self._replicas_lock():
            now = utcnow()
            lookups = Lookups()
            async with self._db.read() as session:
                # Another path (recovery, a concurrent retry) may have decided some already.
                undecided = await verdicts_repo.undecided_among(
                    session, [p.verdict.id for p in pending]
                )
                pending = [p for p in pending if p.verdict.id in undecided]
                if not pending:
                    return {}
                await self._fill(session, lookups, pending, now)
            waves = subject_overlaps([p.verdict for p in pending])
            outcomes: dict[str, Outcome] = {}
            for wave in range(max(waves) + 1):
                members = [p for p, w in zip(pending, waves, strict=True) if w == wave]
                engine = self._engines.current
                inputs = [build_input(p.verdict, p.received_at, lookups, now) for p in members]
                evaluations = await engine.evaluate_many(inputs)
                for item, given, evaluation in zip(members, inputs, evaluations, strict=True):
                    outcome = self._record(engine, item, given, evaluation, now)
                    outcomes[item.verdict.id] = outcome
                    for action in outcome.actions:
                        if not action["shadow"]:
                            lookups.add_action(item.verdict.provider, action_document(action))
            async with self._db.write() as session, session.begin():
                await self._store(session, list(outcomes.values()), now)
            metrics.decisions_recorded(o.decision for o in outcomes.values())
            metrics.fallbacks_planned(
                o.actions[0]["type"] if o.actions else "none"
                for o in outcomes.values()
                if o.decision["status"] == DecisionStatus.ERROR.value
            )
        providers = {
            a["provider"]
            for o in outcomes.values()
            for a in o.actions
            if not a["shadow"] and a["type"] != "flag_review"
        }
        if providers and self._on_planned is not None:
            self._on_planned(providers)
        return outcomes

    @asynccontextmanager
    async def _replicas_lock(self) -> AsyncIterator[None]:
        """On PostgreSQL, replicas decide one batch at a time too: a verdict's history
        must include what another replica decided a moment ago about the same subject.
        A session lock on a connection held for the batch; released with it."""
        if self._db.dialect != "postgresql":
            yield
            return
        async with self._db.engine.connect() as connection:
            await connection.execute(select(func.pg_advisory_lock(DECIDE_LOCK)))
            await connection.commit()
            try:
                yield
            finally:
                await connection.execute(select(func.pg_advisory_unlock(DECIDE_LOCK)))
                await connection.commit()

    async def _fill(
        self, session: AsyncSession, lookups: Lookups, pending: Sequence[Pending], now: datetime
    ) -> None:
        keys = {
            (p.verdict.provider, kind, value)
            for p in pending
            for kind, value in p.verdict.subject.targets
        }
        ips = {(p.verdict.provider, ip) for p in pending for ip in p.verdict.subject.ips}
        keys |= await self._cidrs.holding(session, ips, now)
        since = min(p.verdict.observed_at for p in pending) - HISTORY_WINDOW
        await repository.fill_lookups(session, lookups, keys, since, now)
        lookups.intel = await self._intel.index(session, now)

    def _record(
        self,
        engine: PolicyEngine,
        item: Pending,
        given: dict[str, Any],
        evaluation: Evaluation,
        now: datetime,
    ) -> Outcome:
        verdict = item.verdict
        parent = trace.set_span_in_context(item.span) if item.span else None
        trace_id = trace_id_hex(item.span) if item.span else None
        decision_id = new_id("dec")
        status, error, actions, shadow = DecisionStatus.OK, evaluation.error, [], False
        decided = None
        plan_span_id = None
        t = tracer()
        end_ns = evaluation.started_ns + int(evaluation.duration_ms * 1e6)
        # Plain start_span/end: attaching each span as the current context costs more
        # than the evaluation's own bookkeeping, and nothing below reads the context.
        span = t.start_span(
            SPAN_EVALUATE,
            context=parent,
            start_time=evaluation.started_ns or None,
            attributes={
                "tollgate.verdict_id": verdict.id,
                "tollgate.provider": verdict.provider,
                "tollgate.policy_revision": engine.revision,
                "tollgate.entrypoint": engine.entrypoint,
                "tollgate.decision_id": decision_id,
            },
        )
        settings = self._providers.of(verdict.provider)
        if evaluation.ok:
            try:
                decided = parse_decision(evaluation.result, settings.min_prefix)
            except MalformedDecision as exc:
                error = f"malformed decision: {exc}"
            else:
                shadow = decided.shadow
            if decided is not None and decided.actions:
                plan_span = t.start_span(
                    SPAN_PLAN,
                    context=trace.set_span_in_context(span),
                    attributes={"tollgate.verdict_id": verdict.id},
                )
                actions = plan_actions(
                    decided,
                    decision_id=decision_id,
                    verdict_id=verdict.id,
                    provider=verdict.provider,
                    policy_revision=engine.revision,
                    trace_id=trace_id,
                    now=now,
                    shadow_rules=engine.bundle.shadow,
                )
                plan_span_id = format(plan_span.get_span_context().span_id, "016x")
                plan_span.set_attribute("tollgate.actions", len(actions))
                plan_span.set_attribute("tollgate.rules", sorted({a["rule"] for a in actions}))
                plan_span.end()
        if error is not None:
            status = DecisionStatus.ERROR
            span.set_status(trace.StatusCode.ERROR, error)
            # An error must never be a quiet no-action (an attacker who makes the engine
            # refuse the input would go untouched): the provider's fallback is planned.
            actions = fallback_actions(
                settings.fallback,
                verdict.subject.targets,
                error,
                decision_id=decision_id,
                verdict_id=verdict.id,
                provider=verdict.provider,
                policy_revision=engine.revision,
                trace_id=trace_id,
                now=now,
            )
            span.set_attribute("tollgate.fallback", settings.fallback)
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
        return Outcome(decision, actions, plan_span_id)

    async def _store(self, session: AsyncSession, outcomes: list[Outcome], now: datetime) -> None:
        decisions = [o.decision for o in outcomes]
        actions = [a for o in outcomes for a in o.actions]
        await repository.insert_decisions(session, decisions)
        await actions_repo.insert_actions(session, actions)
        await verdicts_repo.set_status(
            session, [d["verdict_id"] for d in decisions], VerdictStatus.DECIDED
        )
        events: list[EventDraft] = []
        for outcome in outcomes:
            d = outcome.decision
            events.append(
                EventDraft(
                    type="decision.recorded",
                    actor=PIPELINE_ACTOR,
                    at=now,
                    provider=d["provider"],
                    verdict_id=d["verdict_id"],
                    decision_id=d["id"],
                    trace_id=d["trace_id"],
                    payload={
                        "status": d["status"],
                        "policy_revision": d["policy_revision"],
                        "entrypoint": d["entrypoint"],
                        "engine": d["engine"],
                        "error": d["error"],
                        "actions": len(outcome.actions),
                    },
                )
            )
            events.extend(
                EventDraft(
                    type="action.planned",
                    actor=PIPELINE_ACTOR,
                    at=now,
                    provider=a["provider"],
                    verdict_id=a["verdict_id"],
                    decision_id=a["decision_id"],
                    action_id=a["id"],
                    trace_id=a["trace_id"],
                    payload={
                        "type": a["type"],
                        "target": {"kind": a["target_kind"], "value": a["target_value"]},
                        "params": a["params"],
                        "ttl_seconds": a["ttl_seconds"],
                        "rule": a["rule"],
                        "reason": a["reason"],
                        "shadow": a["shadow"],
                        "policy_revision": a["policy_revision"],
                    },
                )
                for a in outcome.actions
            )
        await audit.record(session, events)
        for outcome in outcomes:
            await record_changes(session, outcome.actions, "planned", now, outcome.span_id)
