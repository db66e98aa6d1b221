"""Several replicas on one PostgreSQL decide at once, but never the same subject at
once: a verdict's history includes what another replica decided a moment before about
the same subject, and replicas whose subjects are disjoint do not wait for each other."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from controlplane.engine.base import Evaluation
from controlplane.engine.embedded import EmbeddedEngine
from controlplane.evaluate.service import Decider, Outcome, Pending
from controlplane.store.db import Database
from controlplane.store.repository import lock_keys, try_lock_keys, unlock_all
from tests.support.app import make_settings, serve
from tests.support.databases import PostgresServer, fresh_database
from tests.support.verdicts import new_subject, verdict


@pytest.fixture
def postgres_url(postgres: PostgresServer, tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgresql", tmp_path / "db", postgres) as url:
        yield url


async def test_two_replicas_see_each_others_decisions(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluate = EmbeddedEngine.evaluate_blocking

    def slow(
        self: EmbeddedEngine, inputs: Sequence[dict[str, Any]], loop: asyncio.AbstractEventLoop
    ) -> list[Evaluation]:
        # Both replicas have read their history before either has stored its decision,
        # unless they lock the subjects they decide.
        time.sleep(0.2)
        return evaluate(self, inputs, loop)

    monkeypatch.setattr(EmbeddedEngine, "evaluate_blocking", slow)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    async with (
        serve(make_settings(postgres_url, tmp_path / "a")) as one,
        serve(make_settings(postgres_url, tmp_path / "b")) as two,
    ):
        for _ in range(3):
            # Two keys of one organisation: only the first decision's actions on the org
            # link them; their verdict histories do not.

            # What the second of two such verdicts gets when it sees the first: one
            # replica, one after the other.
            alone, after = pair()
            expected = sorted(
                [kinds_of(await one.submit(alone)), kinds_of(await one.submit(after))]
            )
            assert expected[0] != expected[1], "the policy must escalate the second"
            a, b = pair()
            answers = await asyncio.gather(one.submit(a), two.submit(b))
            # Whichever replica decided second saw what the other had just decided.
            assert sorted(kinds_of(answer) for answer in answers) == expected


def pair() -> tuple[dict[str, Any], dict[str, Any]]:
    """Verdicts about two keys of one organisation, from a key-farm detector."""
    first, other = new_subject(), new_subject()
    other["org_id"] = first["org_id"]
    farm = ["distillation.key_farm"]
    return verdict(subject=first, labels=farm), verdict(subject=other, labels=farm)


def kinds_of(answer: dict[str, Any]) -> list[str]:
    return sorted(a["type"] for a in answer["results"][0]["actions"])


HOLD_SECONDS = 0.4
"""How long each decide holds its subjects after reading their history: long enough
that, without subject locks, both replicas read before either commits."""


@pytest.fixture
def slow_decide(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """Each decide sleeps after reading its history; returns (start, end) of each."""
    original = Decider.decide
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def slow(
        self: Decider,
        session: Session,
        pending: Sequence[Pending],
        now: datetime,
        loop: asyncio.AbstractEventLoop,
    ) -> dict[str, Outcome]:
        started = time.monotonic()
        outcomes = original(self, session, pending, now, loop)
        time.sleep(HOLD_SECONDS)
        with lock:
            spans.append((started, time.monotonic()))
        return outcomes

    monkeypatch.setattr(Decider, "decide", slow)
    return spans


async def test_a_repeat_escalates_whichever_replica_takes_it(
    postgres_url: str, tmp_path: Path, slow_decide: list[tuple[float, float]]
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    async with (
        serve(make_settings(postgres_url, tmp_path / "a")) as one,
        serve(make_settings(postgres_url, tmp_path / "b")) as two,
    ):
        for _ in range(3):
            subject = new_subject()
            first, repeat = verdict(subject=subject), verdict(subject=subject)
            answers = await asyncio.gather(one.submit(first), two.submit(repeat))
            # One decided first and rate-limited the key; the other waited for the key's
            # lock, saw that (and the first verdict) and revoked it.
            assert sorted(kinds_of(answer) for answer in answers) == [
                ["flag_review", "revoke_key"],
                ["rate_limit"],
            ]


async def test_replicas_with_disjoint_subjects_do_not_wait_for_each_other(
    postgres_url: str, tmp_path: Path, slow_decide: list[tuple[float, float]]
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    async with (
        serve(make_settings(postgres_url, tmp_path / "a")) as one,
        serve(make_settings(postgres_url, tmp_path / "b")) as two,
    ):
        slow_decide.clear()
        await asyncio.gather(
            one.submit(verdict(subject=new_subject(ips=["198.51.100.1"]))),
            two.submit(verdict(subject=new_subject(ips=["198.51.100.2"]))),
        )
        (_, end_first), (start_second, _) = sorted(slow_decide)
        # The second began deciding while the first still held its subjects.
        assert start_second < end_first, slow_decide


def _advisory_locks(session: Session, pid: int) -> int:
    return int(
        session.execute(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = :pid"),
            {"pid": pid},
        ).scalar_one()
    )


def test_subject_locks_are_tried_at_once_and_none_is_kept_when_one_is_held(
    postgres_url: str,
) -> None:
    """A batch whose subjects are all free takes their locks without waiting; when
    another replica holds one, the attempt leaves it holding none (it then waits for
    all of them in order, never holding some while waiting for others)."""
    db = Database(postgres_url)
    try:
        with (
            db.blocking.connect().execution_options(isolation_level="AUTOCOMMIT") as other,
            db.blocking.connect().execution_options(isolation_level="AUTOCOMMIT") as mine,
            Session(db.blocking) as probe,
        ):
            mine_pid = mine.execute(text("SELECT pg_backend_pid()")).scalar_one()
            lock_keys(other, [5])
            assert not try_lock_keys(mine, [3, 5, 7])
            assert _advisory_locks(probe, mine_pid) == 0
            assert try_lock_keys(mine, [3, 7, 9])
            assert _advisory_locks(probe, mine_pid) == 3
            unlock_all(other)
            assert try_lock_keys(mine, [5])
            assert _advisory_locks(probe, mine_pid) == 4
            unlock_all(mine)
            assert _advisory_locks(probe, mine_pid) == 0
    finally:
        db.blocking.dispose()
