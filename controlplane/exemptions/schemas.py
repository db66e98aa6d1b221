"""Exemption API schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from controlplane.domain.verdict import ProviderName
from controlplane.domain.vocabulary import SubjectKind


class SubjectRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: SubjectKind
    value: Annotated[str, Field(min_length=1, max_length=200)]


class ExemptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: SubjectRef
    provider: ProviderName
    owner: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="Who vouches for the subject (a person or team)."
    )
    reason: Annotated[str, Field(min_length=1, max_length=2000)]
    expires_at: AwareDatetime | None = None


class ExemptionOut(BaseModel):
    id: str
    provider: str
    subject: SubjectRef
    owner: str
    reason: str
    expires_at: datetime | None
    created_at: datetime
