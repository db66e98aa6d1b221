"""Action API schemas."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from controlplane.domain.vocabulary import ActionState, ActionType, SubjectKind


class Target(BaseModel):
    kind: SubjectKind
    value: str


class ActionOut(BaseModel):
    """One enforcement the policy asked for: the desired state at the gateways."""

    id: str
    decision_id: str
    verdict_id: str
    provider: str
    type: ActionType
    target: Target
    params: dict[str, Any]
    ttl_seconds: float | None = Field(description="Lifetime asked by the policy; null: none.")
    expires_at: datetime | None
    rule: str = Field(description="The Rego rule that asked for it.")
    reason: str
    state: ActionState
    shadow: bool = Field(description="Asked by a shadow-mode rule: recorded, never enforced.")
    policy_revision: str
    trace_id: str | None
    created_at: datetime
    updated_at: datetime
    parent_id: str | None = Field(
        default=None,
        description="For a key revoked because its account or org is suspended: the "
        "suspension (it ends with it).",
    )
    reference: str | None = Field(
        default=None,
        description="What a refusal at the gateway quotes (e.g. `TG-7Q2M9K4D1X`); null "
        "for actions no gateway enforces.",
    )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ActionOut:
        """From an action row's columns (`ActionRow.model_dump()` or a planned row)."""
        fields = {k: v for k, v in row.items() if k not in ("target_kind", "target_value")}
        return cls(**fields, target=Target(kind=row["target_kind"], value=row["target_value"]))


class ActionPage(BaseModel):
    items: list[ActionOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )
