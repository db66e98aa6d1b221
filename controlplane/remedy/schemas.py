"""Remedy API schemas: exemptions, appeals, lifts, the remediation report."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from controlplane.domain.action import parse_duration
from controlplane.domain.verdict import ProviderName
from controlplane.domain.vocabulary import SubjectKind
from controlplane.enforce.targets import PrefixFloor, TargetError, canonical_target
from controlplane.errors import InvalidInput
from controlplane.plan.schemas import ActionOut

REFERENCE = re.compile(r"^TG-[0-9A-HJKMNP-TV-Z]{10}$")
"""A reference as refusals quote it (`enforce.sdk.reference_of`)."""
LONGEST_EXEMPTION = timedelta(days=366)
DURATION = r"^([0-9]+(ms|s|m|h|d|w))+$"
"""A period as `domain.action.parse_duration` reads it (`30d`, `1h30m`)."""


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


def check_floor(subject: SubjectRef, floor: PrefixFloor) -> None:
    """An exempt range wider than the provider's `min_prefix` would exempt nearly
    everyone from enforcement: refused like a block that wide."""
    if subject.kind is SubjectKind.CIDR:
        try:
            canonical_target("cidr", subject.value, floor)
        except TargetError as exc:
            raise InvalidInput(
                f"subject.value: {exc}",
                details=[{"field": "subject.value", "message": str(exc)}],
            ) from None


def duration_text(value: str) -> timedelta:
    """A period such as `30d` for an exemption, at least a minute and at most a year."""
    out_of_range = ValueError(f"{value!r} must be from 1m to 366d")
    try:
        period = parse_duration(value)
    except OverflowError:
        raise out_of_range from None
    if not timedelta(minutes=1) <= period <= LONGEST_EXEMPTION:
        raise out_of_range
    return period


# -- exemptions ----------------------------------------------------------------------------


class ExemptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: SubjectIn
    provider: ProviderName
    owner: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="Who vouches for the subject (a person or team)."
    )
    reason: Annotated[str, Field(min_length=1, max_length=2000)]
    expires_at: AwareDatetime | None = None


class ExemptionRemoveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=3, max_length=2000)] = Field(
        description="Why the exemption ends, for the record."
    )


class CarveOut(BaseModel):
    """Where an IP or CIDR exemption inside a blocked range is served, per connector."""

    connector: str
    carved_out: bool = Field(
        description="true: the gateway serves the exempt address before any block; false: "
        "it cannot (see `detail`), so a block that covers the address still refuses it."
    )
    detail: str = ""


class ExemptionOut(BaseModel):
    id: str
    provider: str
    subject: SubjectRef
    owner: str
    reason: str
    expires_at: datetime | None
    created_at: datetime
    ended_at: datetime | None = Field(
        default=None, description="When it was removed or expired; null while it holds."
    )
    ended_by: str | None = None
    appeal_id: str | None = Field(default=None, description="The upheld appeal that added it.")
    lifted: list[str] = Field(
        default_factory=list,
        description="Actions this exemption lifted when it was added (ids).",
    )
    covering: list[str] = Field(
        default_factory=list,
        description="Active blocks of wider ranges that hold the exempt IP or CIDR: not "
        "lifted (they cover others too); the exemption is carved out of them where the "
        "gateway can (see `carve_out`).",
    )
    carve_out: list[CarveOut] = Field(default_factory=list)


# -- lifts ---------------------------------------------------------------------------------


class LiftIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=3, max_length=2000)] = Field(
        description="Why, for the record (an appeal, a false positive, ...)."
    )


# -- appeals -------------------------------------------------------------------------------

AppealState = Literal["open", "upheld", "denied"]


class AppealIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: SubjectIn
    provider: ProviderName
    action_ids: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=40)]], Field(max_length=100)
    ] = Field(
        default_factory=list,
        description="The actions appealed; empty: every active action on the subject.",
    )
    reference: str | None = Field(
        default=None,
        pattern=r"^\s*[Tt][Gg]-[0-9A-Za-z]{10}\s*$",
        description="The reference the customer was shown at a refusal (`TG-` and ten "
        "characters, any letter case); its actions are covered too.",
    )
    statement: Annotated[str, Field(min_length=1, max_length=5000)] = Field(
        description="The customer's case, in their words."
    )
    contact: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="Where the outcome goes (an e-mail address or a ticket)."
    )

    @field_validator("reference")
    @classmethod
    def _reference(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().upper()
        if not REFERENCE.match(value):
            raise ValueError("a reference looks like TG-7Q2M9K4D1X (as the refusal showed it)")
        return value


class UpholdIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=3, max_length=2000)]
    exempt_for: str | None = Field(
        default="30d",
        pattern=DURATION,
        max_length=20,
        description="How long the subject is exempt after the uphold (`30d`, `12h`); null: "
        "no exemption (the cool-down still holds the same rule back).",
    )

    @field_validator("exempt_for")
    @classmethod
    def _period(cls, value: str | None) -> str | None:
        if value is not None:
            duration_text(value)
        return value


class DenyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=3, max_length=2000)]


class CoveredAction(BaseModel):
    action: ActionOut
    lifted_at: datetime | None = Field(description="When this appeal lifted it; null: not.")


class AppealOut(BaseModel):
    id: str
    provider: str
    subject: SubjectRef
    reference: str | None
    statement: str
    contact: str
    state: AppealState
    filed_by: str
    filed_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None
    exemption_id: str | None
    exempt_until: datetime | None = None
    trace_id: str | None
    outcome: str | None = Field(
        default=None, description="What to tell the customer, once decided."
    )
    actions: list[CoveredAction] = Field(
        default_factory=list, description="Every action the appeal covers, as it is now."
    )


class AppealPage(BaseModel):
    items: list[AppealOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


# -- the remediation report ----------------------------------------------------------------


class Figures(BaseModel):
    """Remediation figures of one rule or one detector (or all of them)."""

    name: str
    actions: int = Field(description="Actions taken (not shadow) in the period.")
    appeals: int = Field(description="Appeals filed in the period that cover its actions.")
    upheld: int
    denied: int
    open: int
    overturn_rate: float | None = Field(
        description="upheld / (upheld + denied); null before any decision."
    )
    median_action_to_appeal_seconds: float | None
    median_appeal_to_decision_seconds: float | None
    median_decision_to_lift_seconds: float | None


class RemediationReport(BaseModel):
    since: datetime
    until: datetime
    totals: Figures = Field(
        description="Complaints received, decisions, decisions reversed, median decision time."
    )
    rules: list[Figures]
    detectors: list[Figures]
