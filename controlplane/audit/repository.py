"""Audit SQL: the chain head (locked while appending), the event rows, checkpoints and
the subject index: the one module that queries these tables."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Row,
    Select,
    String,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from controlplane.audit.export import Checkpoint, StoredEvent
from controlplane.evaluate import repository as decisions_repo
from controlplane.plan import repository as actions_repo
from controlplane.store.bulk import insert_many
from controlplane.store.models import (
    AuditCheckpointRow,
    AuditEventRow,
    AuditHeadRow,
    AuditSubjectHeadRow,
    AuditSubjectRow,
)

log = logging.getLogger(__name__)

HEAD_ID = 1


def _locked(session: AsyncSession | Session, query: Any) -> Any:
    """FOR UPDATE on PostgreSQL; SQLite writers already hold the lock (BEGIN IMMEDIATE)."""
    return query.with_for_update() if session.get_bind().dialect.name == "postgresql" else query


_head: Table = AuditHeadRow.__table__  # type: ignore[attr-defined]
_HEAD = select(_head.c.seq, _head.c.hash).where(_head.c.id == HEAD_ID)
_HEAD_LOCKED = _HEAD.with_for_update()
_MOVE_HEAD = (
    update(_head)
    .where(_head.c.id == HEAD_ID)
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
)


def lock_head(session: Session) -> tuple[int, str]:
    """The last (seq, hash), locked until commit so appends form one chain across
    replicas (FOR UPDATE on PostgreSQL; SQLite writers already hold the lock). The head
    row is created by migration 0003, before any writer runs."""
    postgres = session.get_bind().dialect.name == "postgresql"
    row = session.connection().execute(_HEAD_LOCKED if postgres else _HEAD).one()
    return row.seq, row.hash


async def head(session: AsyncSession) -> tuple[int, str]:
    """The last (seq, hash) as the head row records it (not locked)."""
    query = select(col(AuditHeadRow.seq), col(AuditHeadRow.hash)).where(
        col(AuditHeadRow.id) == HEAD_ID
    )
    row = (await session.execute(query)).one()
    return row.seq, row.hash


def append(session: Session, rows: list[dict[str, object]], seq: int, last: str) -> None:
    connection = session.connection()
    insert_many(connection, AuditEventRow.__table__, rows)  # type: ignore[attr-defined]
    connection.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": last})


async def hash_at(session: AsyncSession, seq: int) -> str | None:
    query = select(col(AuditEventRow.hash)).where(col(AuditEventRow.seq) == seq)
    return (await session.execute(query)).scalar_one_or_none()


def _iso_from_sqlite(stored: str) -> str:
    # SQLite keeps UTC timestamps as naive text ("2026-11-26 12:00:00.123456").
    return datetime.fromisoformat(stored).replace(tzinfo=UTC).isoformat()


def _iso_from_utc_text(text: str) -> str:
    # PostgreSQL formats the UTC time (below); isoformat() drops a zero fraction.
    return (text[:-7] if text.endswith(".000000") else text) + "+00:00"


async def stream_events(
    session: AsyncSession, first: int, last: int, chunk: int = 5000
) -> AsyncGenerator[list[StoredEvent], None]:
    """Events `first..last` in seq order, `chunk` rows at a time, through a server-side
    cursor: memory stays flat however long the chain is. Core rows, `at` as the text
    the hash covers and the payload as stored JSON text: at a million events the ORM,
    the column types' Python conversions and a JSON round trip per row would more than
    double the time of an export."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    at = col(AuditEventRow.at)
    query = (
        select(
            col(AuditEventRow.seq),
            (
                type_coerce(at, String)
                if sqlite
                else func.to_char(func.timezone("UTC", at), 'YYYY-MM-DD"T"HH24:MI:SS.US')
            ),
            col(AuditEventRow.type),
            col(AuditEventRow.actor),
            col(AuditEventRow.provider),
            col(AuditEventRow.verdict_id),
            col(AuditEventRow.decision_id),
            col(AuditEventRow.action_id),
            col(AuditEventRow.trace_id),
            cast(col(AuditEventRow.payload), Text),
            col(AuditEventRow.prev_hash),
            col(AuditEventRow.hash),
        )
        .where(col(AuditEventRow.seq) >= first, col(AuditEventRow.seq) <= last)
        .order_by(col(AuditEventRow.seq))
        .execution_options(yield_per=chunk)
    )
    iso = _iso_from_sqlite if sqlite else _iso_from_utc_text
    connection = await session.connection()
    result = await connection.stream(query)
    chunks = _read_ahead(result.partitions())
    try:
        async for rows in chunks:
            yield [StoredEvent._make((r[0], iso(r[1]), *r[2:])) for r in rows]
    finally:
        # A caller that stops early (a verify at its first break) must not leave a
        # fetch running on a cursor whose connection goes back to the pool.
        await chunks.aclose()
        await result.close()


