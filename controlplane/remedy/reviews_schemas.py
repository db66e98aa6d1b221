"""Review API schemas."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from controlplane.plan.schemas import ActionOut


class ReviewState(StrEnum):
    OPEN = "open"
    CONFIRMED = "confirmed"
    DISMISSED = "dismissed"


class ReviewOut(BaseModel):
    id: str
    provider: str
    state: ReviewState
    subject: dict[str, str] = Field(description="`{kind, value}`: whom the actions target.")
    rule: str = Field(description="The rule that withheld the actions.")
    reason: str = Field(description="Why the review was opened, and what would have happened.")
    withheld: list[dict[str, Any]] = Field(
        description="The actions withheld: `{type, target, params, ttl_seconds, rule, reason}`."
    )
    verdict_id: str
    decision_id: str
    policy_revision: str
    trace_id: str | None
    created_at: datetime
    age_seconds: float = Field(description="Seconds since it was opened (until resolved).")
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None
    applied: list[str] = Field(description="Ids of the actions a confirmation planned.")


class ReviewPage(BaseModel):
    reviews: list[ReviewOut]
    next_cursor: str | None


class ConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, Field(max_length=2000)] = ""


class DismissIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class ConfirmedOut(BaseModel):
    review: ReviewOut
    actions: list[ActionOut] = Field(description="The actions planned now (with suspended keys).")
