"""Crash recovery: a verdict stored but never decided is decided when the app starts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session
from sqlmodel import col

from controlplane.domain.verdict import Verdict
from controlplane.evaluate.service import SINK_EVERY, Decided, Decider, Outcome, Pending, Sink
from controlplane.store.db import Database
from controlplane.store.models import ActionRow, AuditEventRow, DecisionRow, VerdictRow
from controlplane.store.types import utcnow
from tests.support.app import make_settings, serve
from tests.support.store import add, count, fetch
from tests.support.verdicts import new_subject, verdict


def received_row(document: dict[str, Any], offset: int = 0) -> VerdictRow:
    """A verdict row as ingest stores it before deciding: status `received`."""
    parsed = Verdict.model_validate(document)
    return VerdictRow(
        id=parsed.id,
        provider=parsed.provider,
        detector_name=parsed.detector.name,
        detector_version=parsed.detector.version,
        account_id=parsed.subject.account_id,
        api_key_id=parsed.subject.api_key_id,
        org_id=parsed.subject.org_id,
        score=parsed.score,
        confidence=parsed.confidence,
        observed_at=parsed.observed_at,
        received_at=utcnow() - timedelta(minutes=5) + timedelta(microseconds=offset),
        body=parsed.document(),
        content_hash=parsed.content_hash(),
        status="received",
        trace_id=None,
    )


async def test_startup_decides_verdicts_left_received(database_url: str, tmp_path: Path) -> None:
    subject = new_subject()
    first, repeat = verdict(subject=subject), verdict(subject=subject)
    db = Database(database_url)
    try:
        await add(db, received_row(first), received_row(repeat, offset=1))
    finally:
        await db.dispose()

    async with serve(make_settings(database_url, tmp_path)) as api:
        # No request was made: startup recovery decided both, in the order received.
        decisions = await fetch(api.runtime.db, DecisionRow)
        one = (await api.client.get(f"/v1/verdicts/{first['id']}")).json()
        two = (await api.client.get(f"/v1/verdicts/{repeat['id']}")).json()
        recorded = await count(
            api.runtime.db, AuditEventRow, col(AuditEventRow.type) == "decision.recorded"
        )

    assert sorted(d.verdict_id for d in decisions) == sorted([first["id"], repeat["id"]])
    assert (one["status"], one["decision_status"]) == ("decided", "ok")
    assert [a["type"] for a in one["actions"]] == ["rate_limit"]
    assert sorted(a["type"] for a in two["actions"]) == ["flag_review", "revoke_key"]
    assert recorded == 2


def decider_fails_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the first non-empty decide() fail as an engine crash would; the list it
    returns records each call."""
    original = Decider.decide
    calls: list[int] = []

    def fails_once(
        self: Decider,
        reading: tuple[Session, Session],
        pending: Sequence[Pending],
        now: datetime,
        loop: asyncio.AbstractEventLoop,
        sink: Sink | None = None,
    ) -> Decided:
        if pending:
            calls.append(len(calls) + 1)
            if len(calls) == 1:
                raise RuntimeError("the engine fell over")
        return original(self, reading, pending, now, loop, sink)

    monkeypatch.setattr(Decider, "decide", fails_once)
    return calls


async def test_verdict_whose_decision_failed_is_decided_at_the_next_start(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = decider_fails_once(monkeypatch)
    document = verdict()

    async with serve(make_settings(database_url, tmp_path)) as api:
        response = await api.client.post("/v1/verdicts", json=document)
        stored = (await api.client.get(f"/v1/verdicts/{document['id']}")).json()
        undecided = await count(api.runtime.db, DecisionRow)

    # Not a silent 202: a fault is a 5xx the detector retries; the verdict is kept.
    assert response.status_code == 500
    assert response.json()["error"] == "decision_failed"
    assert (stored["status"], stored["decision_id"]) == ("received", None)
    assert undecided == 0

    async with serve(make_settings(database_url, tmp_path)) as api:
        after = (await api.client.get(f"/v1/verdicts/{document['id']}")).json()
        rows = await fetch(api.runtime.db, VerdictRow, col(VerdictRow.id) == document["id"])

    assert (after["status"], after["decision_status"]) == ("decided", "ok")
    assert after["decision_id"] is not None
    assert [a["type"] for a in after["actions"]] == ["rate_limit"]
    assert [r.status for r in rows] == ["decided"]
    assert calls == [1, 2], "the decider failed once, then decided at the next start"


async def test_a_retry_decides_a_verdict_whose_first_decision_failed(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = decider_fails_once(monkeypatch)
    document = verdict()

    async with serve(make_settings(database_url, tmp_path)) as api:
        first = await api.client.post("/v1/verdicts", json=document)
        retry = (await api.client.post("/v1/verdicts", json=document)).json()
        decisions = await count(api.runtime.db, DecisionRow)

    assert first.status_code == 500, "stored, not decided: the detector retries"
    [result] = retry["results"]
    assert (retry["accepted"], retry["duplicates"]) == (0, 1)
    assert (result["status"], result["duplicate"]) == ("decided", True)
    assert [a["type"] for a in result["actions"]] == ["rate_limit"]
    assert decisions == 1
    assert calls == [1, 2], "the first decision failed, the retry decided"


async def test_a_fault_after_decisions_were_written_leaves_none_of_them(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a batch's decisions and actions are written while it is decided:
    a fault after SINK_EVERY of them were written rolls them back with the rest, and
    the verdicts are stored as received, each one once."""
    original = Decider._outcome
    seen: list[str] = []
    fail_at = SINK_EVERY + SINK_EVERY // 2

    def fails_late(self: Decider, *args: Any) -> Outcome:
        seen.append("x")
        if len(seen) == fail_at:
            raise RuntimeError("the engine fell over mid-batch")
        return original(self, *args)

    monkeypatch.setattr(Decider, "_outcome", fails_late)
    batch = [verdict(subject=new_subject()) for _ in range(2 * SINK_EVERY)]
    async with serve(make_settings(database_url, tmp_path)) as api:
        response = await api.client.post("/v1/verdicts", json={"verdicts": batch})
        ids = [v["id"] for v in batch]
        stored = await fetch(api.runtime.db, VerdictRow, col(VerdictRow.id).in_(ids))
        decisions = await count(api.runtime.db, DecisionRow, col(DecisionRow.verdict_id).in_(ids))
        actions = await count(api.runtime.db, ActionRow, col(ActionRow.verdict_id).in_(ids))

    assert response.status_code == 500
    assert response.json()["error"] == "decision_failed"
    assert len(seen) == fail_at, "the fault came after the first outcomes were handed over"
    assert sorted(r.id for r in stored) == sorted(ids)
    assert {r.status for r in stored} == {"received"}
    assert (decisions, actions) == (0, 0)
