"""Policy revision SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from controlplane.store.models import PolicyActivationRow, PolicyRevisionRow, PolicySourceRow


async def get_revision(session: AsyncSession, revision: str) -> PolicyRevisionRow | None:
    return await session.get(PolicyRevisionRow, revision)


async def insert_revision(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(PolicyRevisionRow), [row])


async def insert_activation(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(PolicyActivationRow), [row])


async def activations(session: AsyncSession, limit: int = 100) -> list[PolicyActivationRow]:
    query = (
        select(PolicyActivationRow)
        .order_by(col(PolicyActivationRow.at).desc(), col(PolicyActivationRow.id).desc())
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def active_revision(session: AsyncSession) -> str | None:
    newest = await activations(session, 1)
    return newest[0].revision if newest else None


async def revisions(session: AsyncSession, limit: int = 100) -> list[PolicyRevisionRow]:
    query = (
        select(PolicyRevisionRow).order_by(col(PolicyRevisionRow.created_at).desc()).limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def synced_revision(session: AsyncSession, source: str) -> str | None:
    row = await session.get(PolicySourceRow, source)
    return row.revision if row else None


async def set_synced(session: AsyncSession, source: str, revision: str, at: datetime) -> None:
    await session.execute(delete(PolicySourceRow).where(col(PolicySourceRow.source) == source))
    await session.execute(
        insert(PolicySourceRow), [{"source": source, "revision": revision, "synced_at": at}]
    )
