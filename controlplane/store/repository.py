"""Database-wide SQL that belongs to no one table: a ping, PostgreSQL advisory locks
(the leader's, the decider's, a connector follower's), and a condition every table of
targets shares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import and_, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession


async def ping(session: AsyncSession) -> None:
    """Raises when the database does not answer."""
    await session.execute(text("SELECT 1"))


async def ping_connection(connection: AsyncConnection) -> None:
    await connection.execute(text("SELECT 1"))


async def advisory_lock(connection: AsyncConnection, key: int) -> None:
    """Wait for the session-level advisory lock `key` (PostgreSQL)."""
    await connection.execute(select(func.pg_advisory_lock(key)))
    await connection.commit()


async def try_advisory_lock(connection: AsyncConnection, key: int) -> bool:
    """Take the session-level advisory lock `key` if free (PostgreSQL)."""
    taken = (await connection.execute(select(func.pg_try_advisory_lock(key)))).scalar()
    await connection.commit()
    return bool(taken)


async def advisory_unlock(connection: AsyncConnection, key: int) -> None:
    await connection.execute(select(func.pg_advisory_unlock(key)))
    await connection.commit()


def any_target(kind_column: Any, value_column: Any, kinds: Mapping[str, Sequence[str]]) -> Any:
    """`(kind = k AND value IN (...)) OR ...`: one indexed range per kind."""
    return or_(*(and_(kind_column == k, value_column.in_(list(v))) for k, v in kinds.items()))
