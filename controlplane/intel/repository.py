"""Intel SQL: indicators, the TAXII collections' objects, and peer state."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from controlplane.store.models import IndicatorRow, IntelObjectRow, IntelPeerRow, IntelStatusRow
from controlplane.store.prepared import Prepared

# -- indicators --------------------------------------------------------------------------


async def insert_indicators(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(IndicatorRow), list(rows))


async def list_indicators(
    session: AsyncSession,
    limit: int,
    kind: str | None = None,
    source: str | None = None,
    origin: str | None = None,
) -> list[IndicatorRow]:
    query = select(IndicatorRow)
    if kind is not None:
        query = query.where(col(IndicatorRow.kind) == kind)
    if source is not None:
        query = query.where(col(IndicatorRow.source) == source)
    if origin is not None:
        query = query.where(col(IndicatorRow.origin) == origin)
    query = query.order_by(col(IndicatorRow.id).desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def get_indicator(session: AsyncSession, indicator_id: str) -> IndicatorRow | None:
    return await session.get(IndicatorRow, indicator_id)


async def indicators_by_stix_id(
    session: AsyncSession, stix_ids: Sequence[str]
) -> dict[str, IndicatorRow]:
    found: dict[str, IndicatorRow] = {}
    for i in range(0, len(stix_ids), 500):
        rows = await session.execute(
            select(IndicatorRow).where(col(IndicatorRow.stix_id).in_(stix_ids[i : i + 500]))
        )
        found.update({r.stix_id: r for r in rows.scalars() if r.stix_id})
    return found


async def replace_indicator(
    session: AsyncSession, indicator_id: str, values: dict[str, Any]
) -> None:
    await session.execute(
        update(IndicatorRow).where(col(IndicatorRow.id) == indicator_id).values(**values)
    )


async def revoke_indicator(
    session: AsyncSession, indicator_id: str, reason: str, at: datetime
) -> None:
    await session.execute(
        update(IndicatorRow)
        .where(col(IndicatorRow.id) == indicator_id)
        .values(revoked=True, revoked_reason=reason[:500], modified=at, expires_at=at)
    )


async def active_indicators_for(
    session: AsyncSession, kind: str, value: str, now: datetime
) -> list[IndicatorRow]:
    """Unrevoked, unexpired indicators of this kind and value (any source)."""
    rows = await session.execute(
        select(IndicatorRow).where(
            col(IndicatorRow.kind) == kind,
            col(IndicatorRow.value) == value,
            ~col(IndicatorRow.revoked),
            (col(IndicatorRow.expires_at).is_(None)) | (col(IndicatorRow.expires_at) > now),
        )
    )
    return list(rows.scalars())


_indicator: Table = IndicatorRow.__table__  # type: ignore[attr-defined]
_LIVE = select(_indicator).where(
    ~_indicator.c.revoked,
    or_(_indicator.c.expires_at.is_(None), _indicator.c.expires_at > bindparam("now")),
)
_CHANGED = Prepared(
    select(_indicator).where(
        or_(
            _indicator.c.modified >= bindparam("since"),
            _indicator.c.modified.is_(None) & (_indicator.c.created_at >= bindparam("since")),
        )
    )
)


def live_indicators(session: Session, now: datetime) -> list[Any]:
    """(decide thread) Every indicator neither revoked nor expired (the intel index's
    full load), as rows with the table's columns."""
    return list(session.connection().execute(_LIVE, {"now": now}))


def indicators_changed_since(session: Session, since: datetime) -> list[Any]:
    """(decide thread) Indicators added or changed since `since` (by the indexed
    `modified`; a row never modified counts from its creation), revoked ones included."""
    return _CHANGED.rows(session.connection(), {"since": since})


async def count_by_origin(session: AsyncSession, now: datetime) -> dict[str, tuple[int, int]]:
    """Origin -> (indicators in force, all indicators)."""
    origin = col(IndicatorRow.origin)
    totals = dict(
        (o, int(n)) for o, n in await session.execute(select(origin, func.count()).group_by(origin))
    )
    live = await session.execute(
        select(origin, func.count())
        .where(
            ~col(IndicatorRow.revoked),
            col(IndicatorRow.expires_at).is_(None) | (col(IndicatorRow.expires_at) > now),
        )
        .group_by(origin)
    )
    in_force = {o: int(n) for o, n in live}
    return {o: (in_force.get(o, 0), n) for o, n in totals.items()}


