"""Policy revision API schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RevisionOut(BaseModel):
    id: str = Field(description="The git commit (with `-dirty.<hash>` for local edits).")
    short_id: str = Field(
        description="How people see it: 12 digits of the commit, and `-dirty.<hash>` for "
        "uncommitted edits, so an edited tree never shows as its commit."
    )
    source: str
    status: str = Field(description="`passed` (may be activated) or `rejected`.")
    active: bool
    created_at: datetime
    problems: list[str] = Field(description="Why a rejected revision was rejected.")
    tests: dict[str, Any] = Field(description="`passed`, `failed` and the failures.")
    shadow_rules: list[str] = Field(
        description="Shadow-mode rules (`package.rule`) and packages (`package.*`)."
    )


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


class ImpactRequest(BaseModel):
    """Compare two revisions on stored traffic. The head may be uploaded as Rego
    modules (a pull request's policies) instead of naming a recorded revision."""

    model_config = ConfigDict(extra="forbid")

    base: str | None = Field(
        default=None, description="A recorded revision (id or unique prefix); default: active."
    )
    head: str | None = Field(default=None, description="A recorded revision (id or prefix).")
    head_modules: dict[str, str] | None = Field(
        default=None, description="Rego source by path, for a head not recorded here."
    )
    head_data: list[tuple[str, Any]] = Field(
        default_factory=list, description="(dotted path, document) pairs for `head_modules`."
    )
    since: str | None = Field(default=None, description="Window such as `7d`; default: all.")

    @model_validator(mode="after")
    def _one_head(self) -> ImpactRequest:
        if (self.head is None) == (self.head_modules is None):
            raise ValueError("give exactly one of head (a recorded revision) or head_modules")
        return self


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        default="sync by hand", min_length=1, max_length=2000, description="Why, for the record."
    )


class SyncOut(BaseModel):
    revision: str = Field(description="The revision the server's policy source holds now.")
    outcome: str = Field(
        description="`activated` (new, passed its check and tests), `unchanged` (already "
        "known) or `rejected` (failed its check or tests: it can never be activated)."
    )
    problems: list[str] = Field(description="Why a rejected revision was rejected.")
    tests: dict[str, Any] = Field(description="`passed`, `failed` and the failures.")


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    revision: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The revision (id or unique prefix) to reactivate; default: the one "
        "active before the current one.",
    )
    reason: str = Field(
        default="rollback by hand",
        min_length=1,
        max_length=2000,
        description="Why, for the record.",
    )


class RollbackOut(BaseModel):
    revision: str = Field(description="The revision active now.")
