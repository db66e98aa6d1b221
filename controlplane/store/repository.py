"""Database-wide SQL that belongs to no one table: a ping, PostgreSQL advisory
locks (the leader's, the subjects a batch decides, a connector follower's), and the IN
lists of keyed lookups."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession


async def ping(session: AsyncSession) -> None:
    """Raises when the database does not answer."""
    await session.execute(text("SELECT 1"))


async def ping_connection(connection: AsyncConnection) -> None:
    """Raises when this connection is gone. Committed, so a connection kept for a lock
    never sits idle in a transaction (`idle_in_transaction_session_timeout` would end it)."""
    await connection.execute(text("SELECT 1"))
    await connection.commit()


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


def lock_keys(connection: Connection, keys: Sequence[int]) -> None:
    """Wait for the session-level advisory locks `keys` (PostgreSQL), taken in ascending
    order so two holders of overlapping sets never deadlock."""
    if keys:
        connection.execute(
            text(
                "SELECT pg_advisory_lock(k) FROM "
                "(SELECT DISTINCT unnest(CAST(:keys AS bigint[])) AS k ORDER BY k) AS ordered"
            ),
            {"keys": sorted(set(keys))},
        )
        connection.commit()


def try_lock_keys(connection: Connection, keys: Sequence[int]) -> bool:
    """Take the session-level advisory locks `keys` (PostgreSQL) if none is held by
    another session, in one round trip without waiting: True when all were taken;
    False when one was not, and then this connection holds none of them."""
    if not keys:
        return True
    taken = connection.execute(
        text(
            "SELECT bool_and(pg_try_advisory_lock(k)) FROM "
            "(SELECT DISTINCT unnest(CAST(:keys AS bigint[])) AS k ORDER BY k) AS ordered"
        ),
        {"keys": sorted(set(keys))},
    ).scalar_one()
    connection.commit()
    if not taken:
        unlock_all(connection)
    return bool(taken)


def unlock_all(connection: Connection) -> None:
    """Release every session-level advisory lock this connection holds."""
    connection.execute(text("SELECT pg_advisory_unlock_all()"))
    connection.commit()


def keyed(keys: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
    """The IN lists of a set of (provider, kind, value) keys, for a statement that asks
    them as a cross product by a (provider, kind, value) index; the caller keeps only the
    rows of the combinations it asked for."""
    return {
        "providers": sorted({p for p, _, _ in keys}),
        "kinds": sorted({k for _, k, _ in keys}),
        "values": sorted({v for _, _, v in keys}),
    }
