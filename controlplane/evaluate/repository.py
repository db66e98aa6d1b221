"""Evaluate's SQL: the lookups an input is built from, and decision rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from controlplane.domain.vocabulary import ACTIVE_STATES
from controlplane.evaluate.context import IntelIndex, Lookups, PriorVerdict
from controlplane.store.models import (
    ActionRow,
    DecisionRow,
    ExemptionRow,
    IndicatorRow,
    VerdictRow,
)


def action_document(row: Mapping[str, Any]) -> dict[str, Any]:
    """An action row as policies see it in `history.active_actions`."""
    return {
        "id": row["id"],
        "type": row["type"],
        "target": {"kind": row["target_kind"], "value": row["target_value"]},
        "params": row["params"],
        "rule": row["rule"],
        "state": row["state"],
        "created_at": row["created_at"].isoformat(),
        "expires_at": row["expires_at"].isoformat() if row["expires_at"] else None,
    }


async def fill_lookups(
    session: AsyncSession,
    lookups: Lookups,
    subject_keys: set[tuple[str, str, str]],
    since: datetime,
    now: datetime,
) -> None:
    """Fetch active actions, earlier verdicts and exemptions for these (provider, kind, value)
    keys, in a handful of queries whatever the batch size."""
    keys = sorted(subject_keys)
    providers = sorted({p for p, _, _ in keys})
    unexpired = or_(col(ActionRow.expires_at).is_(None), col(ActionRow.expires_at) > now)
    active = col(ActionRow.state).in_([s.value for s in ACTIVE_STATES]) & ~col(ActionRow.shadow)
    for chunk in _chunks(keys):
        rows = await session.execute(
            select(ActionRow).where(
                active,
                unexpired,
                tuple_(ActionRow.provider, ActionRow.target_kind, ActionRow.target_value).in_(
                    chunk
                ),
            )
        )
        for (row,) in rows:
            lookups.add_action(row.provider, action_document(row.model_dump()))
        exemptions = await session.execute(
            select(ExemptionRow).where(
                or_(col(ExemptionRow.expires_at).is_(None), col(ExemptionRow.expires_at) > now),
                tuple_(
                    ExemptionRow.provider, ExemptionRow.subject_kind, ExemptionRow.subject_value
                ).in_(chunk),
            )
        )
        for (e,) in exemptions:
            lookups.exemptions[(e.provider, e.subject_kind, e.subject_value)] = {
                "subject": {"kind": e.subject_kind, "value": e.subject_value},
                "owner": e.owner,
                "reason": e.reason,
                "expires_at": e.expires_at.isoformat() if e.expires_at else None,
            }
        accounts = [(p, v) for p, k, v in chunk if k == "account"]
        api_keys = [(p, v) for p, k, v in chunk if k == "api_key"]
        conditions = []
        if accounts:
            conditions.append(tuple_(VerdictRow.provider, VerdictRow.account_id).in_(accounts))
        if api_keys:
            conditions.append(tuple_(VerdictRow.provider, VerdictRow.api_key_id).in_(api_keys))
        if conditions:
            prior = await session.execute(
                select(
                    col(VerdictRow.id),
                    col(VerdictRow.provider),
                    col(VerdictRow.account_id),
                    col(VerdictRow.api_key_id),
                    col(VerdictRow.observed_at),
                    col(VerdictRow.received_at),
                    col(VerdictRow.score),
                    col(VerdictRow.confidence),
                    col(VerdictRow.detector_name),
                ).where(or_(*conditions), col(VerdictRow.observed_at) >= since)
            )
            for verdict_id, p, account, key, observed, received, score, conf, det in prior:
                verdict = PriorVerdict(
                    verdict_id, account, key, observed, received, score, conf, det
                )
                for kind, value in (("account", account), ("api_key", key)):
                    if value and (p, kind, value) in subject_keys:
                        lookups.verdicts[(p, kind, value)].append(verdict)
    if providers:
        cidrs = await session.execute(
            select(ActionRow).where(
                active,
                unexpired,
                col(ActionRow.target_kind) == "cidr",
                col(ActionRow.provider).in_(providers),
            )
        )
        for (row,) in cidrs:
            lookups.add_action(row.provider, action_document(row.model_dump()))


class IntelCache:
    """The intel index, rebuilt only when the indicator table changed."""

    def __init__(self) -> None:
        self._stamp: tuple[Any, ...] | None = None
        self._index = IntelIndex([])

    async def index(self, session: AsyncSession, now: datetime) -> IntelIndex:
        count, newest, earliest_expiry = (
            await session.execute(
                select(
                    func.count(),
                    func.max(col(IndicatorRow.created_at)),
                    func.min(col(IndicatorRow.expires_at)),
                )
            )
        ).one()
        stamp = (count, newest, earliest_expiry)
        expired_since = earliest_expiry is not None and earliest_expiry <= now
        if stamp != self._stamp or expired_since:
            rows = await session.execute(
                select(IndicatorRow).where(
                    col(IndicatorRow.kind) == "cidr",
                    or_(col(IndicatorRow.expires_at).is_(None), col(IndicatorRow.expires_at) > now),
                )
            )
            self._index = IntelIndex(
                [
                    {"value": r.value, "source": r.source, "confidence": r.confidence, "tlp": r.tlp}
                    for (r,) in rows
                ]
            )
            self._stamp = stamp
        return self._index


async def insert_decisions(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(DecisionRow), list(rows))


async def get_decision(session: AsyncSession, decision_id: str) -> DecisionRow | None:
    return await session.get(DecisionRow, decision_id)


def _chunks(items: Sequence[Any], size: int = 300) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def decisions_of_verdicts(
    session: AsyncSession, verdict_ids: Sequence[str]
) -> dict[str, DecisionRow]:
    found: dict[str, DecisionRow] = {}
    for chunk in _chunks(list(verdict_ids), 500):
        rows = await session.execute(
            select(DecisionRow).where(col(DecisionRow.verdict_id).in_(chunk))
        )
        found.update({row.verdict_id: row for row in rows.scalars()})
    return found
