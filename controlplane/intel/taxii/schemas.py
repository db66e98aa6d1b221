"""TAXII 2.1 resources (OASIS TAXII 2.1, section 4-5)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

MEDIA_TYPE = "application/taxii+json;version=2.1"
STIX_MEDIA_TYPE = "application/stix+json;version=2.1"
MAX_ADD = 10_000
"""The most objects one POST may add."""
MAX_CONTENT_LENGTH = 16 * 2**20
"""The largest request body the API root takes (its `max_content_length`)."""


class Discovery(BaseModel):
    title: str
    description: str
    default: str
    api_roots: list[str]


class ApiRoot(BaseModel):
    title: str
    description: str
    versions: list[str]
    max_content_length: int


class CollectionOut(BaseModel):
    id: str
    title: str
    description: str
    can_read: bool
    can_write: bool
    media_types: list[str]


class Collections(BaseModel):
    collections: list[CollectionOut]


class Envelope(BaseModel):
    more: bool
    next: str | None = Field(default=None, description="Opaque: pass it back as `next`.")
    objects: list[dict[str, Any]]


class ManifestRecord(BaseModel):
    id: str
    date_added: str
    version: str
    media_type: str


class Manifest(BaseModel):
    more: bool
    next: str | None = None
    objects: list[ManifestRecord]


class Versions(BaseModel):
    more: bool
    versions: list[str]


class StatusDetail(BaseModel):
    id: str
    version: str
    message: str | None = None


class Status(BaseModel):
    """TAXII 2.1 status resource (4.3.1): the outcome of one request that added objects."""

    id: str
    status: str = Field(description="`complete` (Tollgate takes posted objects at once).")
    request_timestamp: str | None = None
    total_count: int
    success_count: int
    successes: list[StatusDetail] = Field(default_factory=list)
    failure_count: int
    failures: list[StatusDetail] = Field(default_factory=list)
    pending_count: int
    pendings: list[StatusDetail] = Field(default_factory=list)


class AddEnvelope(BaseModel):
    """The objects to add (TAXII envelope; `more` and `next` are ignored)."""

    objects: list[Any] = Field(max_length=MAX_ADD)
    more: bool | None = None
    next: str | None = None
