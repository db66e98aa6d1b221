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


_BEFORE_SEQ = ("action_id", "actor", "at", "decision_id", "payload", "provider")
_AFTER_SEQ = ("trace_id", "type", "verdict_id")
"""The hashed fields other than `seq`, in the canonical (sorted) order, either side of it."""


@dataclass(frozen=True, slots=True)
class Canonical:
    """An event's canonical JSON either side of its `seq`: all of it but the number, which
    only the chain's head gives. Built ahead (while the database works on something
    else), the chain itself is then only a hash per event."""

    head: bytes
    tail: bytes

    def of(self, seq: int) -> bytes:
        return b"%s%d%s" % (self.head, seq, self.tail)

    def hash(self, seq: int, prev_hash: str) -> str:
        return hashlib.sha256(
            b"%s%d%s%s" % (self.head, seq, self.tail, prev_hash.encode())
        ).hexdigest()


def canonical_parts(draft: EventDraft) -> Canonical:
    """The event's canonical document (`canonical_document` of its `HASHED_FIELDS`) less
    the seq: JSON encodes each value on its own, so the document split at `seq` (its
    keys sorted) is the two halves encoded apart."""
    fields = {
        "action_id": draft.action_id,
        "actor": draft.actor,
        "at": draft.at.isoformat(),
        "decision_id": draft.decision_id,
        "payload": draft.payload,
        "provider": draft.provider,
        "trace_id": draft.trace_id,
        "type": draft.type,
        "verdict_id": draft.verdict_id,
    }
    head = canonical_document({k: fields[k] for k in _BEFORE_SEQ})
    tail = canonical_document({k: fields[k] for k in _AFTER_SEQ})
    return Canonical(head[:-1] + b',"seq":', b"," + tail[1:])


def canonical(seq: int, draft: EventDraft) -> bytes:
    """The canonical JSON of an event: sorted keys, no whitespace, UTF-8."""
    return canonical_parts(draft).of(seq)


def event_hash(seq: int, draft: EventDraft, prev_hash: str) -> str:
    return canonical_parts(draft).hash(seq, prev_hash)


def document_hash(document: dict[str, Any], prev_hash: str) -> str:
    """`event_hash` of an event given as its `HASHED_FIELDS` (what verifiers check)."""
    return hashlib.sha256(canonical_document(document) + prev_hash.encode()).hexdigest()
