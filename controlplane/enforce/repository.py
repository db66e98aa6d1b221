"""Enforcement SQL: the change log and connector cursors, desired actions by key and by
page, per-connector state, connector status, expiry."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from controlplane.domain.vocabulary import ACTIVE_STATES, ActionState, SubjectKind
from controlplane.store.models import (
    ActionEnforcementRow,
    ActionRow,
    ChangeHeadRow,
    ChangeRow,
    ConnectorCursorRow,
    ConnectorStatusRow,
)

ACTIVE = [s.value for s in ACTIVE_STATES]
HEAD_ID = 1
_CHUNK = 500

# -- the change log ----------------------------------------------------------------------


def append_changes(session: Session, changes: Sequence[dict[str, Any]]) -> None:
    """Append changes after the log's head, in the caller's transaction. The head row is
    locked until commit (FOR UPDATE on PostgreSQL; SQLite writers hold the database
    lock), so changes become visible in `seq` order and a reader never skips one.
    Callers append after writing their audit events: one lock order, no deadlock.
    (Sync: the decide thread calls it as is, async callers through `run_sync`.)"""
    if not changes:
        return
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    seq = connection.execute(_HEAD.with_for_update() if postgres else _HEAD).scalar_one()
    rows = [{**change, "seq": seq + i} for i, change in enumerate(changes, start=1)]
    connection.execute(insert(ChangeRow.__table__), rows)  # type: ignore[attr-defined]
    connection.execute(
        update(ChangeHeadRow).where(col(ChangeHeadRow.id) == HEAD_ID).values(seq=seq + len(rows))
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
_CHANGES_OF_KIND = (
    select(_change)
    .where(_change.c.seq > bindparam("seq"), _change.c.target_kind == bindparam("kind"))
    .order_by(_change.c.seq)
    .limit(bindparam("limit"))
)


def changes_after_blocking(session: Session, seq: int, limit: int, target_kind: str) -> list[Any]:
    """Changes of one target kind after `seq` (rows with ChangeRow's columns)."""
    return list(
        session.connection().execute(
            _CHANGES_OF_KIND, {"seq": seq, "kind": target_kind, "limit": limit}
        )
    )


async def cursors(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(col(ConnectorCursorRow.name), col(ConnectorCursorRow.seq)))
    return {name: seq for name, seq in rows}


async def save_cursor(session: AsyncSession, name: str, seq: int, now: datetime) -> None:
    updated = await session.execute(
        update(ConnectorCursorRow)
        .where(col(ConnectorCursorRow.name) == name)
        .values(seq=seq, updated_at=now)
    )
    if not updated.rowcount:  # type: ignore[attr-defined]
        await session.execute(
            insert(ConnectorCursorRow), [{"name": name, "seq": seq, "updated_at": now}]
        )


# -- the desired state -------------------------------------------------------------------

_DESIRED_COLUMNS = (
    col(ActionRow.id),
    col(ActionRow.provider),
    col(ActionRow.type),
    col(ActionRow.target_kind),
    col(ActionRow.target_value),
    col(ActionRow.params),
    col(ActionRow.created_at),
)
DECISION_COLUMNS = (*_DESIRED_COLUMNS, col(ActionRow.expires_at), col(ActionRow.rule))
"""The desired columns plus what a CrowdSec decision shows (its end, its rule)."""


def _desired(
    providers: Sequence[str] | None,
    types: Sequence[str],
    now: datetime,
    kinds: Sequence[str] | None = None,
    columns: Sequence[Any] = _DESIRED_COLUMNS,
) -> Any:
    """Active, non-shadow, unexpired actions of these types (and target kinds, when
    given) of these providers (all when None): what a connector's scope admits."""
    query = select(*columns).where(
        col(ActionRow.state).in_(ACTIVE),
        ~col(ActionRow.shadow),
        col(ActionRow.type).in_(list(types)),
        or_(col(ActionRow.expires_at).is_(None), col(ActionRow.expires_at) > now),
    )
    if providers is not None:
        query = query.where(col(ActionRow.provider).in_(list(providers)))
    if kinds is not None:
        query = query.where(col(ActionRow.target_kind).in_(list(kinds)))
    return query


async def desired_for_targets(
    session: AsyncSession,
    providers: Sequence[str] | None,
    types: Sequence[str],
    targets: Sequence[tuple[str, str]],
    now: datetime,
    kinds: Sequence[str] | None = None,
    columns: Sequence[Any] = _DESIRED_COLUMNS,
) -> list[Any]:
    """Active, non-shadow, unexpired actions of these types on these (kind, value)
    targets: an indexed lookup, whatever else is active."""
    by_kind: dict[str, list[str]] = {}
    for kind, value in sorted(set(targets)):
        by_kind.setdefault(kind, []).append(value)
    found: list[Any] = []
    for kind, values in by_kind.items():
        for i in range(0, len(values), _CHUNK):
            query = _desired(providers, types, now, kinds, columns).where(
                col(ActionRow.target_kind) == kind,
                col(ActionRow.target_value).in_(values[i : i + _CHUNK]),
            )
            found.extend((await session.execute(query)).all())
    return found


async def desired_page(
    session: AsyncSession,
    providers: Sequence[str] | None,
    types: Sequence[str],
    after: tuple[str, str] | None,
    limit: int,
    now: datetime,
    kinds: Sequence[str] | None = None,
    columns: Sequence[Any] = _DESIRED_COLUMNS,
) -> tuple[list[Any], tuple[str, str] | None]:
    """One page of the desired state in (target kind, value) order, every action of a
    target in the same page; and where the next page starts (None: this was the last).
    One target kind at a time, by keyset on `ix_action_target` (equality on the kind,
    a range on the value), so a page costs its own rows whatever the table holds."""
    order = [k.value for k in SubjectKind if kinds is None or k.value in kinds]
    if not order:
        return [], None
    kind, value = after if after is not None else (order[0], "")
    for current in order[order.index(kind) :]:
        start = value if current == kind else ""
        query = (
            _desired(providers, types, now, kinds, columns)
            .where(col(ActionRow.target_kind) == current, col(ActionRow.target_value) > start)
            .order_by(col(ActionRow.target_value))
            .limit(limit)
        )
        rows = list((await session.execute(query)).all())
        if not rows:
            continue
        if len(rows) < limit:
            following = order.index(current) + 1
            return rows, (order[following], "") if following < len(order) else None
        last = (current, rows[-1].target_value)
        # The page may end inside one target's actions: take that target's others too.
        rest = await desired_for_targets(session, providers, types, [last], now, kinds, columns)
        seen = {r.id for r in rows}
        rows.extend(r for r in rest if r.id not in seen)
        return rows, last
    return [], None


async def actions_by_id(session: AsyncSession, ids: Sequence[str]) -> list[ActionRow]:
    found: list[ActionRow] = []
    for i in range(0, len(ids), 500):
        rows = await session.execute(
            select(ActionRow).where(col(ActionRow.id).in_(ids[i : i + 500]))
        )
        found.extend(rows.scalars())
    return found


async def upsert_enforcement(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Replace the (action, connector) rows given (delete + insert: portable)."""
    if not rows:
        return
    connector = rows[0]["connector"]
    ids = [r["action_id"] for r in rows]
    for i in range(0, len(ids), 500):
        await session.execute(
            delete(ActionEnforcementRow).where(
                col(ActionEnforcementRow.connector) == connector,
                col(ActionEnforcementRow.action_id).in_(ids[i : i + 500]),
            )
        )
    await session.execute(insert(ActionEnforcementRow), list(rows))


async def enforcement_at(
    session: AsyncSession, connector: str, action_ids: Sequence[str]
) -> dict[str, tuple[str, bool, int, str | None]]:
    """action id -> (state, retryable, attempts, error) at this connector, as plain values."""
    found: dict[str, tuple[str, bool, int, str | None]] = {}
    for i in range(0, len(action_ids), _CHUNK):
        rows = await session.execute(
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


async def failing(session: AsyncSession, connector: str) -> tuple[int, int]:
    """(retryable, permanent) failures of still-active actions at this connector."""
    rows = await session.execute(
        select(col(ActionEnforcementRow.retryable), func.count())
        .join(ActionRow, col(ActionRow.id) == col(ActionEnforcementRow.action_id))
        .where(
            col(ActionEnforcementRow.connector) == connector,
            col(ActionEnforcementRow.state) == "failed",
            col(ActionRow.state).in_(ACTIVE),
        )
        .group_by(col(ActionEnforcementRow.retryable))
    )
    counts = {bool(retryable): int(n) for retryable, n in rows}
    return counts.get(True, 0), counts.get(False, 0)


async def action_states(
    session: AsyncSession, action_ids: Sequence[str]
) -> list[tuple[str, str, str, str, str]]:
    """(id, state, provider, type, target kind) of these actions."""
    found: list[tuple[str, str, str, str, str]] = []
    for i in range(0, len(action_ids), _CHUNK):
        rows = await session.execute(
            select(
                col(ActionRow.id),
                col(ActionRow.state),
                col(ActionRow.provider),
                col(ActionRow.type),
                col(ActionRow.target_kind),
            ).where(col(ActionRow.id).in_(action_ids[i : i + _CHUNK]))
        )
        found.extend((a, s, p, t, k) for a, s, p, t, k in rows)
    return found


async def enforcement_states(
    session: AsyncSession, action_ids: Sequence[str]
) -> dict[str, dict[str, str]]:
    """action id -> {connector: state}."""
    found: dict[str, dict[str, str]] = {}
    for i in range(0, len(action_ids), 500):
        rows = await session.execute(
            select(
                col(ActionEnforcementRow.action_id),
                col(ActionEnforcementRow.connector),
                col(ActionEnforcementRow.state),
            ).where(col(ActionEnforcementRow.action_id).in_(action_ids[i : i + 500]))
        )
        for action_id, connector, state in rows:
            found.setdefault(action_id, {})[connector] = state
    return found


async def set_action_states(session: AsyncSession, changes: dict[str, str], now: datetime) -> None:
    by_state: dict[str, list[str]] = {}
    for action_id, state in changes.items():
        by_state.setdefault(state, []).append(action_id)
    for state, ids in by_state.items():
        for i in range(0, len(ids), 500):
            await session.execute(
                update(ActionRow)
                .where(col(ActionRow.id).in_(ids[i : i + 500]))
                .values(state=state, updated_at=now)
            )


async def due_to_expire(session: AsyncSession, now: datetime, limit: int) -> list[ActionRow]:
    query = (
        select(ActionRow)
        .where(
            col(ActionRow.state).in_(ACTIVE),
            col(ActionRow.expires_at).is_not(None),
            col(ActionRow.expires_at) <= now,
        )
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def lift(
    session: AsyncSession, action_id: str, now: datetime
) -> tuple[ActionRow | None, bool]:
    """Mark an active action lifted: (the action or None, whether it was lifted now)."""
    row = await session.get(ActionRow, action_id, with_for_update=True)
    if row is None or row.state not in ACTIVE:
        return row, False
    row.state = ActionState.LIFTED.value
    row.updated_at = now
    return row, True


async def lift_children(session: AsyncSession, parent_id: str, now: datetime) -> list[ActionRow]:
    """Mark lifted the active actions planned because of `parent_id` (the keys revoked
    with a suspension); returns them."""
    rows = list(
        (
            await session.execute(
                select(ActionRow).where(
                    col(ActionRow.parent_id) == parent_id, col(ActionRow.state).in_(ACTIVE)
                )
            )
        ).scalars()
    )
    for row in rows:
        row.state = ActionState.LIFTED.value
        row.updated_at = now
    return rows


async def save_status(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(
        delete(ConnectorStatusRow).where(col(ConnectorStatusRow.name) == row["name"])
    )
    await session.execute(insert(ConnectorStatusRow), [row])


async def statuses(session: AsyncSession) -> dict[str, ConnectorStatusRow]:
    rows = await session.execute(select(ConnectorStatusRow))
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


async def intel_actions(
    session: AsyncSession, target_kinds: Sequence[str], now: datetime
) -> list[ActionRow]:
    """Active, unexpired actions of these target kinds that a shared-intel rule
    (`intel.*`) asked for: what a retracted indicator may have been the basis of."""
    if not target_kinds:
        return []
    query = select(ActionRow).where(
        col(ActionRow.state).in_(ACTIVE),
        col(ActionRow.target_kind).in_(list(target_kinds)),
        col(ActionRow.rule).startswith("intel."),
        or_(col(ActionRow.expires_at).is_(None), col(ActionRow.expires_at) > now),
    )
    return list((await session.execute(query)).scalars())
