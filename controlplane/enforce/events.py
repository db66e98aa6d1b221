"""The audit events of an action's life at the gateways."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from controlplane.audit.chain import EventDraft
from controlplane.store.models import ActionRow


def action_event(
    action: ActionRow, state: str, actor: str, at: datetime, error: str | None = None
) -> EventDraft:
    """`action.<state>` (applied, failed, pending, expired) for one action."""
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
