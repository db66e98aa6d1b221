"""Verdict SQL. What the decide thread runs is sync (a `Session`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from controlplane.domain.vocabulary import VerdictStatus
from controlplane.store.models import VerdictRow


@dataclass(frozen=True)
class Stored:
    content_hash: str
    status: str
    received_at: datetime


_verdict: Table = VerdictRow.__table__  # type: ignore[attr-defined]
_STORED = select(
    _verdict.c.id, _verdict.c.content_hash, _verdict.c.status, _verdict.c.received_at
).where(_verdict.c.id.in_(bindparam("ids", expanding=True)))
_INSERT = insert(_verdict)


def stored_verdicts(session: Session, ids: Sequence[str]) -> dict[str, Stored]:
    """Content hash, status and arrival of those of `ids` already stored."""
    found: dict[str, Stored] = {}
    connection = session.connection()
    for i in range(0, len(ids), 500):
        rows = connection.execute(_STORED, {"ids": list(ids[i : i + 500])})
        found.update({r.id: Stored(r.content_hash, r.status, r.received_at) for r in rows})
    return found


def insert_verdicts(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.connection().execute(_INSERT, list(rows))


def set_status(session: Session, ids: Sequence[str], status: VerdictStatus) -> None:
    for i in range(0, len(ids), 500):
        session.execute(
            update(VerdictRow)
            .where(col(VerdictRow.id).in_(ids[i : i + 500]))
            .values(status=status.value)
        )


async def undecided(session: AsyncSession, limit: int) -> list[VerdictRow]:
    """Verdicts stored but not decided (a crash or an unexpected error), oldest first."""
    rows = await session.execute(
        select(VerdictRow)
        .where(col(VerdictRow.status) == VerdictStatus.RECEIVED.value)
        .order_by(col(VerdictRow.received_at), col(VerdictRow.id))
        .limit(limit)
    )
    return list(rows.scalars())


async def get_verdict(session: AsyncSession, verdict_id: str) -> VerdictRow | None:
    return await session.get(VerdictRow, verdict_id)


def undecided_among(session: Session, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(ids), 500):
        rows = session.execute(
            select(col(VerdictRow.id)).where(
                col(VerdictRow.id).in_(ids[i : i + 500]),
                col(VerdictRow.status) == VerdictStatus.RECEIVED.value,
            )
        )
        found.update(rows.scalars())
    return found
