"""Indicator API schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from controlplane.enforce.targets import PrefixFloor, TargetError, canonical_cidr
from controlplane.errors import InvalidInput

Tlp = Literal["clear", "green", "amber", "amber+strict", "red"]


class IndicatorIn(BaseModel):
    """A shared indicator. Only `cidr` indicators are matched against verdict IPs so far."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["cidr"] = "cidr"
    value: str = Field(
        description="An IPv4 or IPv6 network, e.g. `203.0.113.0/24`; stored with its host "
        "bits cleared, and refused when wider than the providers' `min_prefix` allows."
    )
    source: Annotated[str, Field(min_length=1, max_length=100)] = Field(
        description="Who shared it, e.g. the lab `lab-b`."
    )
    confidence: Annotated[float, Field(ge=0.0, le=1.0)]
    tlp: Tlp = Field(default="amber", description="Traffic Light Protocol marking.")
    expires_at: AwareDatetime | None = None

    @field_validator("value")
    @classmethod
    def _network(cls, value: str) -> str:
        try:
            return canonical_cidr(value)
        except TargetError as exc:
            raise ValueError(str(exc)) from None


class IndicatorBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    indicators: Annotated[list[IndicatorIn], Field(min_length=1, max_length=10000)]

    def check_floor(self, floor: PrefixFloor) -> None:
        """Refuse the whole batch when an indicator is wider than `floor`: intel drives
        blocks, and `0.0.0.0/0` would block everyone."""
        problems = []
        for i, indicator in enumerate(self.indicators):
            try:
                canonical_cidr(indicator.value, floor)
            except TargetError as exc:
                problems.append({"field": f"indicators[{i}].value", "message": str(exc)})
        if problems:
            raise InvalidInput(
                f"{problems[0]['field']}: {problems[0]['message']}; nothing was stored",
                details=problems,
            )


class IndicatorOut(BaseModel):
    id: str
    kind: str
    value: str
    source: str
    confidence: float
    tlp: str
    expires_at: datetime | None
    created_at: datetime
