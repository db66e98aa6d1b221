"""A detector's verdict, as accepted at `POST /v1/verdicts` and given to policies."""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    field_validator,
    model_validator,
)

from controlplane.domain import jsonsafe
from controlplane.enforce.targets import ID_CHARS, TargetError, canonical_ip

Identifier = Annotated[str, Field(min_length=1, max_length=200, pattern=rf"^{ID_CHARS}$")]
ProviderName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


def _real_text(text: str) -> str:
    why = jsonsafe.text_problem(text)
    if why:
        raise ValueError(f"the string {why}")
    return text


Text = Annotated[str, AfterValidator(_real_text)]
"""A string that can be stored and evaluated: no NUL character, no lone surrogate."""


class Detector(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[Text, Field(min_length=1, max_length=100)]
    version: Annotated[Text, Field(min_length=1, max_length=50)]


class Subject(BaseModel):
    """Who the verdict is about. At least one field must be set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account_id: Identifier | None = None
    api_key_id: Identifier | None = Field(
        default=None,
        description="The lab's key id or the SHA-256 fingerprint of the key, never the key itself.",
    )
    org_id: Identifier | None = None
    ips: Annotated[list[str], Field(max_length=256)] = Field(default_factory=list)

    @field_validator("ips")
    @classmethod
    def _ips_are_addresses(cls, ips: list[str]) -> list[str]:
        normalised = []
        for i, ip in enumerate(ips):
            try:
                normalised.append(canonical_ip(ip))
            except TargetError:
                raise ValueError(
                    f"ips[{i}]: {ip!r} is not an IPv4 or IPv6 address (no CIDR, zone id "
                    "or spaces here)"
                ) from None
        return normalised

    @model_validator(mode="after")
    def _not_empty(self) -> Subject:
        if not (self.account_id or self.api_key_id or self.org_id or self.ips):
            raise ValueError("subject needs at least one of account_id, api_key_id, org_id, ips")
        return self

    @cached_property
    def targets(self) -> tuple[tuple[str, str], ...]:
        """(kind, value) pairs an action could target for this subject (computed once)."""
        keys: list[tuple[str, str]] = []
        if self.account_id:
            keys.append(("account", self.account_id))
        if self.api_key_id:
            keys.append(("api_key", self.api_key_id))
        if self.org_id:
            keys.append(("org", self.org_id))
        keys.extend(("ip", ip) for ip in self.ips)
        return tuple(keys)


class Verdict(BaseModel):
    """A detector's report about one subject."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Identifier = Field(description="Unique per detector report; retries reuse it.")
    detector: Detector
    provider: ProviderName = Field(description="The lab's API platform (tenant) it concerns.")
    observed_at: AwareDatetime = Field(description="When the detector observed it (RFC 3339).")
    subject: Subject
    score: Fraction = Field(description="How strongly this looks like distillation, 0..1.")
    confidence: Fraction = Field(description="The detector's confidence in the score, 0..1.")
    signals: Annotated[dict[Text, FiniteFloat], Field(max_length=200)] = Field(default_factory=dict)
    labels: Annotated[list[Annotated[Text, Field(max_length=200)]], Field(max_length=100)] = Field(
        default_factory=list
    )
    evidence: Annotated[list[Any], Field(max_length=100)] = Field(default_factory=list)

    @field_validator("evidence")
    @classmethod
    def _evidence_is_plain_json(cls, evidence: list[Any]) -> list[Any]:
        # Evidence often quotes text the subject chose: a value the engine or the
        # database refuses would turn this verdict into an undecidable one.
        found = jsonsafe.problems(evidence, "evidence", depth=2)
        if found:
            raise ValueError("; ".join(f"{p['field']}: {p['message']}" for p in found))
        return evidence

    def document(self) -> dict[str, Any]:
        """The verdict as JSON, as stored and as policies see it. Built once (the verdict
        is frozen) and shared by the stored body, the input and the hash: read it, never
        change it."""
        return self.json_document

    @cached_property
    def json_document(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def content_hash(self) -> str:
        """Hash of the canonical content: a retry with the same id must carry the same hash."""
        return self.canonical_hash

    @cached_property
    def canonical_hash(self) -> str:
        canonical = json.dumps(self.document(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class VerdictBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdicts: Annotated[list[Verdict], Field(min_length=1, max_length=1000)]
