"""SQL of the bouncers' cursors (the `bouncer_cursor` table)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from controlplane.store.models import BouncerCursorRow


async def cursor(session: AsyncSession, token_id: str) -> int | None:
    """The last change this bouncer was sent whole; None before its first stream."""
    query = select(col(BouncerCursorRow.seq)).where(col(BouncerCursorRow.token_id) == token_id)
    found = (await session.execute(query)).scalar_one_or_none()
    return int(found) if found is not None else None


async def save_cursor(session: AsyncSession, token_id: str, seq: int, now: datetime) -> None:
    updated = await session.execute(
        update(BouncerCursorRow)
        .where(col(BouncerCursorRow.token_id) == token_id)
        .values(seq=seq, last_pull=now)
    )
    if not updated.rowcount:  # type: ignore[attr-defined]
        await session.execute(
            insert(BouncerCursorRow), [{"token_id": token_id, "seq": seq, "last_pull": now}]
        )
