"""Verdict SQL: the one module that queries the `verdict` table; the other areas ask it
(evaluate through the `VerdictHistory` it is handed: a stage never imports an earlier
one). What the decide thread runs is sync (a `Session`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    Select,
    Table,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from controlplane.domain.vocabulary import VerdictStatus
from controlplane.store.bulk import insert_many
from controlplane.store.models import VerdictRow
from controlplane.store.prepared import Prepared


@dataclass(frozen=True)
class Stored:
    content_hash: str
    status: str
    received_at: datetime


_verdict: Table = VerdictRow.__table__  # type: ignore[attr-defined]
_STORED = Prepared(
    select(_verdict.c.id, _verdict.c.content_hash, _verdict.c.status, _verdict.c.received_at).where(
        _verdict.c.id.in_(bindparam("ids", expanding=True))
    )
)


def stored_verdicts(session: Session, ids: Sequence[str]) -> dict[str, Stored]:
    """Content hash, status and arrival of those of `ids` already stored."""
    found: dict[str, Stored] = {}
    connection = session.connection()
    for i in range(0, len(ids), 500):
        rows = _STORED.rows(connection, {"ids": list(ids[i : i + 500])})
        found.update({r.id: Stored(r.content_hash, r.status, r.received_at) for r in rows})
    return found


def insert_verdicts(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        insert_many(session.connection(), _verdict, rows)


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


def _chunks(ids: Sequence[str], size: int = 500) -> list[list[str]]:
    unique = list(dict.fromkeys(ids))
    return [unique[i : i + size] for i in range(0, len(unique), size)]


_PRIOR_COLUMNS = (
    _verdict.c.provider,
    _verdict.c.id,
    _verdict.c.account_id,
    _verdict.c.api_key_id,
    _verdict.c.observed_at,
    _verdict.c.received_at,
    _verdict.c.score,
    _verdict.c.confidence,
    _verdict.c.detector_name,
)
_PRIOR = Prepared(
    select(*_PRIOR_COLUMNS)
    .where(
        _verdict.c.provider.in_(bindparam("providers", expanding=True)),
        or_(
            _verdict.c.account_id.in_(bindparam("accounts", expanding=True)),
            _verdict.c.api_key_id.in_(bindparam("keys", expanding=True)),
        ),
        _verdict.c.observed_at >= bindparam("since"),
    )
    .limit(bindparam("limit"))
)
_PRIOR_ALL = Prepared(_PRIOR.statement.limit(None))


def prior_verdicts(
    session: Session,
    providers: Sequence[str],
    accounts: Sequence[str],
    keys: Sequence[str],
    since: datetime,
    *,
    limit: int | None = None,
) -> list[tuple[Any, ...]] | None:
    """(decide thread) (provider, id, account, key, observed, received, score,
    confidence, detector) of these providers' verdicts about these accounts or keys,
    observed since `since` (by index; the caller keeps the combinations it asked);
    None when there are more than `limit`."""
    if not accounts and not keys:
        return []
    params = {
        "providers": sorted(providers),
        "accounts": sorted(accounts),
        "keys": sorted(keys),
        "since": since,
    }
    if limit is None:
        return [tuple(row) for row in _PRIOR_ALL.rows(session.connection(), params)]
    rows = _PRIOR.rows(session.connection(), {**params, "limit": limit + 1})
    return None if len(rows) > limit else [tuple(row) for row in rows]


def _window_count(column: Any) -> Prepared:
    return Prepared(
        select(_verdict.c.provider, column, func.count())
        .where(
            _verdict.c.provider.in_(bindparam("providers", expanding=True)),
            column.in_(bindparam("values", expanding=True)),
            _verdict.c.observed_at >= bindparam("since"),
        )
        .group_by(_verdict.c.provider, column)
    )


_WINDOW_COUNTS = {
    "account": _window_count(_verdict.c.account_id),
    "api_key": _window_count(_verdict.c.api_key_id),
}


def window_counts(
    session: Session,
    providers: Sequence[str],
    values: dict[str, Sequence[str]],
    since: datetime,
) -> dict[tuple[str, str, str], int]:
    """(decide thread) How many verdicts about each of these accounts and keys
    (`values` by `account` and `api_key`) were observed since `since`, counted in the
    database (an index range each): (provider, kind, value) -> count, zeros left out."""
    counts: dict[tuple[str, str, str], int] = {}
    connection = session.connection()
    for kind, wanted in values.items():
        for chunk in _chunks(list(wanted)):
            params = {"providers": sorted(providers), "values": sorted(chunk), "since": since}
            for provider, value, n in _WINDOW_COUNTS[kind].rows(connection, params):
                counts[(provider, kind, value)] = n
    return counts


_ABOUT_PAIR = and_(
    _verdict.c.provider == bindparam("provider"),
    or_(
        _verdict.c.account_id == bindparam("account"),
        _verdict.c.api_key_id == bindparam("key"),
    ),
    _verdict.c.id.not_in(bindparam("exclude", expanding=True)),
)
_SURELY_EARLIER = and_(
    _verdict.c.observed_at >= bindparam("smax"), _verdict.c.received_at < bindparam("rmin")
)
_PAIR_COUNT = Prepared(select(func.count()).where(_ABOUT_PAIR, _SURELY_EARLIER))
_PAIR_NEWEST = Prepared(
    select(*_PRIOR_COLUMNS)
    .where(_ABOUT_PAIR, _SURELY_EARLIER)
    .order_by(_verdict.c.observed_at.desc(), _verdict.c.received_at.desc(), _verdict.c.id.desc())
    .limit(bindparam("newest"))
)
_PAIR_EDGE = Prepared(
    select(*_PRIOR_COLUMNS).where(
        _ABOUT_PAIR,
        _verdict.c.observed_at >= bindparam("smin"),
        or_(
            _verdict.c.observed_at < bindparam("smax"),
            _verdict.c.received_at >= bindparam("rmin"),
        ),
    )
)


@dataclass(frozen=True)
class PairHistory:
    """What is stored about an (account, key) pair's verdicts, for several verdicts of a
    batch that name it: those observed since `smax` and received before `rmin` (earlier
    than each of them) counted and the newest few read; the few between (observed in
    [smin, smax) or received since `rmin`) read whole, for each verdict to sort."""

    surely_earlier: int
    newest: list[tuple[Any, ...]]
    edge: list[tuple[Any, ...]]


def pair_history(
    session: Session,
    provider: str,
    account: str | None,
    key: str | None,
    *,
    smin: datetime,
    smax: datetime,
    rmin: datetime,
    exclude: Sequence[str],
    newest: int,
) -> PairHistory:
    """(decide thread) The history of verdicts about `account` or `key` (either may be
    None), leaving out `exclude` (the batch's own, some stored already when retried):
    three statements, each an index range, whatever the pair's history."""
    connection = session.connection()
    params: dict[str, Any] = {
        "provider": provider,
        "account": account,
        "key": key,
        "exclude": sorted(set(exclude)),
        "smin": smin,
        "smax": smax,
        "rmin": rmin,
    }
    (count,) = _PAIR_COUNT.rows(connection, params)[0]
    latest = _PAIR_NEWEST.rows(connection, {**params, "newest": newest})
    edge = _PAIR_EDGE.rows(connection, params)
    return PairHistory(count, [tuple(r) for r in latest], [tuple(r) for r in edge])


def ids_naming(provider: str, kind: str, value: str) -> Select[Any] | None:
    """A subquery of the ids of a provider's verdicts naming this account, key or org
    (None for another kind of subject)."""
    column = {
        "account": VerdictRow.account_id,
        "api_key": VerdictRow.api_key_id,
        "org": VerdictRow.org_id,
    }.get(kind)
    if column is None:
        return None
    return select(col(VerdictRow.id)).where(
        col(VerdictRow.provider) == provider, col(column) == value
    )


def detector_of(verdict_id: ColumnElement[Any]) -> ScalarSelect[Any]:
    """The detector of the verdict `verdict_id` (a column of another query) names."""
    return (
        select(col(VerdictRow.detector_name))
        .where(col(VerdictRow.id) == verdict_id)
        .scalar_subquery()
    )


async def verdicts_by_id(session: AsyncSession, ids: Sequence[str]) -> dict[str, VerdictRow]:
    found: dict[str, VerdictRow] = {}
    for chunk in _chunks(ids):
        rows = await session.execute(select(VerdictRow).where(col(VerdictRow.id).in_(chunk)))
        found.update({row.id: row for row in rows.scalars()})
    return found


async def newest_verdicts(
    session: AsyncSession, ids: Select[Any], provider: str | None, limit: int
) -> list[VerdictRow]:
    """The newest `limit` of the verdicts `ids` (a subquery) selects, of one provider
    or all."""
    query = select(VerdictRow).where(col(VerdictRow.id).in_(ids))
    if provider is not None:
        query = query.where(col(VerdictRow.provider) == provider)
    query = query.order_by(col(VerdictRow.received_at).desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def scores_of(session: AsyncSession, verdict_ids: Sequence[str]) -> dict[str, float]:
    """The score of each verdict (the evidence a lifted action stood on)."""
    found: dict[str, float] = {}
    for chunk in _chunks(verdict_ids):
        rows = await session.execute(
            select(col(VerdictRow.id), col(VerdictRow.score)).where(col(VerdictRow.id).in_(chunk))
        )
        found.update({v: float(s) for v, s in rows})
    return found


async def detectors_of(session: AsyncSession, verdict_ids: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in _chunks(verdict_ids):
        rows = await session.execute(
            select(col(VerdictRow.id), col(VerdictRow.detector_name)).where(
                col(VerdictRow.id).in_(chunk)
            )
        )
        found.update({v: d for v, d in rows})
    return found


def subjects_of_blocking(
    session: Session, verdict_ids: Sequence[str]
) -> dict[str, list[tuple[str, str]]]:
    """(kind, value) of each verdict's subject: account, key, org and IPs."""
    found: dict[str, list[tuple[str, str]]] = {}
    for chunk in _chunks(verdict_ids):
        query = select(
            col(VerdictRow.id),
            col(VerdictRow.account_id),
            col(VerdictRow.api_key_id),
            col(VerdictRow.org_id),
            col(VerdictRow.body)["subject"]["ips"],
        ).where(col(VerdictRow.id).in_(chunk))
        for verdict_id, account, key, org, ips in session.execute(query).all():
            subjects = [
                (kind, value)
                for kind, value in (("account", account), ("api_key", key), ("org", org))
                if value
            ]
            subjects.extend(("ip", ip) for ip in ips or ())
            found[verdict_id] = subjects
    return found


async def api_key_ids(session: AsyncSession) -> list[str]:
    """Every API key id verdicts have named."""
    query = select(col(VerdictRow.api_key_id)).where(col(VerdictRow.api_key_id).is_not(None))
    return [str(v) for v in (await session.execute(query.distinct())).scalars()]


async def undecided_count(session: AsyncSession) -> int:
    query = select(func.count()).where(col(VerdictRow.status) == VerdictStatus.RECEIVED.value)
    return int((await session.execute(query)).scalar_one())