async def age_out(session: AsyncSession, now: datetime, keep: timedelta) -> int:
    """Delete pulled indicators that ended (expired or revoked) more than `keep` ago."""
    ended = (col(IndicatorRow.expires_at).is_not(None)) & (
        col(IndicatorRow.expires_at) < now - keep
    )
    result = await session.execute(
        delete(IndicatorRow).where(col(IndicatorRow.origin) != "local", ended)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# -- TAXII collection objects ----------------------------------------------------------

_LOCK = 0x7461786969  # "taxii": one publisher at a time across replicas (PostgreSQL)


async def append_objects(
    session: AsyncSession, collection: str, objects: Sequence[dict[str, Any]], now: datetime
) -> None:
    """Add object versions to a collection with unique, increasing `date_added`. The
    collection's order is locked until commit (an advisory lock on PostgreSQL; SQLite
    writers hold the database), so a reader paging by `added_after` never skips one."""
    if not objects:
        return
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(_LOCK)))
    last = (
        await session.execute(
            select(func.max(col(IntelObjectRow.date_added))).where(
                col(IntelObjectRow.collection) == collection
            )
        )
    ).scalar_one_or_none()
    step = timedelta(microseconds=1)
    moment = max(now, last + step) if last is not None else now
    ids = list({o["id"] for o in objects})
    for i in range(0, len(ids), 500):
        await session.execute(
            update(IntelObjectRow)
            .where(
                col(IntelObjectRow.collection) == collection,
                col(IntelObjectRow.stix_id).in_(ids[i : i + 500]),
                col(IntelObjectRow.latest),
            )
            .values(latest=False)
        )
    last_of = {obj["id"]: n for n, obj in enumerate(objects)}
    rows = []
    for n, obj in enumerate(objects):
        rows.append(
            {
                "collection": collection,
                "stix_id": obj["id"],
                "type": obj["type"],
                "version": obj.get("modified") or obj.get("created") or "",
                "date_added": moment + step * n,
                "latest": last_of[obj["id"]] == n,
                "body": obj,
            }
        )
    await session.execute(insert(IntelObjectRow), rows)


async def object_page(
    session: AsyncSession,
    collection: str,
    *,
    added_after: datetime | None,
    after_seq: int | None,
    ids: Sequence[str],
    types: Sequence[str],
    version: str,
    limit: int,
) -> tuple[list[IntelObjectRow], bool]:
    """One page in `date_added` order, and whether more follow."""
    query = select(IntelObjectRow).where(col(IntelObjectRow.collection) == collection)
    if added_after is not None:
        query = query.where(col(IntelObjectRow.date_added) > added_after)
    if after_seq is not None:
        query = query.where(col(IntelObjectRow.seq) > after_seq)
    if ids:
        query = query.where(col(IntelObjectRow.stix_id).in_(list(ids)))
    if types:
        query = query.where(col(IntelObjectRow.type).in_(list(types)))
    if version == "last":
        query = query.where(col(IntelObjectRow.latest))
    elif version == "first":
        first = (
            select(func.min(col(IntelObjectRow.seq)))
            .where(col(IntelObjectRow.collection) == collection)
            .group_by(col(IntelObjectRow.stix_id))
        )
        query = query.where(col(IntelObjectRow.seq).in_(first))
    elif version != "all":
        query = query.where(col(IntelObjectRow.version).in_(version.split(",")))
    rows = list(
        (await session.execute(query.order_by(col(IntelObjectRow.seq)).limit(limit + 1))).scalars()
    )
    return rows[:limit], len(rows) > limit


async def object_versions(
    session: AsyncSession, collection: str, stix_id: str
) -> list[IntelObjectRow]:
    rows = await session.execute(
        select(IntelObjectRow)
        .where(col(IntelObjectRow.collection) == collection, col(IntelObjectRow.stix_id) == stix_id)
        .order_by(col(IntelObjectRow.seq))
    )
    return list(rows.scalars())


async def collection_has(session: AsyncSession, collection: str, stix_id: str) -> bool:
    row = await session.execute(
        select(col(IntelObjectRow.seq))
        .where(col(IntelObjectRow.collection) == collection, col(IntelObjectRow.stix_id) == stix_id)
        .limit(1)
    )
    return row.first() is not None


# -- peers --------------------------------------------------------------------------------


async def peer_states(session: AsyncSession) -> dict[str, IntelPeerRow]:
    rows = await session.execute(select(IntelPeerRow))
    return {r.name: r for r in rows.scalars()}


async def peer_state(session: AsyncSession, name: str) -> IntelPeerRow | None:
    return await session.get(IntelPeerRow, name)


async def save_peer_state(session: AsyncSession, name: str, values: dict[str, Any]) -> None:
    """Set fields; counters in `values` named `+field` are added to."""
    sets: dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith("+"):
            column = getattr(IntelPeerRow, key[1:])
            sets[key[1:]] = column + value
        else:
            sets[key] = value
    updated = await session.execute(
        update(IntelPeerRow).where(col(IntelPeerRow.name) == name).values(**sets)
    )
    if not updated.rowcount:  # type: ignore[attr-defined]
        fresh = {k.lstrip("+"): v for k, v in values.items()}
        await session.execute(insert(IntelPeerRow), [{"name": name, **fresh}])


# -- TAXII status of added objects -------------------------------------------------------


async def insert_status(session: AsyncSession, row: IntelStatusRow) -> None:
    session.add(row)


async def get_status(session: AsyncSession, status_id: str) -> IntelStatusRow | None:
    return await session.get(IntelStatusRow, status_id)
