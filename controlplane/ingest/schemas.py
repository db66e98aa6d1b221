"""Verdict API schemas. The verdict itself is `controlplane.domain.verdict.Verdict`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from controlplane.domain.vocabulary import DecisionStatus, VerdictStatus
from controlplane.plan.schemas import ActionOut


class VerdictResult(BaseModel):
    """What became of one submitted verdict."""

    verdict_id: str
    status: VerdictStatus = Field(
        description="`decided`, or `received`: stored and acknowledged, decision still to come."
    )
    duplicate: bool = Field(description="The id was stored before: this is the first result.")
    decision_id: str | None = None
    decision_status: DecisionStatus | None = None
    policy_revision: str | None = None
    error: str | None = Field(default=None, description="Why the decision failed, if it did.")
    trace_id: str | None = None
    actions: list[ActionOut] = Field(default_factory=list)


class IngestResult(BaseModel):
    accepted: int = Field(description="Verdicts stored by this request.")
    duplicates: int = Field(description="Verdicts already stored (same id, same content).")
    results: list[VerdictResult] = Field(description="One per submitted verdict, in order.")


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


class VerdictOut(BaseModel):
    id: str
    status: VerdictStatus
    received_at: datetime
    trace_id: str | None
    verdict: dict[str, Any] = Field(description="The verdict as submitted (normalised).")
    decision_id: str | None
    decision_status: DecisionStatus | None
    policy_revision: str | None
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
    matches: bool = Field(description="The re-run gives the stored result.")
    stored_result: Any
    rerun_result: Any
    rerun_error: str | None
    actions: list[dict[str, Any]] = Field(description="Actions with their rule's METADATA.")
    fired: list[FiredRuleOut] = Field(description="Rules that evaluated true, in order.")
