"""What someone with write access to the database can do to the audit trail, done with
plain SQL on a real database, and a chain to do it to."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlmodel import col

from controlplane.audit import service as audit
from controlplane.audit.chain import GENESIS_HASH, EventDraft, event_hash
from controlplane.audit.keys import Signer
from controlplane.store.db import Database
from controlplane.store.models import (
    AuditCheckpointRow,
    AuditEventRow,
    AuditHeadRow,
    AuditSubjectHeadRow,
    AuditSubjectRow,
    new_id,
)
from controlplane.store.types import utcnow


async def reset(db: Database) -> None:
    """An empty chain (the tests of a module share one database)."""
    async with db.write() as session, session.begin():
        for model in (AuditEventRow, AuditCheckpointRow, AuditSubjectRow):
            await session.execute(delete(model))
        await session.execute(update(AuditHeadRow).values(seq=0, hash=GENESIS_HASH))
        await session.execute(update(AuditSubjectHeadRow).values(seq=0))


async def seed(db: Database, n: int, batch: int = 4) -> None:
    """`n` events through the real append path, a few per transaction; the first one's
    time has no fraction of a second (its ISO form has none either)."""
    start = utcnow().replace(microsecond=0)
    drafts = [
        EventDraft(
            type=("verdict.received", "decision.recorded", "action.planned")[i % 3],
            actor="tollgate",
            at=start + timedelta(milliseconds=i),
            provider="lab-a",
            verdict_id=f"v-{i // 3}",
            decision_id=f"dec_{i // 3}" if i % 3 else None,
            action_id=f"act_{i // 3}" if i % 3 == 2 else None,
            trace_id=None,
            payload={"i": i, "score": 0.93, "target": {"kind": "api_key", "value": f"key_{i}"}},
        )
        for i in range(n)
    ]
    for i in range(0, n, batch):
        async with db.write() as session, session.begin():
            await audit.record(session, drafts[i : i + batch])


async def events(db: Database) -> list[AuditEventRow]:
    async with db.read() as session:
        query = select(AuditEventRow).order_by(col(AuditEventRow.seq))
        return list((await session.execute(query)).scalars())


async def sql(db: Database, statement: str, **params: Any) -> None:
    async with db.write() as session, session.begin():
        await session.execute(text(statement), params)


async def edit_actor(db: Database, seq: int, actor: str) -> None:
    await sql(db, "UPDATE audit_event SET actor = :actor WHERE seq = :seq", actor=actor, seq=seq)


async def swap(db: Database, a: int, b: int) -> None:
    """Swap two events' places (their seq), keeping each row's content and hashes."""
    await sql(db, "UPDATE audit_event SET seq = -1 WHERE seq = :a", a=a)
    await sql(db, "UPDATE audit_event SET seq = :a WHERE seq = :b", a=a, b=b)
    await sql(db, "UPDATE audit_event SET seq = :b WHERE seq = -1", b=b)


async def rehash_after_edit(db: Database, seq: int, actor: str) -> str:
    """Edit one event, recompute every hash from there and move the head: the chain is
    consistent again. Returns the new head hash."""
    rows = await events(db)
    prev = GENESIS_HASH
    async with db.write() as session, session.begin():
        for row in rows:
            if row.seq == seq:
                row.actor = actor
            if row.seq >= seq:
                draft = EventDraft(
                    type=row.type,
                    actor=row.actor,
                    at=row.at,
                    provider=row.provider,
                    verdict_id=row.verdict_id,
                    decision_id=row.decision_id,
                    action_id=row.action_id,
                    trace_id=row.trace_id,
                    payload=row.payload,
                )
                digest = event_hash(row.seq, draft, prev)
                await session.execute(
                    update(AuditEventRow)
                    .where(col(AuditEventRow.seq) == row.seq)
                    .values(actor=row.actor, prev_hash=prev, hash=digest)
                )
                prev = digest
            else:
                prev = row.hash
        await session.execute(update(AuditHeadRow).values(hash=prev))
    return prev


async def reset_checkpoints_to(
    db: Database, signer: Signer, *, seq: int, chain_hash: str | None = None
) -> None:
    """Replace the checkpoints by one, honestly signed, at `seq` (of the hash there now,
    or of `chain_hash`: one signed before a rewrite)."""
    if chain_hash is None:
        chain_hash = next(e.hash for e in await events(db) if e.seq == seq)
    async with db.write() as session, session.begin():
        await session.execute(delete(AuditCheckpointRow))
        session.add(
            AuditCheckpointRow(
                id=new_id("ckp"),
                seq=seq,
                hash=chain_hash,
                at=utcnow(),
                key_id=signer.key_id,
                signature=signer.sign(seq, chain_hash),
            )
        )
