"""Action SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from controlplane.store.models import ActionRow


async def insert_actions(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(ActionRow.__table__), list(rows))  # type: ignore[attr-defined]


async def actions_of_decisions(
    session: AsyncSession, decision_ids: Sequence[str]
) -> dict[str, list[ActionRow]]:
    found: dict[str, list[ActionRow]] = {d: [] for d in decision_ids}
    for i in range(0, len(decision_ids), 500):
        chunk = decision_ids[i : i + 500]
        rows = await session.execute(
            select(ActionRow)
            .where(col(ActionRow.decision_id).in_(chunk))
            .order_by(col(ActionRow.id))
        )
        for (row,) in rows:
            found[row.decision_id].append(row)
    return found


@dataclass(frozen=True)
class ActionFilter:
    state: str | None = None
    type: str | None = None
    target_kind: str | None = None
    target_value: str | None = None
    provider: str | None = None
    shadow: bool | None = None


async def list_actions(
    session: AsyncSession, where: ActionFilter, after: str | None, limit: int
) -> list[ActionRow]:
    """Actions newest first; `after` is the id of the last one of the previous page."""
    query = select(ActionRow)
    for column, value in (
        (col(ActionRow.state), where.state),
        (col(ActionRow.type), where.type),
        (col(ActionRow.target_kind), where.target_kind),
        (col(ActionRow.target_value), where.target_value),
        (col(ActionRow.provider), where.provider),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.shadow is not None:
        query = query.where(col(ActionRow.shadow) == where.shadow)
    if after:
        query = query.where(col(ActionRow.id) < after)
    query = query.order_by(col(ActionRow.id).desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def get_action(session: AsyncSession, action_id: str) -> ActionRow | None:
    return await session.get(ActionRow, action_id)
