"""The span store's SQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from controlplane.store.bulk import insert_many
from controlplane.store.models import SpanRow


def insert_spans(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """On the exporter's own (sync) connection, off the request path."""
    insert_many(connection, SpanRow.__table__, rows)  # type: ignore[attr-defined]


def prune_blocking(session: Session, before_ns: int, limit: int) -> int:
    """Delete at most `limit` of the spans that started before `before_ns` (oldest
    first, by the `start_ns` index); returns how many."""
    oldest = (
        select(col(SpanRow.trace_id), col(SpanRow.span_id))
        .where(col(SpanRow.start_ns) < before_ns)
        .order_by(col(SpanRow.start_ns))
        .limit(limit)
    )
    result = session.execute(
        delete(SpanRow).where(tuple_(col(SpanRow.trace_id), col(SpanRow.span_id)).in_(oldest))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def trace_spans(session: AsyncSession, trace_id: str, limit: int) -> list[SpanRow]:
    """The stored spans of one trace, by start time."""
    query = (
        select(SpanRow)
        .where(col(SpanRow.trace_id) == trace_id)
        .order_by(col(SpanRow.start_ns), col(SpanRow.span_id))
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())
