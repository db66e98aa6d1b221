"""Database-wide SQL that belongs to no one table: a ping, PostgreSQL advisory
locks (the leader's, the subjects a batch decides, a connector follower's), and the IN
lists of keyed lookups."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from controlplane.store.prepared import int_array


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
            {"keys": int_array(sorted(set(keys)))},
        )
        connection.commit()


def try_lock_each(connection: Connection, keys: Sequence[int]) -> set[int]:
    """Take, without waiting, those of the session-level advisory locks `keys`
    (PostgreSQL) that no other session holds, in one round trip: the keys taken (the
    others are held elsewhere; the caller releases what it does not use)."""
    if not keys:
        return set()
    taken = connection.execute(
        text(
            "SELECT k FROM (SELECT DISTINCT unnest(CAST(:keys AS bigint[])) AS k ORDER BY k) "
            "AS ordered WHERE pg_try_advisory_lock(k)"
        ),
        {"keys": int_array(sorted(set(keys)))},
    ).scalars()
    found = {int(k) for k in taken}
    connection.commit()
    return found


def unlock_keys(connection: Connection, keys: Sequence[int]) -> None:
    """Release these of this connection's session-level advisory locks."""
    if keys:
        connection.execute(
            text("SELECT pg_advisory_unlock(k) FROM unnest(CAST(:keys AS bigint[])) AS k"),
            {"keys": int_array(sorted(set(keys)))},
        )
        connection.commit()


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
