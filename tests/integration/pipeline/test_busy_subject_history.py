"""A busy account's history: read whole when a batch's subjects have few earlier
verdicts, counted in the database past a cap. Both ways give every verdict of a batch
the same `verdicts_30d` and `recent_verdicts`, exactly: those about its account or key,
observed in the 30 days before it and received before it, the batch's own earlier ones
included, a stored verdict of the batch (a retry) counted once."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, insert

from controlplane.domain.verdict import Verdict
from controlplane.evaluate import context, repository
from controlplane.evaluate.context import HISTORY_WINDOW, Lookups, PriorVerdict
from controlplane.ingest import repository as verdicts_repo
from controlplane.store.db import Database, sync_url
from controlplane.store.models import VerdictRow
from tests.support.verdicts import verdict

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def stored_row(
    i: int, account: str | None, key: str | None, observed: datetime, received: datetime
) -> dict[str, Any]:
    return {
        "id": f"old-{i:05d}",
        "provider": "lab-a",
        "detector_name": f"det-{i % 3}",
        "detector_version": "1",
        "account_id": account,
        "api_key_id": key,
        "org_id": None,
        "score": round(0.5 + (i % 50) / 100, 2),
        "confidence": 0.8,
        "observed_at": observed,
        "received_at": received,
        "body": {},
        "content_hash": "0" * 64,
        "status": "decided",
    }


def history(rng: random.Random) -> list[dict[str, Any]]:
    """About `acct_busy` and its keys, over 40 days, some received after the batch
    (another replica's), some stamped alike (ties), plus one quiet account."""
    rows = []
    for i in range(1_500):
        observed = T0 - timedelta(minutes=rng.randrange(0, 40 * 24 * 60))
        if i % 97 == 0:
            observed = T0 - HISTORY_WINDOW + timedelta(seconds=rng.randrange(-90, 90))
        received = observed + timedelta(seconds=rng.randrange(0, 600))
        if i % 41 == 0:
            received = T0 + timedelta(seconds=rng.randrange(1, 30))
        account, key = rng.choice(
            [
                ("acct_busy", "key_a"),
                ("acct_busy", "key_b"),
                (None, "key_a"),
                ("acct_other", "key_b"),
                ("acct_busy", None),
            ]
        )
        rows.append(stored_row(i, account, key, observed, received))
    for i in range(1_500, 1_510):
        rows.append(
            stored_row(
                i,
                "acct_quiet",
                "key_quiet",
                T0 - timedelta(days=1, minutes=i),
                T0 - timedelta(days=1),
            )
        )
    # Two of the batch's own verdicts, stored before (they are being retried).
    rows.append(
        stored_row(
            90_001, "acct_busy", "key_a", T0 - timedelta(seconds=5), T0 + timedelta(seconds=3)
        )
    )
    rows[-1]["id"] = "batch-1"
    rows.append(
        stored_row(
            90_002, "acct_quiet", "key_quiet", T0 - timedelta(seconds=4), T0 + timedelta(seconds=4)
        )
    )
    rows[-1]["id"] = "batch-2"
    return rows


def batch() -> list[tuple[Verdict, datetime]]:
    """(verdict, received_at): observed at different times, received one after another."""
    subjects = [
        ("batch-0", "acct_busy", "key_a", T0),
        ("batch-1", "acct_busy", "key_a", T0 - timedelta(seconds=5)),
        ("batch-2", "acct_quiet", "key_quiet", T0 - timedelta(seconds=4)),
        ("batch-3", "acct_busy", "key_b", T0 - timedelta(hours=3)),
        ("batch-4", None, "key_a", T0 + timedelta(minutes=2)),
        ("batch-5", "acct_other", "key_b", T0 - timedelta(days=2)),
        ("batch-6", "acct_busy", "key_a", T0 + timedelta(seconds=1)),
    ]
    out = []
    for n, (vid, account, key, observed) in enumerate(subjects):
        subject: dict[str, Any] = {"ips": ["198.51.100.7"]}
        if account:
            subject["account_id"] = account
        if key:
            subject["api_key_id"] = key
        document = verdict(
            id=vid, subject=subject, observed_at=observed.isoformat().replace("+00:00", "Z")
        )
        out.append((Verdict.model_validate(document), T0 + timedelta(seconds=n + 1)))
    return out


def expected(
    rows: list[dict[str, Any]], batch_items: list[tuple[Verdict, datetime]]
) -> dict[str, tuple[int, list[str]]]:
    """Brute force, from the definition."""
    batch_ids = {v.id for v, _ in batch_items}
    known = [
        (r["id"], r["account_id"], r["api_key_id"], r["observed_at"], r["received_at"])
        for r in rows
        if r["id"] not in batch_ids
    ] + [
        (v.id, v.subject.account_id, v.subject.api_key_id, v.observed_at, at)
        for v, at in batch_items
    ]
    out = {}
    for v, at in batch_items:
        since = v.observed_at - HISTORY_WINDOW
        prior = [
            k
            for k in known
            if (
                (v.subject.account_id and k[1] == v.subject.account_id)
                or (v.subject.api_key_id and k[2] == v.subject.api_key_id)
            )
            and k[3] >= since
            and k[4] < at
        ]
        prior.sort(key=lambda k: (k[3], k[4], k[0]), reverse=True)
        out[v.id] = (len(prior), [k[0] for k in prior[: context.RECENT_VERDICTS]])
    return out


@pytest.fixture
def seeded(database_url: str) -> Iterator[tuple[Database, list[dict[str, Any]]]]:
    rows = history(random.Random(7))
    engine = create_engine(sync_url(database_url))
    with engine.begin() as conn:
        conn.execute(insert(VerdictRow), rows)
    engine.dispose()
    db = Database(database_url)
    yield db, rows


def decided_history(
    db: Database, items: list[tuple[Verdict, datetime]]
) -> tuple[Lookups, dict[str, tuple[int, list[str]]]]:
    lookups = Lookups()
    asks = [
        repository.HistoryAsk(
            "lab-a",
            v.id,
            v.subject.account_id,
            v.subject.api_key_id,
            v.observed_at - HISTORY_WINDOW,
            at,
        )
        for v, at in items
    ]
    with db.read_blocking() as session:
        repository.fill_prior(session, lookups, asks, verdicts_repo)
    for v, at in items:
        lookups.add_own(
            v.provider,
            PriorVerdict(
                v.id,
                v.subject.account_id,
                v.subject.api_key_id,
                v.observed_at,
                at,
                v.score,
                v.confidence,
                v.detector.name,
            ),
        )
    found = {}
    for v, at in items:
        count, recent = context._prior(v, at, lookups)
        found[v.id] = (count, [p.id for p in recent])
    return lookups, found


async def test_read_whole_when_few(seeded: tuple[Database, list[dict[str, Any]]]) -> None:
    db, rows = seeded
    try:
        items = batch()
        lookups, found = decided_history(db, items)
        assert not lookups.pair_history, "a few thousand rows are read whole"
        assert found == expected(rows, items)
    finally:
        await db.dispose()


async def test_counted_in_the_database_past_the_cap(
    seeded: tuple[Database, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, rows = seeded
    monkeypatch.setattr(repository, "CHUNK_ROWS", 40)
    monkeypatch.setattr(repository, "HOT_HISTORY", 20)
    try:
        items = batch()
        lookups, found = decided_history(db, items)
        busy = {pair for pair in lookups.pair_history}
        assert ("lab-a", "acct_busy", "key_a") in busy and ("lab-a", None, "key_a") in busy
        assert ("lab-a", "acct_quiet", "key_quiet") not in busy, "a quiet pair is read whole"
        want = expected(rows, items)
        assert found == want
        assert want["batch-0"][0] > 100, "the busy account has a history to count"
    finally:
        await db.dispose()
