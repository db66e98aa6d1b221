"""Reading and seeding the store directly, beside the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlmodel import SQLModel, col

from controlplane.audit.chain import GENESIS_HASH, EventDraft, event_hash
from controlplane.store.db import Database
from controlplane.store.models import AuditEventRow, ExemptionRow, IndicatorRow, new_id
from controlplane.store.types import utcnow

Row = TypeVar("Row", bound=SQLModel)


async def fetch(db: Database, model: type[Row], *where: Any) -> list[Row]:
    async with db.read() as session:
        return list((await session.execute(select(model).where(*where))).scalars())


async def count(db: Database, model: type[SQLModel], *where: Any) -> int:
    async with db.read() as session:
        return int(
            (
                await session.execute(select(func.count()).select_from(model).where(*where))
            ).scalar_one()
        )


async def add(db: Database, *rows: SQLModel) -> None:
    async with db.write() as session, session.begin():
        session.add_all(rows)


def exemption(
    provider: str, kind: str, value: str, *, expires_at: datetime | None = None
) -> ExemptionRow:
    return ExemptionRow(
        id=new_id("exm"),
        provider=provider,
        subject_kind=kind,
        subject_value=value,
        owner="trust-and-safety@test",
        reason="contracted bulk processing",
        expires_at=expires_at,
        created_at=utcnow(),
    )


def indicator(cidr: str, *, source: str = "lab-b", confidence: float = 0.9) -> IndicatorRow:
    return IndicatorRow(
        id=new_id("ind"),
        kind="cidr",
        value=cidr,
        source=source,
        confidence=confidence,
        tlp="amber",
        expires_at=None,
        created_at=utcnow(),
    )


async def audit_events(db: Database) -> list[AuditEventRow]:
    async with db.read() as session:
        rows = await session.execute(select(AuditEventRow).order_by(col(AuditEventRow.seq)))
        return list(rows.scalars())


def assert_chain_intact(events: list[AuditEventRow]) -> None:
    """seq is 1..N without gaps, each prev_hash is the previous hash (genesis first),
    and each hash recomputes from the stored event."""
    assert events, "the audit chain is empty"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    prev = GENESIS_HASH
    for event in events:
        assert event.prev_hash == prev, f"event {event.seq} does not link to {event.seq - 1}"
        draft = EventDraft(
            type=event.type,
            actor=event.actor,
            at=event.at,
            provider=event.provider,
            verdict_id=event.verdict_id,
            decision_id=event.decision_id,
            action_id=event.action_id,
            trace_id=event.trace_id,
            payload=event.payload,
        )
        assert event.hash == event_hash(event.seq, draft, prev), f"event {event.seq}: bad hash"
        prev = event.hash
