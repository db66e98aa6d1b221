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
from controlplane.evaluate.service import Decider, Outcome, Pending
from controlplane.store.db import Database
from controlplane.store.models import AuditEventRow, DecisionRow, VerdictRow
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
        session: Session,
        pending: Sequence[Pending],
        now: datetime,
        loop: asyncio.AbstractEventLoop,
    ) -> dict[str, Outcome]:
        if pending:
            calls.append(len(calls) + 1)
            if len(calls) == 1:
                raise RuntimeError("the engine fell over")
        return original(self, session, pending, now, loop)

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
