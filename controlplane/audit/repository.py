"""Audit SQL: the chain head (locked while appending) and the event rows."""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from controlplane.audit.chain import GENESIS_HASH
from controlplane.store.models import AuditEventRow, AuditHeadRow

HEAD_ID = 1


async def lock_head(session: AsyncSession) -> tuple[int, str]:
    """The last (seq, hash), locked until commit so appends form one chain across replicas."""
    query = select(col(AuditHeadRow.seq), col(AuditHeadRow.hash)).where(
        col(AuditHeadRow.id) == HEAD_ID
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    if row is None:
        await session.execute(insert(AuditHeadRow).values(id=HEAD_ID, seq=0, hash=GENESIS_HASH))
        if session.get_bind().dialect.name == "postgresql":
            row = (await session.execute(query)).first()
            assert row is not None
            return row.seq, row.hash
        return 0, GENESIS_HASH
    return row.seq, row.hash


async def append(session: AsyncSession, rows: list[dict[str, object]], seq: int, last: str) -> None:
    await session.execute(insert(AuditEventRow), rows)
    await session.execute(
        update(AuditHeadRow).where(col(AuditHeadRow.id) == HEAD_ID).values(seq=seq, hash=last)
    )
