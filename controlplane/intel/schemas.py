"""Intel API schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from controlplane.intel.markings import Pap, Tlp

Kind = Literal["cidr", "asn", "org_pattern", "account", "api_key", "org", "payment", "signature"]


class IndicatorIn(BaseModel):
    """An indicator entered by this lab. `account`, `api_key`, `org` and `payment` values
    may be sent raw: they are hashed under the consortium key before anything is stored
    (or sent already hashed, `<key id>:<64 hex>`)."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind = "cidr"
    value: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="`cidr`: an IPv4/IPv6 network (host bits cleared; refused when wider "
        "than the providers' `min_prefix`); `asn`: `64500` or `AS64500`; `org_pattern`: a "
        "regular expression over org ids; identifiers: the raw id or its keyed hash; "
        "`signature`: the signal name."
    )
    source: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="Who said it; this lab (`intel.lab`) when absent."
    )
    confidence: Annotated[float, Field(ge=0.0, le=1.0)]
    tlp: Tlp = Field(default="green", description="TLP 2.0 marking.")
    pap: Pap = Field(default="green", description="PAP marking: which actions it may drive.")
    expires_at: AwareDatetime | None = Field(default=None, description="Valid until.")
    first_seen: AwareDatetime | None = None
    last_seen: AwareDatetime | None = None
    decay_days: Annotated[int, Field(ge=1, le=3650)] | None = Field(
        default=None, description="Half-life of the confidence, from `last_seen`."
    )
    threshold: Annotated[float, Field(ge=-1e12, le=1e12)] | None = Field(
        default=None, description="`signature`: the signal value that matches."
    )
    op: Literal["gte", "gt", "lte", "lt", "eq"] | None = Field(
        default=None, description="`signature`: how the signal compares (default `gte`)."
    )


class IndicatorBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    indicators: Annotated[list[IndicatorIn], Field(min_length=1, max_length=10000)]


class IndicatorOut(BaseModel):
    id: str
    kind: str
    value: str = Field(description="Canonical value; identifiers as keyed hashes only.")
    source: str
    origin: str = Field(description="`local`, or the peer it was pulled from.")
    confidence: float
    tlp: str
    pap: str
    expires_at: datetime | None
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    decay_days: float | None = None
    detail: dict[str, Any] | None = None
    stix_id: str | None = None
    revoked: bool = False
    revoked_reason: str | None = None
    created_at: datetime


class RetractIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=400)]


class Retraction(BaseModel):
    id: str
    published: int = Field(description="Signed objects published (revoked version, opinion).")
    lifted: list[str] = Field(description="Actions lifted because this was their only basis.")


class PeerOut(BaseModel):
    name: str
    url: str
    collection: str
    key_id: str
    trust: float
    accept_tlp: list[str]
    accept_pap: list[str]
    healthy: bool = Field(description="The last pull succeeded.")
    last_pull_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    accepted: int
    rejected: int
    duplicates: int
    retractions: int
    lifted: int
    indicators_in_force: int
    indicators_held: int


class PullOut(BaseModel):
    peer: str
    pages: int
    accepted: int
    rejected: int
    duplicates: int
    retractions: int
    lifted: int
    error: str | None
