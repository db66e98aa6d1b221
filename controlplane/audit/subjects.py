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

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.audit import repository
from controlplane.domain.vocabulary import SubjectKind
from controlplane.enforce.targets import TargetError, canonical_target
from controlplane.errors import InvalidInput
from controlplane.ingest import repository as verdicts_repo
from controlplane.plan import repository as actions_repo
from controlplane.store.db import Database

CHUNK = 5000


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
    one, and before every query by subject): one transaction per chunk, so no writer
    waits for the whole backlog. One indexer runs at a time (the index head row is
    locked), across replicas too."""
    total = 0
    while True:
        async with db.transaction() as session:
            done = await index_next(session, chunk)
        total += done
        if done < chunk:
            return total


async def index_next(session: AsyncSession, chunk: int = CHUNK) -> int:
    """Index the next `chunk` events after the last one indexed; returns how many."""
    done = await repository.lock_subject_head(session)
    events = await repository.events_after(session, done, chunk)
    if not events:
        return 0
    verdicts = await verdicts_repo.subjects_of(
        session, sorted({e.verdict_id for e in events if e.verdict_id})
    )
    actions = await actions_repo.action_targets(
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
    await repository.insert_subjects(session, rows)
    await repository.set_subject_head(session, events[-1].seq)
    return len(events)


async def rebuild(db: Database) -> int:
    """Drop the index and index the whole chain again (after a restore, or a suspicion
    that someone edited the index: it is not covered by the hash chain). A job: the
    index is dropped in one transaction, then caught up chunk by chunk."""
    async with db.transaction() as session:
        await repository.lock_subject_head(session)
        await repository.clear_subjects(session)
    return await catch_up(db)
