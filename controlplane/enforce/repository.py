"""Enforcement SQL: the change log and connector cursors, each action's state at each
connector, connector status. (The actions themselves are the plan step's:
`enforce/actions.py`.)"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from controlplane.store.bulk import insert_many
from controlplane.store.models import (
    ActionEnforcementRow,
    ChangeHeadRow,
    ChangeRow,
    ConnectorCursorRow,
    ConnectorStatusRow,
)
from controlplane.store.prepared import Prepared

HEAD_ID = 1
_CHUNK = 500

# -- the change log ----------------------------------------------------------------------


def append_changes(session: Session, changes: Sequence[dict[str, Any]]) -> None:
    """Append changes after the log's head, in the caller's transaction. The head is
    moved first, in one statement that also locks its row until commit (an UPDATE on
    PostgreSQL; SQLite writers hold the database lock), so changes become visible in
    `seq` order and a reader never skips one. Callers append after writing their audit
    events: one lock order, no deadlock.
    (Sync: the decide thread calls it as is, async callers through `run_sync`.)"""
    if not changes:
        return
    connection = session.connection()
    last = connection.execute(_ADVANCE, {"count": len(changes)}).scalar_one()
    first = last - len(changes) + 1
    rows = [{**change, "seq": first + i} for i, change in enumerate(changes)]
    insert_many(connection, ChangeRow.__table__, rows)  # type: ignore[attr-defined]


_change_head: Table = ChangeHeadRow.__table__  # type: ignore[attr-defined]
_ADVANCE = (
    update(_change_head)
    .where(_change_head.c.id == HEAD_ID)
    .values(seq=_change_head.c.seq + bindparam("count"))
    .returning(_change_head.c.seq)
)
_HEAD = select(col(ChangeHeadRow.seq)).where(col(ChangeHeadRow.id) == HEAD_ID)


async def change_head(session: AsyncSession) -> int:
    return int((await session.execute(_HEAD)).scalar_one())


def change_head_blocking(session: Session) -> int:
    return int(session.execute(_HEAD).scalar_one())


def _changes_after(
    seq: int, limit: int, target_kind: str | None, upto: int | None
) -> Select[ChangeRow]:
    query = select(ChangeRow).where(col(ChangeRow.seq) > seq)
    if upto is not None:
        query = query.where(col(ChangeRow.seq) <= upto)
    if target_kind is not None:
        query = query.where(col(ChangeRow.target_kind) == target_kind)
    return query.order_by(col(ChangeRow.seq)).limit(limit)


async def changes_after(
    session: AsyncSession,
    seq: int,
    limit: int,
    target_kind: str | None = None,
    upto: int | None = None,
) -> list[ChangeRow]:
    rows = list((await session.execute(_changes_after(seq, limit, target_kind, upto))).scalars())
    session.expunge_all()
    return rows


_change: Table = ChangeRow.__table__  # type: ignore[attr-defined]
_CHANGES_OF_KIND = Prepared(
    select(_change)
    .where(_change.c.seq > bindparam("seq"), _change.c.target_kind == bindparam("kind"))
    .order_by(_change.c.seq)
    .limit(bindparam("limit"))
)


def changes_after_blocking(session: Session, seq: int, limit: int, target_kind: str) -> list[Any]:
    """Changes of one target kind after `seq` (rows with ChangeRow's columns)."""
    params = {"seq": seq, "kind": target_kind, "limit": limit}
    return _CHANGES_OF_KIND.rows(session.connection(), params)


async def cursors(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(col(ConnectorCursorRow.name), col(ConnectorCursorRow.seq)))
    return {name: seq for name, seq in rows}


async def save_cursor(session: AsyncSession, name: str, seq: int, now: datetime) -> None:
    await session.run_sync(save_cursor_blocking, name, seq, now)


def save_cursor_blocking(session: Session, name: str, seq: int, now: datetime) -> None:
    updated = session.execute(
        update(ConnectorCursorRow)
        .where(col(ConnectorCursorRow.name) == name)
        .values(seq=seq, updated_at=now)
    )
    if not updated.rowcount:  # type: ignore[attr-defined]
        session.execute(insert(ConnectorCursorRow), [{"name": name, "seq": seq, "updated_at": now}])


# -- per-connector state (written by the followers on sync sessions) ----------------------


def upsert_enforcement(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Replace the (action, connector) rows given (delete + insert: portable)."""
    if not rows:
        return
    connector = rows[0]["connector"]
    ids = [r["action_id"] for r in rows]
    for i in range(0, len(ids), _CHUNK):
        session.execute(
            delete(ActionEnforcementRow).where(
                col(ActionEnforcementRow.connector) == connector,
                col(ActionEnforcementRow.action_id).in_(ids[i : i + _CHUNK]),
            )
        )
    session.execute(insert(ActionEnforcementRow), list(rows))


async def enforcement_at(
    session: AsyncSession, connector: str, action_ids: Sequence[str]
) -> dict[str, tuple[str, bool, int, str | None]]:
    return await session.run_sync(enforcement_at_blocking, connector, action_ids)


def enforcement_at_blocking(
    session: Session, connector: str, action_ids: Sequence[str]
) -> dict[str, tuple[str, bool, int, str | None]]:
    """action id -> (state, retryable, attempts, error) at this connector, as plain values."""
    found: dict[str, tuple[str, bool, int, str | None]] = {}
    for i in range(0, len(action_ids), _CHUNK):
        rows = session.execute(
            select(
                col(ActionEnforcementRow.action_id),
                col(ActionEnforcementRow.state),
                col(ActionEnforcementRow.retryable),
                col(ActionEnforcementRow.attempts),
                col(ActionEnforcementRow.error),
            ).where(
                col(ActionEnforcementRow.connector) == connector,
                col(ActionEnforcementRow.action_id).in_(action_ids[i : i + _CHUNK]),
            )
        )
        found.update({a: (s, r, n, e) for a, s, r, n, e in rows})
    return found


def failed_at(session: Session, connector: str) -> list[tuple[str, bool, str | None]]:
    """(action id, retryable, error) of the entries that failed at this connector."""
    rows = session.execute(
        select(
            col(ActionEnforcementRow.action_id),
            col(ActionEnforcementRow.retryable),
            col(ActionEnforcementRow.error),
        ).where(
            col(ActionEnforcementRow.connector) == connector,
            col(ActionEnforcementRow.state) == "failed",
        )
    )
    return [(action_id, bool(retryable), error) for action_id, retryable, error in rows]


async def enforcement_of(session: AsyncSession, action_id: str) -> list[ActionEnforcementRow]:
    """One action's state at each connector, by connector name."""
    query = (
        select(ActionEnforcementRow)
        .where(col(ActionEnforcementRow.action_id) == action_id)
        .order_by(col(ActionEnforcementRow.connector))
    )
    return list((await session.execute(query)).scalars())


def enforcement_states(session: Session, action_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """action id -> {connector: state}."""
    found: dict[str, dict[str, str]] = {}
    for i in range(0, len(action_ids), _CHUNK):
        rows = session.execute(
            select(
                col(ActionEnforcementRow.action_id),
                col(ActionEnforcementRow.connector),
                col(ActionEnforcementRow.state),
            ).where(col(ActionEnforcementRow.action_id).in_(action_ids[i : i + _CHUNK]))
        )
        for action_id, connector, state in rows:
            found.setdefault(action_id, {})[connector] = state
    return found


def save_status(session: Session, row: dict[str, Any]) -> None:
    session.execute(delete(ConnectorStatusRow).where(col(ConnectorStatusRow.name) == row["name"]))
    session.execute(insert(ConnectorStatusRow), [row])


async def statuses(session: AsyncSession) -> dict[str, ConnectorStatusRow]:
    return await session.run_sync(statuses_blocking)


def statuses_blocking(session: Session) -> dict[str, ConnectorStatusRow]:
    rows = session.execute(select(ConnectorStatusRow))
    return {r.name: r for r in rows.scalars()}


async def removed_at(session: AsyncSession, action_ids: Sequence[str]) -> dict[str, datetime]:
    """When the last connector took each of these (lifted) actions off its gateway."""
    found: dict[str, datetime] = {}
    for i in range(0, len(action_ids), _CHUNK):
        rows = await session.execute(
            select(col(ActionEnforcementRow.action_id), func.max(ActionEnforcementRow.updated_at))
            .where(
                col(ActionEnforcementRow.action_id).in_(action_ids[i : i + _CHUNK]),
                col(ActionEnforcementRow.state) == "removed",
            )
            .group_by(col(ActionEnforcementRow.action_id))
        )
        found.update({a: at for a, at in rows if at is not None})
    return found
