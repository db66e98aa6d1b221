"""TAXII 2.1 resources (OASIS TAXII 2.1, section 4-5)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

MEDIA_TYPE = "application/taxii+json;version=2.1"
STIX_MEDIA_TYPE = "application/stix+json;version=2.1"


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
