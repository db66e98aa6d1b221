"""Indicator API schemas."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

Tlp = Literal["clear", "green", "amber", "amber+strict", "red"]


class IndicatorIn(BaseModel):
    """A shared indicator. Only `cidr` indicators are matched against verdict IPs so far."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["cidr"] = "cidr"
    value: str = Field(description="An IPv4 or IPv6 network, e.g. `203.0.113.0/24`.")
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
            return str(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not a CIDR like 203.0.113.0/24") from None


class IndicatorBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    indicators: Annotated[list[IndicatorIn], Field(min_length=1, max_length=10000)]


class IndicatorOut(BaseModel):
    id: str
    kind: str
    value: str
    source: str
    confidence: float
    tlp: str
    expires_at: datetime | None
    created_at: datetime