async def _read_ahead(
    partitions: AsyncIterator[Sequence[Any]],
) -> AsyncGenerator[Sequence[Any], None]:
    """Ask for the next chunk before the caller works on this one, so the driver's
    thread (aiosqlite) or the server (PostgreSQL) fetches while Python hashes."""
    pending = asyncio.ensure_future(anext(partitions))
    try:
        while True:
            try:
                rows = await pending
            except StopAsyncIteration:
                return
            pending = asyncio.ensure_future(anext(partitions))
            await asyncio.sleep(0)  # let the fetch start before the caller takes the CPU
            yield rows
    finally:
        if not pending.done():
            pending.cancel()
        try:
            await pending
        except (asyncio.CancelledError, StopAsyncIteration):
            pass
        except Exception:
            # The caller has what it read; a chunk it no longer wants failed under it.
            log.debug("a read-ahead the caller stopped failed", exc_info=True)


async def export_bounds(
    session: AsyncSession, since: datetime | None, until: datetime | None
) -> tuple[int, int] | None:
    """The contiguous seq range an export of [since, until) covers: from the first event
    at or after `since` to the last one before `until` (the whole chain when open)."""
    head_seq, _ = await head(session)
    if head_seq == 0:
        return None
    if since is None and until is None:
        return 1, head_seq
    query = select(func.min(AuditEventRow.seq), func.max(AuditEventRow.seq)).where(
        col(AuditEventRow.seq) <= head_seq
    )
    if since is not None:
        query = query.where(col(AuditEventRow.at) >= since)
    if until is not None:
        query = query.where(col(AuditEventRow.at) < until)
    low, high = (await session.execute(query)).one()
    if low is None:
        return None
    return (1 if since is None else low), (head_seq if until is None else high)


def _checkpoint(row: AuditCheckpointRow) -> Checkpoint:
    return Checkpoint(row.seq, row.hash, row.at.isoformat(), row.key_id, row.signature)


async def checkpoints(
    session: AsyncSession, first: int | None = None, last: int | None = None
) -> list[Checkpoint]:
    """Checkpoints by seq, optionally only those in `first..last`."""
    query = select(AuditCheckpointRow).order_by(
        col(AuditCheckpointRow.seq), col(AuditCheckpointRow.id)
    )
    if first is not None:
        query = query.where(col(AuditCheckpointRow.seq) >= first)
    if last is not None:
        query = query.where(col(AuditCheckpointRow.seq) <= last)
    return [_checkpoint(r) for r in (await session.execute(query)).scalars()]


async def latest_checkpoint(session: AsyncSession, key_id: str | None = None) -> Checkpoint | None:
    query = select(AuditCheckpointRow)
    if key_id is not None:
        query = query.where(col(AuditCheckpointRow.key_id) == key_id)
    query = query.order_by(col(AuditCheckpointRow.seq).desc()).limit(1)
    row = (await session.execute(query)).scalar_one_or_none()
    return _checkpoint(row) if row else None


async def insert_checkpoint(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(AuditCheckpointRow), [row])


