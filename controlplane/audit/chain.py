"""How an audit event is hashed. Verifiers (online and offline) use exactly this."""

from __future__ import annotations

import hashlib
import json
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


def canonical(seq: int, draft: EventDraft) -> bytes:
    """The canonical JSON of an event: sorted keys, no whitespace, UTF-8."""
    document = {
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
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hash(seq: int, draft: EventDraft, prev_hash: str) -> str:
    return hashlib.sha256(canonical(seq, draft) + prev_hash.encode()).hexdigest()
