"""Action SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from controlplane.domain.vocabulary import ACTIVE_STATES
from controlplane.store.models import ActionRow, DecisionRow, VerdictRow

ACTIVE = [s.value for s in ACTIVE_STATES]


def insert_actions(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.connection().execute(insert(ActionRow.__table__), list(rows))  # type: ignore[attr-defined]


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


def _active() -> Any:
    return col(ActionRow.state).in_(ACTIVE) & ~col(ActionRow.shadow)


async def active_on_target(
    session: AsyncSession, provider: str, kind: str, value: str, *, for_update: bool = False
) -> list[ActionRow]:
    """Active, non-shadow actions of one provider aimed at exactly this target."""
    query = select(ActionRow).where(
        col(ActionRow.provider) == provider,
        col(ActionRow.target_kind) == kind,
        col(ActionRow.target_value) == value,
        _active(),
    )
    if for_update:
        query = query.with_for_update()
    return list((await session.execute(query)).scalars())


async def active_from_subject(
    session: AsyncSession, provider: str, kind: str, value: str, *, for_update: bool = False
) -> list[ActionRow]:
    """Active, non-shadow actions planned from verdicts that name this account, key or
    org (whatever they target: its keys, its IPs); verdict -> decision -> action, each
    step by index."""
    column = {
        "account": VerdictRow.account_id,
        "api_key": VerdictRow.api_key_id,
        "org": VerdictRow.org_id,
    }.get(kind)
    if column is None:
        return []
    query = (
        select(ActionRow)
        .join(DecisionRow, col(DecisionRow.id) == col(ActionRow.decision_id))
        .join(VerdictRow, col(VerdictRow.id) == col(DecisionRow.verdict_id))
        .where(col(VerdictRow.provider) == provider, col(column) == value, _active())
    )
    if for_update:
        query = query.with_for_update(of=ActionRow)
    return list((await session.execute(query)).scalars())


async def active_network_blocks(
    session: AsyncSession, provider: str, *, for_update: bool = False
) -> list[ActionRow]:
    """Active IP and CIDR actions of a provider (an exemption of a range is matched
    against them: exemptions are rare, deliberate changes, not the hot path)."""
    query = select(ActionRow).where(
        col(ActionRow.provider) == provider,
        col(ActionRow.target_kind).in_(["ip", "cidr"]),
        _active(),
    )
    if for_update:
        query = query.with_for_update()
    return list((await session.execute(query)).scalars())


async def actions_by_reference(
    session: AsyncSession, reference: str, provider: str | None = None
) -> list[ActionRow]:
    """Actions whose gateway entry a refusal quotes as `reference`, newest first."""
    query = select(ActionRow).where(col(ActionRow.reference) == reference)
    if provider is not None:
        query = query.where(col(ActionRow.provider) == provider)
    query = query.order_by(col(ActionRow.id).desc()).limit(500)
    return list((await session.execute(query)).scalars())
