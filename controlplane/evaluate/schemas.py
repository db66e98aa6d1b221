"""Decision API schemas: a stored decision and its explanation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from controlplane.domain.vocabulary import DecisionStatus
from controlplane.plan.schemas import ActionOut


class DecisionOut(BaseModel):
    """One evaluation of a verdict against a policy revision."""

    id: str
    verdict_id: str
    provider: str
    policy_revision: str
    entrypoint: str
    engine: str
    status: DecisionStatus
    shadow: bool
    input: dict[str, Any] = Field(description="The OPA input exactly as evaluated.")
    result: Any = Field(description="The entrypoint's output exactly as returned.")
    error: str | None
    duration_ms: float
    trace_id: str | None
    decided_at: datetime
    actions: list[ActionOut]


class FiredRuleOut(BaseModel):
    rule: str
    location: str = Field(description="file:line of the rule in the revision.")
    bindings: dict[str, Any] = Field(description="Variables bound when it evaluated true.")
    metadata: dict[str, Any] | None


class ExplanationOut(BaseModel):
    """A decision re-run at its revision on its stored input, with the engine's trace."""

    decision_id: str
    verdict_id: str
    policy_revision: str
    entrypoint: str
    stored_status: str = Field(description="How the stored decision came out (`ok`, `error`...).")
    matches: bool = Field(description="The re-run gives the stored result.")
    stored_result: Any
    rerun_result: Any
    rerun_error: str | None
    actions: list[dict[str, Any]] = Field(description="Actions with their rule's METADATA.")
    fired: list[FiredRuleOut] = Field(description="Rules that evaluated true, in order.")
