"""CrowdSec's decision, as its LAPI swagger (1.x) describes it."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CrowdSecDecision(BaseModel):
    """One decision: a target blocked by Tollgate, in CrowdSec's terms."""

    id: int = Field(description="Stable for a target (a hash of its kind and value).")
    uuid: str = Field(description="Stable for a target (a UUIDv5 of its kind and value).")
    origin: str = Field(description="`tollgate`, or `crowdsec.origin` in the config file.")
    type: str = Field(description="Always `ban`.")
    scope: str = Field(description="`Ip` or `Range`.")
    value: str = Field(description="The address or network, canonical.")
    duration: str = Field(
        description="Time left, in Go's format (`3h59m58s`); `0s` in `deleted`; ten years "
        "for a block without an end."
    )
    until: str | None = Field(description="When the block ends (UTC); null: no end.")
    scenario: str = Field(description="The Rego rule that asked for the block.")
    simulated: bool = Field(description="Always false: shadow actions are never decisions.")


class DecisionStreamOut(BaseModel):
    """A stream answer: decisions to add and to remove."""

    new: list[CrowdSecDecision]
    deleted: list[CrowdSecDecision]
