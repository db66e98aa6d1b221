"""How an audit event is hashed. Verifiers (online and offline) use exactly this."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An audit event before it gets its place (seq) and hash in the chain."""

    type: str
    actor: str
    at: datetime
    provider: str | None = None
    verdict_id: str | None = None
    decision_id: str | None = None
    action_id: str | None = None
    trace_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    subjects: Sequence[tuple[str, str]] | None = None
    """(kind, value) of every subject the event concerns, when the writer knows them
    (not hashed: the subject index reads them; None: derived from the verdict, action
    and payload the event names)."""


HASHED_FIELDS = (
    "seq",
    "at",
    "type",
    "actor",
    "provider",
    "verdict_id",
    "decision_id",
    "action_id",
    "trace_id",
    "payload",
)
"""The fields the hash covers; `at` as its ISO 8601 text (`datetime.isoformat()`)."""


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""What `json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)` builds
on every call; built once, as verifying a million events calls it a million times."""


def canonical_document(document: dict[str, Any]) -> bytes:
    """The canonical JSON of an event given as its `HASHED_FIELDS` (`at` already as
    text): sorted keys, no whitespace, UTF-8. Exports are verified offline with this,
    so it must never change for events already written."""
    return _CANONICAL.encode(document).encode()


def canonical(seq: int, draft: EventDraft) -> bytes:
    """The canonical JSON of an event: sorted keys, no whitespace, UTF-8."""
    return canonical_document(
        {
            "seq": seq,
            "at": draft.at.isoformat(),
            "type": draft.type,
            "actor": draft.actor,
            "provider": draft.provider,
            "verdict_id": draft.verdict_id,
            "decision_id": draft.decision_id,
            "action_id": draft.action_id,
            "trace_id": draft.trace_id,
            "payload": draft.payload,
        }
    )


def document_hash(document: dict[str, Any], prev_hash: str) -> str:
    """`event_hash` of an event given as its `HASHED_FIELDS`."""
    return hashlib.sha256(canonical_document(document) + prev_hash.encode()).hexdigest()


def event_hash(seq: int, draft: EventDraft, prev_hash: str) -> str:
    return hashlib.sha256(canonical(seq, draft) + prev_hash.encode()).hexdigest()
