"""Turning a checked decision into action rows."""

from __future__ import annotations

from collections.abc import Container, Sequence
from datetime import datetime
from typing import Any

from controlplane.domain.action import ActionSpec, DecisionResult
from controlplane.domain.vocabulary import ActionState, ActionType, SubjectKind
from controlplane.enforce.sdk import EntryType, reference_of
from controlplane.store.models import new_id

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
                "reference": _reference(spec.type.value, spec),
            }
        )
    return rows


_GATEWAY_TYPES = {t.value for t in EntryType}


def _reference(action_type: str, spec: ActionSpec) -> str | None:
    """What a gateway's refusal will quote for this action (none for a review)."""
    if action_type not in _GATEWAY_TYPES:
        return None
    return reference_of(action_type, spec.target_kind.value, spec.target_value)


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
