"""The span store's SQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from controlplane.store.models import SpanRow


def insert_spans(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """On the exporter's own (sync) connection, off the request path."""
    connection.execute(insert(SpanRow), list(rows))


async def prune(session: AsyncSession, before_ns: int) -> int:
    """Delete spans that started before `before_ns`; returns how many."""
    result = await session.execute(delete(SpanRow).where(col(SpanRow.start_ns) < before_ns))
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
