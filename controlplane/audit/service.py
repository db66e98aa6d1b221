"""Appending to the audit chain. Callers pass drafts; the chain order is decided here."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.audit import repository
from controlplane.audit.chain import EventDraft, event_hash


async def record(session: AsyncSession, drafts: Sequence[EventDraft]) -> None:
    """Chain `drafts` after the current head, in the caller's transaction."""
    if not drafts:
        return
    seq, prev = await repository.lock_head(session)
    rows: list[dict[str, object]] = []
    for draft in drafts:
        seq += 1
        digest = event_hash(seq, draft, prev)
        rows.append(
            {
                "seq": seq,
                "at": draft.at,
                "type": draft.type,
                "actor": draft.actor,
                "provider": draft.provider,
                "verdict_id": draft.verdict_id,
                "decision_id": draft.decision_id,
                "action_id": draft.action_id,
                "trace_id": draft.trace_id,
                "payload": draft.payload,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    await repository.append(session, rows, seq, prev)
