"""Token SQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from controlplane.store.models import ApiTokenRow


async def insert_token(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(ApiTokenRow), [row])


async def by_hash(session: AsyncSession, token_hash: str) -> ApiTokenRow | None:
    query = select(ApiTokenRow).where(col(ApiTokenRow.token_hash) == token_hash)
    return (await session.execute(query)).scalar_one_or_none()


async def list_tokens(session: AsyncSession) -> list[ApiTokenRow]:
    query = select(ApiTokenRow).order_by(col(ApiTokenRow.created_at))
    return list((await session.execute(query)).scalars())


async def revoke(session: AsyncSession, token_id: str, at: Any) -> int:
    result = await session.execute(
        update(ApiTokenRow)
        .where(col(ApiTokenRow.id) == token_id, col(ApiTokenRow.revoked_at).is_(None))
        .values(revoked_at=at)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def get_token(session: AsyncSession, token_id: str) -> ApiTokenRow | None:
    return await session.get(ApiTokenRow, token_id)
