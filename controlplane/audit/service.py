"""Appending to the audit chain, and reading it back: filtered pages and the whole story
of one subject. Callers pass drafts; the chain order is decided here. Everything works
in the session its caller holds, except `export`, a stream with a session of its own.

A query by subject reads the subject index: its caller brings the index up to date
first (`subjects.catch_up`, a job), so an event committed before the request is never
missing from the answer."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from controlplane.audit import repository
from controlplane.audit.chain import Canonical, EventDraft, canonical_parts
from controlplane.audit.export import FORMAT_NAME, FORMAT_VERSION, End, Format
from controlplane.audit.repository import AuditFilter as AuditFilter
from controlplane.domain.vocabulary import SubjectKind
from controlplane.evaluate import repository as decisions_repo
from controlplane.ingest import repository as verdicts_repo
from controlplane.plan import repository as actions_repo
from controlplane.store.db import Database
from controlplane.store.models import ActionRow, AuditEventRow, DecisionRow, VerdictRow
from controlplane.store.types import utcnow
from controlplane.telemetry import metrics


async def record(session: AsyncSession, drafts: Sequence[EventDraft]) -> None:
    """Chain `drafts` after the current head, in the caller's transaction."""
    if drafts:
        await session.run_sync(record_blocking, list(drafts))


def record_blocking(
    session: Session, drafts: Sequence[EventDraft], parts: Sequence[Canonical] | None = None
) -> None:
    """`record` on a sync session (the decide thread's); `parts`: the drafts'
    `canonical_parts`, when built ahead."""
    if not drafts:
        return
    if parts is None:
        parts = [canonical_parts(d) for d in drafts]
    seq, prev = repository.lock_head(session)
    rows: list[dict[str, object]] = []
    for draft, canonical in zip(drafts, parts, strict=True):
        seq += 1
        digest = canonical.hash(seq, prev)
        rows.append(
            {
                "seq": seq,
                "at": draft.at,
                "type": draft.type,
                "actor": draft.actor,
                "provider": draft.provider,
                "verdict_id": draft.verdict_id,
                "decision_id": draft.decision_id,
                "action_id": draft.action_id,
                "trace_id": draft.trace_id,
                "payload": draft.payload,
                "prev_hash": prev,
                "hash": digest,
                "subjects": None if draft.subjects is None else _listed(draft.subjects),
            }
        )
        prev = digest
    repository.append(session, rows, seq, prev)
    # Counted for /metrics when (and only if) the caller's transaction commits.
    metrics.count_on_commit(session, Counter(d.type for d in drafts))


def _listed(subjects: Sequence[tuple[str, str]]) -> list[list[str]]:
    """One [kind, value] per subject the index can hold (as `subjects.index_next` keeps)."""
    return [[k, v] for k, v in dict.fromkeys(subjects) if len(k) <= 10 and 0 < len(v) <= 200]


async def list_events(
    session: AsyncSession, where: AuditFilter, after: int | None, limit: int, ascending: bool
) -> list[AuditEventRow]:
    """A page of events (with a subject filter, after the subject index caught up)."""
    return await repository.list_events(session, where, after, limit, ascending)


@dataclass
class History:
    """Everything recorded about one subject, each list oldest first."""

    verdicts: list[VerdictRow]
    decisions: list[DecisionRow]
    actions: list[ActionRow]
    direct: set[str]
    """Ids of the actions that target the subject itself (the others were planned from
    verdicts about it but aim at another of its identifiers)."""
    events: list[AuditEventRow]
    truncated: bool


async def subject_history(
    session: AsyncSession, kind: SubjectKind, value: str, provider: str | None, limit: int
) -> History:
    """Verdicts about the subject (or whose actions target it), their decisions, the
    actions (current state) and the audit events, the newest `limit` of each (after the
    subject index caught up)."""
    events = await repository.subject_events(session, kind.value, value, provider, limit + 1)
    verdicts = await verdicts_repo.newest_verdicts(
        session, repository.verdict_ids_under(kind.value, value), provider, limit + 1
    )
    truncated = len(events) > limit or len(verdicts) > limit
    events, verdicts = events[:limit], verdicts[:limit]
    decided = await decisions_repo.decisions_of_verdicts(session, [v.id for v in verdicts])
    planned = await actions_repo.actions_of_decisions(session, [d.id for d in decided.values()])
    targeting = await actions_repo.list_actions(
        session,
        actions_repo.ActionFilter(target_kind=kind.value, target_value=value, provider=provider),
        None,
        limit + 1,
    )
    truncated = truncated or len(targeting) > limit
    actions = {a.id: a for rows in planned.values() for a in rows}
    actions.update((a.id, a) for a in targeting[:limit])
    return History(
        verdicts=sorted(verdicts, key=lambda v: (v.received_at, v.id)),
        decisions=sorted(decided.values(), key=lambda d: (d.decided_at, d.id)),
        actions=sorted(actions.values(), key=lambda a: (a.created_at, a.id)),
        direct={
            a.id
            for a in actions.values()
            if a.target_kind == kind.value and a.target_value == value
        },
        events=sorted(events, key=lambda e: e.seq),
        truncated=truncated,
    )


async def export(
    db: Database, fmt: Format, since: datetime | None, until: datetime | None, chunk: int = 5000
) -> AsyncIterator[str]:
    """The export of [since, until) as text chunks: header, checkpoints, events, end.

    The range is the contiguous seq run from the first event at or after `since` to the
    last one before `until`, so it can be verified link by link; an event a little
    outside the window may ride along (`at` is not strictly ordered by seq when
    writers overlap). Rows come through a server-side cursor: memory stays flat.

    A stream outlives the request that asked for it, so it reads in a session of its
    own, opened at its first chunk and closed after its last (the CLI gives it its
    database as well)."""
    async with db.read() as session:
        bounds = await repository.export_bounds(session, since, until)
        first, last = bounds if bounds else (None, None)
        yield fmt.header(
            {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "exported_at": utcnow().isoformat(),
                "since": since.isoformat() if since else None,
                "until": until.isoformat() if until else None,
                "first_seq": first,
                "last_seq": last,
            }
        )
        events, last_hash = 0, None
        if first is not None and last is not None:
            checkpoints = await repository.checkpoints(session, first, last)
            if checkpoints:
                yield fmt.checkpoints(checkpoints)
            async with aclosing(repository.stream_events(session, first, last, chunk)) as rows_of:
                async for rows in rows_of:
                    yield fmt.events(rows)
                    events += len(rows)
                    last_hash = rows[-1].hash
        yield fmt.end(End(events, first, last, last_hash))
