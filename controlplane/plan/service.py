"""The plan step: a checked decision becomes action rows (the desired state), each
recorded with its `action.planned` event and its change in the enforcement log."""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.audit.chain import EventDraft
from controlplane.domain.action import ActionSpec, DecisionResult
from controlplane.domain.vocabulary import ActionState, ActionType, SubjectKind
from controlplane.enforce.service import record_changes
from controlplane.plan import repository
from controlplane.store.models import new_id
from controlplane.telemetry.tracing import SPAN_PLAN, tracer

PIPELINE_ACTOR = "tollgate"

FALLBACK_RULE = "tollgate.fallback"
"""The rule named on what a provider's fallback plans when a decision errors."""
REASON_LIMIT = 500
"""Characters of the error quoted in a fallback's reason (the decision keeps all of it)."""


def plan_actions(
    result: DecisionResult,
    *,
    decision_id: str,
    verdict_id: str,
    provider: str,
    policy_revision: str,
    trace_id: str | None,
    now: datetime,
    shadow_rules: Container[str] = (),
) -> list[dict[str, Any]]:
    """Action rows (state `pending`) for every action the decision asked for; an action
    of a shadow decision or of a shadow-mode rule is recorded with `shadow` set."""
    rows = []
    for spec in result.actions:
        rows.append(
            {
                "id": new_id("act"),
                "decision_id": decision_id,
                "verdict_id": verdict_id,
                "provider": provider,
                "type": spec.type.value,
                "target_kind": spec.target_kind.value,
                "target_value": spec.target_value,
                "params": spec.params,
                "ttl_seconds": spec.ttl.total_seconds() if spec.ttl else None,
                "expires_at": now + spec.ttl if spec.ttl else None,
                "rule": spec.rule,
                "reason": spec.reason,
                "state": ActionState.PENDING.value,
                "shadow": result.shadow or spec.rule in shadow_rules,
                "policy_revision": policy_revision,
                "trace_id": trace_id,
                "created_at": now,
                "updated_at": now,
            }
        )
    return rows


def fallback_actions(
    fallback: str,
    targets: Sequence[tuple[str, str]],
    error: str,
    **context: Any,
) -> list[dict[str, Any]]:
    """What a decision that errored plans under the provider's `fallback`: with
    `flag_review`, a review of the subject's first target (account, then key, org, IP:
    the order exemptions use), so a human sees what the policy could not decide; with
    `none`, nothing (the error is still counted and shown)."""
    if fallback != ActionType.FLAG_REVIEW.value or not targets:
        return []
    kind, value = targets[0]
    quoted = error if len(error) <= REASON_LIMIT else error[:REASON_LIMIT] + "…"
    spec = ActionSpec(
        type=ActionType.FLAG_REVIEW,
        target_kind=SubjectKind(kind),
        target_value=value,
        params={},
        ttl=None,
        rule=FALLBACK_RULE,
        reason=f"the decision failed, so no policy acted; review by hand: {quoted}",
    )
    return plan_actions(DecisionResult(actions=(spec,), shadow=False), **context)


@dataclass
class Planned:
    """One decision's actions, and the `action.plan` span that planned them (the
    gateway apply that follows continues from it)."""

    actions: list[dict[str, Any]]
    span_id: str | None = None


def plan(result: DecisionResult, parent: trace.Span | None, **context: Any) -> Planned:
    """`plan_actions` inside its own `action.plan` span, a child of `parent`."""
    span = tracer().start_span(
        SPAN_PLAN,
        context=trace.set_span_in_context(parent) if parent is not None else None,
        attributes={"tollgate.verdict_id": context["verdict_id"]},
    )
    actions = plan_actions(result, **context)
    span.set_attribute("tollgate.actions", len(actions))
    span.set_attribute("tollgate.rules", sorted({a["rule"] for a in actions}))
    span.end()
    return Planned(actions, format(span.get_span_context().span_id, "016x"))


async def record(
    session: AsyncSession, planned: Sequence[Planned], now: datetime
) -> list[EventDraft]:
    """Insert the actions in the caller's transaction; returns their `action.planned`
    events (the caller chains them, then calls `log_changes`)."""
    actions = [a for p in planned for a in p.actions]
    await repository.insert_actions(session, actions)
    return [
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
        for a in actions
    ]


async def log_changes(session: AsyncSession, planned: Sequence[Planned], now: datetime) -> None:
    """The planned entries, in the enforcement change log (after the audit events)."""
    for p in planned:
        await record_changes(session, p.actions, "planned", now, p.span_id)
