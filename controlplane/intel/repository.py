"""Indicator SQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from controlplane.store.models import IndicatorRow


async def insert_indicators(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(IndicatorRow), list(rows))


async def list_indicators(session: AsyncSession, limit: int) -> list[IndicatorRow]:
    query = select(IndicatorRow).order_by(col(IndicatorRow.id).desc()).limit(limit)
    return list((await session.execute(query)).scalars())
