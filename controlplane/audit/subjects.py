"""The subject index: which subjects each audit event concerns.

An event names a verdict, a decision or an action by id; "everything about key_3" needs
the subjects behind those ids. Looking them up while appending would put two more
queries and several index rows on every ingest batch, so the index follows the chain
instead: `catch_up` indexes the events after the last one indexed, from a periodic job
and before every query that filters by subject (so answers are never behind).

It is derived data: not hashed, rebuilt from the chain by `rebuild`. Which subjects an
event concerns:
- the subject of its verdict (account, api_key, org, each IP);
- the target of its action;
- a `subject` or `target` object `{kind, value}` in its payload (exemptions, and any
  event type added later that names one);
- a CIDR indicator (`indicator.added` with kind `cidr`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.orm import Session

from controlplane.audit import repository
from controlplane.domain.vocabulary import SubjectKind
from controlplane.enforce.targets import TargetError, canonical_target
from controlplane.errors import InvalidInput
from controlplane.ingest import repository as verdicts_repo
from controlplane.plan import repository as actions_repo
from controlplane.store.db import Database

CHUNK = 1000
"""Events indexed per transaction (on SQLite, the write lock is held for one chunk)."""


def normalise(kind: SubjectKind, value: str, field: str = "subject_value") -> str:
    """One spelling per subject, as stored: IPs canonical (IPv4-mapped IPv6 is IPv4),
    CIDRs as their network (`203.0.113.7/24` is `203.0.113.0/24`)."""
    value = value.strip()
    if not value:
        raise InvalidInput(f"{field} is empty: name the {kind.value}")
    if kind not in (SubjectKind.IP, SubjectKind.CIDR):
        return value
    try:
        return canonical_target(kind.value, value)
    except TargetError:
        raise InvalidInput(
            f"{field} {value!r} is not a valid {kind.value}",
            details=[{"field": field, "message": f"not a valid {kind.value}"}],
        ) from None


def _named(payload: dict[str, Any], event_type: str) -> list[tuple[str, str]]:
    found = []
    for key in ("subject", "target"):
        item = payload.get(key)
        if isinstance(item, dict) and isinstance(item.get("kind"), str):
            value = item.get("value")
            if isinstance(value, str) and value:
                found.append((item["kind"], value))
    if event_type == "indicator.added" and payload.get("kind") == "cidr":
        value = payload.get("value")
        if isinstance(value, str):
            found.append(("cidr", value))
    return found


async def catch_up(db: Database, chunk: int = CHUNK) -> int:
    """Index every event not indexed yet; returns how many were. A job (the periodic
    one, and before every query by subject), run on a sync session in a worker thread:
    a backlog of events is work for a CPU, not for the event loop that answers
    requests. One transaction per chunk, so no writer waits for the whole backlog (on
    SQLite the chunks queue with the decide thread's groups on the process's writer
    lock). One indexer runs at a time (the index head row is locked), across replicas
    too."""
    return await asyncio.to_thread(catch_up_blocking, db, chunk)


def catch_up_blocking(db: Database, chunk: int = CHUNK) -> int:
    """(a worker thread) `catch_up`'s chunks."""
    total = 0
    while True:
        with db.write_blocking() as session, session.begin():
            done = index_next(session, chunk)
        total += done
        if done < chunk:
            return total


def index_next(session: Session, chunk: int = CHUNK) -> int:
    """Index the next `chunk` events after the last one indexed; returns how many. The
    subjects their writer listed (the decide path's events) are indexed in SQL; the
    others are derived here from their verdict, action and payload."""
    done = repository.lock_subject_head_blocking(session)
    count, upto = repository.chunk_after_blocking(session, done, chunk)
    if not count:
        return 0
    repository.index_listed_blocking(session, done, upto)
    events = repository.unlisted_events_blocking(session, done, upto)
    verdicts = verdicts_repo.subjects_of_blocking(
        session, sorted({e.verdict_id for e in events if e.verdict_id})
    )
    actions = actions_repo.action_targets_blocking(
        session, sorted({e.action_id for e in events if e.action_id})
    )
    rows: list[dict[str, Any]] = []
    for event in events:
        subjects = set(verdicts.get(event.verdict_id, ()))
        if event.action_id in actions:
            subjects.add(actions[event.action_id])
        subjects.update(_named(event.payload or {}, event.type))
        rows.extend(
            {"kind": kind, "value": value, "seq": event.seq}
            for kind, value in sorted(subjects)
            if len(kind) <= 10 and len(value) <= 200
        )
    repository.insert_subjects_blocking(session, rows)
    repository.set_subject_head_blocking(session, upto)
    return count


async def rebuild(db: Database) -> int:
    """Drop the index and index the whole chain again (after a restore, or a suspicion
    that someone edited the index: it is not covered by the hash chain). A job: the
    index is dropped in one transaction, then caught up chunk by chunk (in a worker
    thread, as `catch_up`)."""
    return await asyncio.to_thread(rebuild_blocking, db)


def rebuild_blocking(db: Database) -> int:
    """(a worker thread) `rebuild`'s transactions."""
    with db.write_blocking() as session, session.begin():
        repository.lock_subject_head_blocking(session)
        repository.clear_subjects_blocking(session)
    return catch_up_blocking(db)
