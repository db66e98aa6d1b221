"""Review SQL (the `review` table is queried here only)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from controlplane.store.models import ReviewRow

OPEN = "open"


def insert_reviews(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(ReviewRow.__table__), list(rows))  # type: ignore[attr-defined]


async def get_review(
    session: AsyncSession, review_id: str, *, for_update: bool = False
) -> ReviewRow | None:
    return await session.get(ReviewRow, review_id, with_for_update=for_update)


async def list_reviews(
    session: AsyncSession, state: str | None, after: str | None, limit: int
) -> list[ReviewRow]:
    """Oldest first (the queue's order); `after` is the last id of the previous page."""
    query = select(ReviewRow).order_by(col(ReviewRow.id)).limit(limit)
    if state is not None:
        query = query.where(col(ReviewRow.state) == state)
    if after:
        query = query.where(col(ReviewRow.id) > after)
    return list((await session.execute(query)).scalars())


async def open_summary(session: AsyncSession) -> tuple[int, datetime | None]:
    """(open reviews, when the oldest open one was opened), from the state index."""
    row = (
        await session.execute(
            select(func.count(), func.min(col(ReviewRow.created_at))).where(
                col(ReviewRow.state) == OPEN
            )
        )
    ).one()
    oldest = row[1]
    if isinstance(oldest, str):  # SQLite's aggregate skips the column type
        oldest = datetime.fromisoformat(oldest)
    return int(row[0]), oldest
