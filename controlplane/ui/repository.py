"""The console's own queries: what no other area's repository or service answers yet
(one action's enforcement rows and events, rows by id, a key handle's key id)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import CompoundSelect, or_, select, union
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col

from controlplane.domain.vocabulary import SubjectKind
from controlplane.store.db import Database
from controlplane.store.models import (
    ActionEnforcementRow,
    ActionRow,
    ApiTokenRow,
    AuditEventRow,
    AuditSubjectRow,
    DecisionRow,
    ExemptionRow,
    VerdictRow,
)

Row = TypeVar("Row", bound=SQLModel)
CHUNK = 500


async def token(db: Database, token_id: str) -> ApiTokenRow | None:
    async with db.read() as session:
        return await session.get(ApiTokenRow, token_id)


async def by_ids(
    session: AsyncSession, model: type[Row], key: Any, ids: Sequence[str]
) -> dict[str, Row]:
    """Rows of `model` whose `key` column is one of `ids`, by that key."""
    found: dict[str, Row] = {}
    unique = sorted(set(ids))
    for i in range(0, len(unique), CHUNK):
        rows = await session.execute(select(model).where(key.in_(unique[i : i + CHUNK])))
        for row in rows.scalars():
            found[str(getattr(row, key.key))] = row
    return found


async def action(session: AsyncSession, action_id: str) -> ActionRow | None:
    return await session.get(ActionRow, action_id)


async def verdict(session: AsyncSession, verdict_id: str) -> VerdictRow | None:
    return await session.get(VerdictRow, verdict_id)


async def decision(session: AsyncSession, decision_id: str) -> DecisionRow | None:
    return await session.get(DecisionRow, decision_id)


async def enforcement(session: AsyncSession, action_id: str) -> list[ActionEnforcementRow]:
    query = (
        select(ActionEnforcementRow)
        .where(col(ActionEnforcementRow.action_id) == action_id)
        .order_by(col(ActionEnforcementRow.connector))
    )
    return list((await session.execute(query)).scalars())


async def story_events(session: AsyncSession, row: ActionRow, limit: int) -> list[AuditEventRow]:
    """The events of an action's story: its verdict, its decision and the action itself."""
    query = (
        select(AuditEventRow)
        .where(
            or_(
                col(AuditEventRow.action_id) == row.id,
                (col(AuditEventRow.decision_id) == row.decision_id)
                & col(AuditEventRow.action_id).is_(None),
                (col(AuditEventRow.verdict_id) == row.verdict_id)
                & col(AuditEventRow.decision_id).is_(None),
            )
        )
        .order_by(col(AuditEventRow.seq))
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def exemptions_of(session: AsyncSession, kind: str, value: str) -> list[ExemptionRow]:
    query = (
        select(ExemptionRow)
        .where(col(ExemptionRow.subject_kind) == kind, col(ExemptionRow.subject_value) == value)
        .order_by(col(ExemptionRow.created_at).desc())
    )
    return list((await session.execute(query)).scalars())


async def api_key_ids(session: AsyncSession) -> list[str]:
    """Every API key id Tollgate knows: the subject index, action targets and verdicts
    (the index may trail the chain by a few seconds)."""
    key = SubjectKind.API_KEY.value
    query: CompoundSelect[Any] = union(
        select(col(AuditSubjectRow.value)).where(col(AuditSubjectRow.kind) == key),
        select(col(ActionRow.target_value)).where(col(ActionRow.target_kind) == key),
        select(col(VerdictRow.api_key_id)).where(col(VerdictRow.api_key_id).is_not(None)),
    )
    return [str(v) for (v,) in (await session.execute(query)).all()]