@dataclass(frozen=True)
class AuditFilter:
    """What `GET /v1/audit` narrows to; every field set must match."""

    subject_kind: str | None = None
    subject_value: str | None = None
    provider: str | None = None
    action_type: str | None = None
    rule: str | None = None
    policy_revision: str | None = None
    actor: str | None = None
    type: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_events(
    session: AsyncSession, where: AuditFilter, after: int | None, limit: int, ascending: bool
) -> list[AuditEventRow]:
    """Events matching `where`, by seq; `after` is the last seq of the previous page."""
    seq = col(AuditEventRow.seq)
    query = select(AuditEventRow)
    if where.subject_kind is not None and where.subject_value is not None:
        # Walk the subject's index entries in seq order: pages stay cheap however
        # long the chain is.
        query = query.join(AuditSubjectRow, col(AuditSubjectRow.seq) == seq).where(
            col(AuditSubjectRow.kind) == where.subject_kind,
            col(AuditSubjectRow.value) == where.subject_value,
        )
        seq = col(AuditSubjectRow.seq)
    for column, value in (
        (col(AuditEventRow.provider), where.provider),
        (col(AuditEventRow.actor), where.actor),
        (col(AuditEventRow.type), where.type),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.since is not None:
        query = query.where(col(AuditEventRow.at) >= where.since)
    if where.until is not None:
        query = query.where(col(AuditEventRow.at) < where.until)
    if where.action_type is not None or where.rule is not None:
        actions = actions_repo.ids_where(where.action_type, where.rule)
        query = query.where(col(AuditEventRow.action_id).in_(actions))
    if where.policy_revision is not None:
        decisions = decisions_repo.ids_of_revision(where.policy_revision)
        query = query.where(
            or_(
                col(AuditEventRow.decision_id).in_(decisions),
                and_(
                    col(AuditEventRow.type).like("policy.%"),
                    col(AuditEventRow.payload)["revision"].as_string() == where.policy_revision,
                ),
            )
        )
    if after is not None:
        query = query.where(seq > after if ascending else seq < after)
    query = query.order_by(seq if ascending else seq.desc()).limit(limit)
    return list((await session.execute(query)).scalars())


# The subject index.


def lock_subject_head_blocking(session: Session) -> int:
    """The last seq the subject index covers, locked until commit (one indexer at a time)."""
    query = select(col(AuditSubjectHeadRow.seq)).where(col(AuditSubjectHeadRow.id) == HEAD_ID)
    return int(session.execute(_locked(session, query)).scalar_one())


def set_subject_head_blocking(session: Session, seq: int) -> None:
    session.execute(
        update(AuditSubjectHeadRow).where(col(AuditSubjectHeadRow.id) == HEAD_ID).values(seq=seq)
    )


def chunk_after_blocking(session: Session, seq: int, limit: int) -> tuple[int, int]:
    """(how many, last seq) of the next `limit` events after `seq` ((0, seq): none)."""
    first = (
        select(col(AuditEventRow.seq))
        .where(col(AuditEventRow.seq) > seq)
        .order_by(col(AuditEventRow.seq))
        .limit(limit)
        .subquery()
    )
    count, last = session.execute(select(func.count(), func.max(first.c.seq))).one()
    return int(count), int(last if last is not None else seq)


def unlisted_events_blocking(session: Session, after: int, upto: int) -> list[Row[Any]]:
    """The fields the subject index is derived from, for the events `after..upto` whose
    writer did not list their subjects."""
    query = (
        select(
            col(AuditEventRow.seq),
            col(AuditEventRow.type),
            col(AuditEventRow.verdict_id),
            col(AuditEventRow.action_id),
            col(AuditEventRow.payload),
        )
        .where(
            col(AuditEventRow.seq) > after,
            col(AuditEventRow.seq) <= upto,
            text(_UNLISTED[session.get_bind().dialect.name]),
        )
        .order_by(col(AuditEventRow.seq))
    )
    return list(session.execute(query).all())


# An event's subjects are listed when they are a JSON array (None is stored as JSON null).
_UNLISTED = {
    "sqlite": "json_type(audit_event.subjects) IS NOT 'array'",
    "postgresql": "jsonb_typeof(audit_event.subjects) IS DISTINCT FROM 'array'",
}


# The listed subjects of the events in a range, indexed in one statement: each [kind,
# value] of an event's `subjects` array becomes a row (the writer kept them to what the
# index holds; DISTINCT drops a subject listed twice).
_INDEX_LISTED = {
    "sqlite": text(
        "INSERT INTO audit_subject (kind, value, seq) "
        "SELECT DISTINCT json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'), e.seq "
        "FROM audit_event AS e, json_each(e.subjects) AS j "
        "WHERE e.seq > :after AND e.seq <= :upto AND json_type(e.subjects) = 'array'"
    ),
    "postgresql": text(
        "INSERT INTO audit_subject (kind, value, seq) "
        "SELECT DISTINCT j.item ->> 0, j.item ->> 1, e.seq "
        "FROM audit_event AS e CROSS JOIN LATERAL jsonb_array_elements("
        "CASE jsonb_typeof(e.subjects) WHEN 'array' THEN e.subjects ELSE '[]' END) AS j(item) "
        "WHERE e.seq > :after AND e.seq <= :upto"
    ),
}


def index_listed_blocking(session: Session, after: int, upto: int) -> None:
    """Index the listed subjects of the events `after..upto` (see `_INDEX_LISTED`)."""
    connection = session.connection()
    connection.execute(_INDEX_LISTED[connection.dialect.name], {"after": after, "upto": upto})


def insert_subjects_blocking(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    # Several rows per event, behind every ingest batch: without SQLAlchemy's work per row.
    insert_many(session.connection(), AuditSubjectRow.__table__, rows)  # type: ignore[attr-defined]


def clear_subjects_blocking(session: Session) -> None:
    session.execute(delete(AuditSubjectRow))
    set_subject_head_blocking(session, 0)


async def subject_events(
    session: AsyncSession, kind: str, value: str, provider: str | None, limit: int
) -> list[AuditEventRow]:
    """The newest `limit` events indexed under the subject, newest first."""
    query = (
        select(AuditEventRow)
        .join(AuditSubjectRow, col(AuditSubjectRow.seq) == col(AuditEventRow.seq))
        .where(col(AuditSubjectRow.kind) == kind, col(AuditSubjectRow.value) == value)
    )
    if provider is not None:
        query = query.where(col(AuditEventRow.provider) == provider)
    query = query.order_by(col(AuditSubjectRow.seq).desc()).limit(limit)
    return list((await session.execute(query)).scalars())


def verdict_ids_under(kind: str, value: str) -> Select[Any]:
    """A subquery of the verdict ids named by events indexed under the subject: verdicts
    about it, and verdicts whose actions target it."""
    return (
        select(col(AuditEventRow.verdict_id))
        .join(AuditSubjectRow, col(AuditSubjectRow.seq) == col(AuditEventRow.seq))
        .where(
            col(AuditSubjectRow.kind) == kind,
            col(AuditSubjectRow.value) == value,
            col(AuditEventRow.verdict_id).is_not(None),
        )
    )


async def subject_values(session: AsyncSession, kind: str) -> list[str]:
    """Every value indexed under this kind of subject."""
    query = select(col(AuditSubjectRow.value)).where(col(AuditSubjectRow.kind) == kind)
    return [str(v) for v in (await session.execute(query.distinct())).scalars()]


async def story_events(
    session: AsyncSession, action_id: str, decision_id: str, verdict_id: str, limit: int
) -> list[AuditEventRow]:
    """The events of an action's story: its verdict, its decision and the action itself."""
    query = (
        select(AuditEventRow)
        .where(
            or_(
                col(AuditEventRow.action_id) == action_id,
                (col(AuditEventRow.decision_id) == decision_id)
                & col(AuditEventRow.action_id).is_(None),
                (col(AuditEventRow.verdict_id) == verdict_id)
                & col(AuditEventRow.decision_id).is_(None),
            )
        )
        .order_by(col(AuditEventRow.seq))
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


# The figures /metrics reads of the chain: its head (`head`) and last checkpoint.
