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
