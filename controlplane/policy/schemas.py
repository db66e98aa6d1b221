"""Policy revision API schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class RevisionOut(BaseModel):
    id: str = Field(description="The git commit (with `-dirty.<hash>` for local edits).")
    source: str
    status: str = Field(description="`passed` (may be activated) or `rejected`.")
    active: bool
    created_at: datetime
    problems: list[str] = Field(description="Why a rejected revision was rejected.")
    tests: dict[str, Any] = Field(description="`passed`, `failed` and the failures.")
    shadow_rules: list[str] = Field(description="Rules in shadow mode in this revision.")


class ActivationOut(BaseModel):
    revision: str
    kind: str = Field(description="`activate` (a sync) or `rollback`.")
    actor: str
    reason: str
    at: datetime


class PoliciesOut(BaseModel):
    active: str | None
    revisions: list[RevisionOut]
    activations: list[ActivationOut] = Field(description="Newest first: who, when and why.")
