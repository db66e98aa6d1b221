"""Enforcement SQL: desired actions, per-connector state, connector status, expiry."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from controlplane.domain.vocabulary import ACTIVE_STATES, ActionState
from controlplane.store.models import ActionEnforcementRow, ActionRow, ConnectorStatusRow

ACTIVE = [s.value for s in ACTIVE_STATES]


async def desired_actions(
    session: AsyncSession, providers: Sequence[str] | None, types: Sequence[str], now: datetime
) -> list[Any]:
    """Active, non-shadow, unexpired actions of these types (all providers when None)."""
    query = select(
        col(ActionRow.id),
        col(ActionRow.provider),
        col(ActionRow.type),
        col(ActionRow.target_kind),
        col(ActionRow.target_value),
        col(ActionRow.params),
        col(ActionRow.created_at),
    ).where(
        col(ActionRow.state).in_(ACTIVE),
        ~col(ActionRow.shadow),
        col(ActionRow.type).in_(list(types)),
        or_(col(ActionRow.expires_at).is_(None), col(ActionRow.expires_at) > now),
    )
    if providers is not None:
        query = query.where(col(ActionRow.provider).in_(list(providers)))
    return list((await session.execute(query)).all())


async def actions_by_id(session: AsyncSession, ids: Sequence[str]) -> list[ActionRow]:
    found: list[ActionRow] = []
    for i in range(0, len(ids), 500):
        rows = await session.execute(
            select(ActionRow).where(col(ActionRow.id).in_(ids[i : i + 500]))
        )
        found.extend(rows.scalars())
    return found


async def enforcement_of(
    session: AsyncSession, connector: str, action_ids: Sequence[str]
) -> dict[str, ActionEnforcementRow]:
    found: dict[str, ActionEnforcementRow] = {}
    for i in range(0, len(action_ids), 500):
        rows = await session.execute(
            select(ActionEnforcementRow).where(
                col(ActionEnforcementRow.connector) == connector,
                col(ActionEnforcementRow.action_id).in_(action_ids[i : i + 500]),
            )
        )
        found.update({r.action_id: r for r in rows.scalars()})
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


async def save_status(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(
        delete(ConnectorStatusRow).where(col(ConnectorStatusRow.name) == row["name"])
    )
    await session.execute(insert(ConnectorStatusRow), [row])


async def statuses(session: AsyncSession) -> dict[str, ConnectorStatusRow]:
    rows = await session.execute(select(ConnectorStatusRow))
    return {r.name: r for r in rows.scalars()}
