"""Remedy SQL: exemptions, appeals and the actions they cover, lifts, reviews
(`reviews_repository.py`): the one module that queries these tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from controlplane.store.models import (
    AppealActionRow,
    AppealRow,
    ExemptionRow,
    LiftRow,
)
from controlplane.store.prepared import Prepared
from controlplane.store.repository import keyed

_CHUNK = 500

# -- exemptions ----------------------------------------------------------------------------


def _live(now: datetime) -> Any:
    return col(ExemptionRow.ended_at).is_(None) & or_(
        col(ExemptionRow.expires_at).is_(None), col(ExemptionRow.expires_at) > now
    )


async def insert_exemption(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(ExemptionRow), [row])


async def list_exemptions(
    session: AsyncSession, provider: str | None, live_at: datetime | None, limit: int
) -> list[ExemptionRow]:
    """Newest first; with `live_at`, only those holding then."""
    query = select(ExemptionRow).order_by(col(ExemptionRow.id).desc()).limit(limit)
    if provider:
        query = query.where(col(ExemptionRow.provider) == provider)
    if live_at is not None:
        query = query.where(_live(live_at))
    return list((await session.execute(query)).scalars())


async def get_exemption(
    session: AsyncSession, exemption_id: str, *, for_update: bool = False
) -> ExemptionRow | None:
    return await session.get(ExemptionRow, exemption_id, with_for_update=for_update)


async def end_exemptions(
    session: AsyncSession, ids: Sequence[str], actor: str, now: datetime
) -> None:
    for i in range(0, len(ids), _CHUNK):
        await session.execute(
            update(ExemptionRow)
            .where(col(ExemptionRow.id).in_(ids[i : i + _CHUNK]))
            .values(ended_at=now, ended_by=actor)
        )


async def due_exemptions(session: AsyncSession, now: datetime, limit: int) -> list[ExemptionRow]:
    """Exemptions past their expiry that have not been ended yet (by the indexed expiry),
    claimed for the caller's transaction: `FOR UPDATE SKIP LOCKED` on PostgreSQL, so
    replicas expiring at once each end different ones (SQLite's writers take turns)."""
    query = (
        select(ExemptionRow)
        .where(
            col(ExemptionRow.expires_at).is_not(None),
            col(ExemptionRow.expires_at) <= now,
            col(ExemptionRow.ended_at).is_(None),
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(query)).scalars())


async def live_network_exemptions(
    session: AsyncSession,
    providers: Sequence[str] | None,
    targets: Sequence[tuple[str, str]] | None,
    now: datetime,
) -> list[tuple[str, str, str]]:
    """(provider, kind, value) of live IP and CIDR exemptions: of these targets, or all
    (a full reconcile; exemptions are few next to actions)."""
    query = select(
        col(ExemptionRow.provider), col(ExemptionRow.subject_kind), col(ExemptionRow.subject_value)
    ).where(col(ExemptionRow.subject_kind).in_(["ip", "cidr"]), _live(now))
    if providers is not None:
        query = query.where(col(ExemptionRow.provider).in_(list(providers)))
    if targets is None:
        return [(p, k, v) for p, k, v in await session.execute(query)]
    found: list[tuple[str, str, str]] = []
    by_kind: dict[str, list[str]] = {}
    for kind, value in sorted(set(targets)):
        by_kind.setdefault(kind, []).append(value)
    for kind, values in by_kind.items():
        for i in range(0, len(values), _CHUNK):
            rows = await session.execute(
                query.where(
                    col(ExemptionRow.subject_kind) == kind,
                    col(ExemptionRow.subject_value).in_(values[i : i + _CHUNK]),
                )
            )
            found.extend((p, k, v) for p, k, v in rows)
    return found


# -- appeals -------------------------------------------------------------------------------


async def insert_appeal(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(AppealRow), [row])


async def get_appeal(
    session: AsyncSession, appeal_id: str, *, for_update: bool = False
) -> AppealRow | None:
    return await session.get(AppealRow, appeal_id, with_for_update=for_update)


@dataclass(frozen=True)
class AppealFilter:
    state: str | None = None
    provider: str | None = None
    subject_kind: str | None = None
    subject_value: str | None = None
    filed_before: datetime | None = None
    """Only appeals filed before this (the `age` filter: older than)."""


async def list_appeals(
    session: AsyncSession, where: AppealFilter, after: str | None, limit: int
) -> list[AppealRow]:
    """Appeals newest first; `after` is the id of the last one of the previous page."""
    query = select(AppealRow)
    for column, value in (
        (col(AppealRow.state), where.state),
        (col(AppealRow.provider), where.provider),
        (col(AppealRow.subject_kind), where.subject_kind),
        (col(AppealRow.subject_value), where.subject_value),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.filed_before is not None:
        query = query.where(col(AppealRow.filed_at) < where.filed_before)
    if after:
        query = query.where(col(AppealRow.id) < after)
    query = query.order_by(col(AppealRow.id).desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def decide_appeal(session: AsyncSession, appeal_id: str, values: dict[str, Any]) -> None:
    await session.execute(update(AppealRow).where(col(AppealRow.id) == appeal_id).values(**values))


async def cover(
    session: AsyncSession, appeal_id: str, action_ids: Sequence[str], lifted_at: datetime | None
) -> None:
    """Record that the appeal covers these actions (those already covered are left)."""
    known = set(await covered_ids(session, appeal_id))
    rows = [
        {"appeal_id": appeal_id, "action_id": a, "lifted_at": lifted_at}
        for a in dict.fromkeys(action_ids)
        if a not in known
    ]
    if rows:
        await session.execute(insert(AppealActionRow), rows)


async def mark_lifted(
    session: AsyncSession, appeal_id: str, action_ids: Sequence[str], at: datetime
) -> None:
    for i in range(0, len(action_ids), _CHUNK):
        await session.execute(
            update(AppealActionRow)
            .where(
                col(AppealActionRow.appeal_id) == appeal_id,
                col(AppealActionRow.action_id).in_(action_ids[i : i + _CHUNK]),
            )
            .values(lifted_at=at)
        )


async def covered_ids(session: AsyncSession, appeal_id: str) -> list[str]:
    rows = await session.execute(
        select(col(AppealActionRow.action_id)).where(col(AppealActionRow.appeal_id) == appeal_id)
    )
    return [a for (a,) in rows]


async def covered(
    session: AsyncSession, appeal_ids: Sequence[str]
) -> dict[str, list[tuple[str, datetime | None]]]:
    """appeal id -> [(action id, lifted_at)], by action id."""
    found: dict[str, list[tuple[str, datetime | None]]] = {a: [] for a in appeal_ids}
    for i in range(0, len(appeal_ids), _CHUNK):
        rows = await session.execute(
            select(
                col(AppealActionRow.appeal_id),
                col(AppealActionRow.action_id),
                col(AppealActionRow.lifted_at),
            )
            .where(col(AppealActionRow.appeal_id).in_(appeal_ids[i : i + _CHUNK]))
            .order_by(col(AppealActionRow.action_id))
        )
        for appeal_id, action_id, lifted_at in rows:
            found[appeal_id].append((action_id, lifted_at))
    return found


async def open_appeal_count(session: AsyncSession) -> dict[str, int]:
    """Appeals by state (all time), for /metrics."""
    rows = await session.execute(
        select(col(AppealRow.state), func.count()).group_by(col(AppealRow.state))
    )
    return {state: int(n) for state, n in rows}


# -- lifts ---------------------------------------------------------------------------------


async def insert_lifts(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(LiftRow), list(rows))


# -- the remediation report ----------------------------------------------------------------


@dataclass(frozen=True)
class AppealFact:
    appeal_id: str
    state: str
    filed_at: datetime
    decided_at: datetime | None
    action_id: str | None
    rule: str | None
    detector: str | None
    action_at: datetime | None
    lifted_at: datetime | None


async def appeal_facts(session: AsyncSession, since: datetime, until: datetime) -> list[AppealFact]:
    """Every appeal filed in [since, until), once per action it covers (once with no
    action when it covers none); the action's rule, detector and time are the caller's
    to fill in (`with_actions`)."""
    rows = await session.execute(
        select(
            col(AppealRow.id),
            col(AppealRow.state),
            col(AppealRow.filed_at),
            col(AppealRow.decided_at),
            col(AppealActionRow.action_id),
            col(AppealActionRow.lifted_at),
        )
        .select_from(AppealRow)
        .outerjoin(AppealActionRow, col(AppealActionRow.appeal_id) == col(AppealRow.id))
        .where(col(AppealRow.filed_at) >= since, col(AppealRow.filed_at) < until)
    )
    return [
        AppealFact(appeal, state, filed, decided, action, None, None, None, lifted)
        for appeal, state, filed, decided, action, lifted in rows
    ]


# -- a verdict's history (evaluate builds `history.appeals` and `context.exempt` from these)


_exemption: Table = ExemptionRow.__table__  # type: ignore[attr-defined]
_lift: Table = LiftRow.__table__  # type: ignore[attr-defined]
_appeal: Table = AppealRow.__table__  # type: ignore[attr-defined]
_EXEMPTIONS_ON = Prepared(
    select(
        _exemption.c.provider,
        _exemption.c.subject_kind,
        _exemption.c.subject_value,
        _exemption.c.owner,
        _exemption.c.reason,
        _exemption.c.expires_at,
    ).where(
        _exemption.c.provider.in_(bindparam("providers", expanding=True)),
        _exemption.c.subject_kind.in_(bindparam("kinds", expanding=True)),
        _exemption.c.subject_value.in_(bindparam("values", expanding=True)),
        or_(_exemption.c.expires_at.is_(None), _exemption.c.expires_at > bindparam("now")),
        _exemption.c.ended_at.is_(None),
    )
)
_LIFT_COLUMNS = (
    _lift.c.id,
    _lift.c.provider,
    _lift.c.appeal_id,
    _lift.c.cause,
    _lift.c.rule,
    _lift.c.type,
    _lift.c.target_kind,
    _lift.c.target_value,
    _lift.c.score,
    _lift.c.at,
)
_LIFTS_ON = Prepared(
    select(*_LIFT_COLUMNS).where(
        _lift.c.provider.in_(bindparam("providers", expanding=True)),
        _lift.c.target_kind.in_(bindparam("kinds", expanding=True)),
        _lift.c.target_value.in_(bindparam("values", expanding=True)),
        _lift.c.at >= bindparam("since"),
    )
)
_RANGE_LIFTS = Prepared(
    select(*_LIFT_COLUMNS).where(
        _lift.c.provider.in_(bindparam("providers", expanding=True)),
        _lift.c.target_kind == "cidr",
        _lift.c.at >= bindparam("since"),
    )
)
_APPEALS_ON = Prepared(
    select(
        _appeal.c.provider,
        _appeal.c.id,
        _appeal.c.state,
        _appeal.c.subject_kind,
        _appeal.c.subject_value,
        _appeal.c.filed_at,
    ).where(
        _appeal.c.provider.in_(bindparam("providers", expanding=True)),
        _appeal.c.subject_kind.in_(bindparam("kinds", expanding=True)),
        _appeal.c.subject_value.in_(bindparam("values", expanding=True)),
        _appeal.c.state.in_(["open", "denied"]),
        _appeal.c.filed_at >= bindparam("since"),
    )
)


def _asked(rows: Any, keys: Sequence[tuple[str, str, str]], kind: str, value: str) -> list[Any]:
    wanted = set(keys)
    return [r for r in rows if (r.provider, getattr(r, kind), getattr(r, value)) in wanted]


def live_exemptions_on(
    session: Session, keys: Sequence[tuple[str, str, str]], now: datetime
) -> list[Any]:
    """(decide thread) Live exemptions of these (provider, kind, value) subjects."""
    rows = _EXEMPTIONS_ON.rows(session.connection(), {**keyed(keys), "now": now})
    return _asked(rows, keys, "subject_kind", "subject_value")


def lifts_on(session: Session, keys: Sequence[tuple[str, str, str]], since: datetime) -> list[Any]:
    """(decide thread) Lifts of these (provider, kind, value) targets since `since`."""
    rows = _LIFTS_ON.rows(session.connection(), {**keyed(keys), "since": since})
    return _asked(rows, keys, "target_kind", "target_value")


def range_lifts(session: Session, providers: Sequence[str], since: datetime) -> list[Any]:
    """(decide thread) These providers' lifts of CIDR blocks since `since` (people lift
    few ranges)."""
    params = {"providers": sorted(providers), "since": since}
    return _RANGE_LIFTS.rows(session.connection(), params)


def pending_appeals_on(
    session: Session, keys: Sequence[tuple[str, str, str]], since: datetime
) -> list[Any]:
    """(decide thread) Open or denied appeals about these subjects filed since `since`."""
    rows = _APPEALS_ON.rows(session.connection(), {**keyed(keys), "since": since})
    return _asked(rows, keys, "subject_kind", "subject_value")


async def exemptions_of(session: AsyncSession, kind: str, value: str) -> list[ExemptionRow]:
    """Every exemption of one subject (any provider, ended or not), newest first."""
    query = (
        select(ExemptionRow)
        .where(col(ExemptionRow.subject_kind) == kind, col(ExemptionRow.subject_value) == value)
        .order_by(col(ExemptionRow.created_at).desc())
    )
    return list((await session.execute(query)).scalars())
