"""Exemption API schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from controlplane.domain.verdict import ProviderName
from controlplane.domain.vocabulary import SubjectKind
from controlplane.enforce.targets import PrefixFloor, TargetError, canonical_target
from controlplane.errors import InvalidInput


class SubjectRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: SubjectKind
    value: Annotated[str, Field(min_length=1, max_length=200)]


class SubjectIn(SubjectRef):
    """A subject as given: stored as verdicts and actions spell it, or it would never
    match them (and never with a character a gateway reads as syntax)."""

    @model_validator(mode="after")
    def _canonical(self) -> SubjectIn:
        try:
            self.value = canonical_target(self.kind.value, self.value)
        except TargetError as exc:
            raise ValueError(f"value: {exc}") from None
        return self


class ExemptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: SubjectIn
    provider: ProviderName
    owner: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="Who vouches for the subject (a person or team)."
    )
    reason: Annotated[str, Field(min_length=1, max_length=2000)]
    expires_at: AwareDatetime | None = None

    def check_floor(self, floor: PrefixFloor) -> None:
        """An exempt range wider than the provider's `min_prefix` would exempt nearly
        everyone from enforcement: refused like a block that wide."""
        if self.subject.kind is SubjectKind.CIDR:
            try:
                canonical_target("cidr", self.subject.value, floor)
            except TargetError as exc:
                raise InvalidInput(
                    f"subject.value: {exc}",
                    details=[{"field": "subject.value", "message": str(exc)}],
                ) from None


class ExemptionOut(BaseModel):
    id: str
    provider: str
    subject: SubjectRef
    owner: str
    reason: str
    expires_at: datetime | None
    created_at: datetime
