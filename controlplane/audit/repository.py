"""Audit SQL: the chain head (locked while appending) and the event rows."""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from controlplane.store.models import AuditEventRow, AuditHeadRow

HEAD_ID = 1


async def lock_head(session: AsyncSession) -> tuple[int, str]:
    """The last (seq, hash), locked until commit so appends form one chain across
    replicas. The head row is created by migration 0003, before any writer runs."""
    query = select(col(AuditHeadRow.seq), col(AuditHeadRow.hash)).where(
        col(AuditHeadRow.id) == HEAD_ID
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await session.execute(query)).one()
    return row.seq, row.hash


async def append(session: AsyncSession, rows: list[dict[str, object]], seq: int, last: str) -> None:
    await session.execute(insert(AuditEventRow), rows)
    await session.execute(
        update(AuditHeadRow).where(col(AuditHeadRow.id) == HEAD_ID).values(seq=seq, hash=last)
    )
