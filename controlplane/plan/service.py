"""Turning a checked decision into action rows."""

from __future__ import annotations

from collections.abc import Container
from datetime import datetime
from typing import Any

from controlplane.domain.action import DecisionResult
from controlplane.domain.vocabulary import ActionState
from controlplane.store.models import new_id


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
