"""Evaluate's SQL: the lookups an input is built from, and decision rows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, or_, select
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


_ACTION_COLUMNS = (
    col(ActionRow.id),
    col(ActionRow.provider),
    col(ActionRow.type),
    col(ActionRow.target_kind),
    col(ActionRow.target_value),
    col(ActionRow.params),
    col(ActionRow.rule),
    col(ActionRow.state),
    col(ActionRow.created_at),
    col(ActionRow.expires_at),
)


async def fill_lookups(
    session: AsyncSession,
    lookups: Lookups,
    subject_keys: set[tuple[str, str, str]],
    since: datetime,
    now: datetime,
) -> None:
    """Fetch active actions, earlier verdicts and exemptions for these (provider, kind, value)
    keys. Queries go per (provider, kind) with a plain `IN` on one indexed column, which
    both databases answer from their indexes (a row-value IN list is not)."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for provider, kind, value in sorted(subject_keys):
        groups[(provider, kind)].append(value)
    unexpired = or_(col(ActionRow.expires_at).is_(None), col(ActionRow.expires_at) > now)
    active = col(ActionRow.state).in_([s.value for s in ACTIVE_STATES]) & ~col(ActionRow.shadow)
    for (provider, kind), values in groups.items():
        for chunk in _chunks(values):
            rows = await session.execute(
                select(*_ACTION_COLUMNS).where(
                    col(ActionRow.provider) == provider,
                    col(ActionRow.target_kind) == kind,
                    col(ActionRow.target_value).in_(chunk),
                    active,
                    unexpired,
                )
            )
            for row in rows:
                lookups.add_action(provider, action_document(dict(row._mapping)))
            exemptions = await session.execute(
                select(ExemptionRow).where(
                    col(ExemptionRow.provider) == provider,
                    col(ExemptionRow.subject_kind) == kind,
                    col(ExemptionRow.subject_value).in_(chunk),
                    or_(col(ExemptionRow.expires_at).is_(None), col(ExemptionRow.expires_at) > now),
                )
            )
            for (e,) in exemptions:
                lookups.exemptions[(e.provider, e.subject_kind, e.subject_value)] = {
                    "subject": {"kind": e.subject_kind, "value": e.subject_value},
                    "owner": e.owner,
                    "reason": e.reason,
                    "expires_at": e.expires_at.isoformat() if e.expires_at else None,
                }
            if kind in ("account", "api_key"):
                column = col(VerdictRow.account_id if kind == "account" else VerdictRow.api_key_id)
                prior = await session.execute(
                    select(
                        col(VerdictRow.id),
                        column,
                        col(VerdictRow.account_id),
                        col(VerdictRow.api_key_id),
                        col(VerdictRow.observed_at),
                        col(VerdictRow.received_at),
                        col(VerdictRow.score),
                        col(VerdictRow.confidence),
                        col(VerdictRow.detector_name),
                    ).where(
                        col(VerdictRow.provider) == provider,
                        column.in_(chunk),
                        col(VerdictRow.observed_at) >= since,
                    )
                )
                for (
                    verdict_id,
                    matched,
                    account,
                    key,
                    observed,
                    received,
                    score,
                    conf,
                    det,
                ) in prior:
                    lookups.verdicts[(provider, kind, str(matched))].append(
                        PriorVerdict(verdict_id, account, key, observed, received, score, conf, det)
                    )
    for provider in sorted({p for p, _ in groups}):
        cidrs = await session.execute(
            select(*_ACTION_COLUMNS).where(
                col(ActionRow.provider) == provider,
                col(ActionRow.target_kind) == "cidr",
                active,
                unexpired,
            )
        )
        for row in cidrs:
            lookups.add_action(provider, action_document(dict(row._mapping)))


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
        await session.execute(insert(DecisionRow.__table__), list(rows))  # type: ignore[attr-defined]


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


@dataclass(frozen=True)
class DecisionSummary:
    id: str
    verdict_id: str
    status: str
    policy_revision: str
    error: str | None
    trace_id: str | None


async def decision_summaries(
    session: AsyncSession, verdict_ids: Sequence[str]
) -> dict[str, DecisionSummary]:
    """What an ingest answer reports per verdict, without loading inputs and results."""
    found: dict[str, DecisionSummary] = {}
    for chunk in _chunks(list(verdict_ids), 500):
        rows = await session.execute(
            select(
                col(DecisionRow.id),
                col(DecisionRow.verdict_id),
                col(DecisionRow.status),
                col(DecisionRow.policy_revision),
                col(DecisionRow.error),
                col(DecisionRow.trace_id),
            ).where(col(DecisionRow.verdict_id).in_(chunk))
        )
        found.update({row.verdict_id: DecisionSummary(*row) for row in rows})
    return found
