"""Exemption SQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from controlplane.store.models import ExemptionRow


async def insert_exemption(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(ExemptionRow), [row])


async def list_exemptions(
    session: AsyncSession, provider: str | None, limit: int
) -> list[ExemptionRow]:
    query = select(ExemptionRow).order_by(col(ExemptionRow.id).desc()).limit(limit)
    if provider:
        query = query.where(col(ExemptionRow.provider) == provider)
    return list((await session.execute(query)).scalars())
