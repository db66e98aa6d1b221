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

from controlplane.domain.verdict import Verdict
from controlplane.engine.base import Evaluation
from controlplane.engine.embedded import EmbeddedEngine
from controlplane.engine.runtime import EngineSlot
from controlplane.evaluate.service import Decided, Decider, Pending, Sink, subject_locks
from controlplane.ingest import repository as verdicts_repo
from controlplane.store.db import Database
from controlplane.store.repository import lock_keys, try_lock_each, unlock_all, unlock_keys
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
    ) -> Iterator[Evaluation]:
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
        reading: tuple[Session, Session],
        pending: Sequence[Pending],
        now: datetime,
        loop: asyncio.AbstractEventLoop,
        sink: Sink | None = None,
    ) -> Decided:
        started = time.monotonic()
        outcomes = original(self, reading, pending, now, loop, sink)
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


def test_subject_locks_are_tried_at_once_and_only_the_free_ones_are_taken(
    postgres_url: str,
) -> None:
    """The locks free are taken in one statement without waiting; those another
    replica holds are not; released one by one or all at once."""
    db = Database(postgres_url)
    try:
        with (
            db.blocking.connect().execution_options(isolation_level="AUTOCOMMIT") as other,
            db.blocking.connect().execution_options(isolation_level="AUTOCOMMIT") as mine,
            Session(db.blocking) as probe,
        ):
            mine_pid = mine.execute(text("SELECT pg_backend_pid()")).scalar_one()
            lock_keys(other, [5])
            assert try_lock_each(mine, [3, 5, 7]) == {3, 7}
            assert _advisory_locks(probe, mine_pid) == 2
            unlock_keys(mine, [3])
            assert _advisory_locks(probe, mine_pid) == 1
            unlock_all(other)
            assert try_lock_each(mine, [5, 9]) == {5, 9}
            assert _advisory_locks(probe, mine_pid) == 3
            unlock_all(mine)
            assert _advisory_locks(probe, mine_pid) == 0
    finally:
        db.blocking.dispose()


def _fail_lock_waits_after_a_while(connection: Any) -> None:
    """New connections to this database give up a lock wait after 10 s: a decider that
    waits where it should not fails the test instead of hanging it."""
    name = connection.execute(text("SELECT current_database()")).scalar_one()
    connection.exec_driver_sql(f"ALTER DATABASE \"{name}\" SET lock_timeout = '10s'")


def _parts(*subjects: dict[str, Any]) -> list[list[Verdict]]:
    return [[Verdict.model_validate(verdict(subject=s))] for s in subjects]


def test_a_batch_goes_on_without_the_requests_whose_subjects_another_replica_holds(
    postgres_url: str,
) -> None:
    """Another replica decides a subject of the second request: the first and the
    fourth go now; the second waits for the next batch, and so does the third, which
    shares a free subject with it (a subject's verdicts keep their order). Only the
    subjects of the requests that go stay locked."""
    a, b, c, d = (new_subject(ips=[f"198.51.100.{i}"]) for i in range(1, 5))
    c["org_id"] = b["org_id"]
    parts = _parts(a, b, c, d)
    db = Database(postgres_url)
    decider = Decider(db, EngineSlot(), verdicts=verdicts_repo)
    try:
        with (
            db.blocking.connect().execution_options(isolation_level="AUTOCOMMIT") as other,
            Session(db.blocking) as probe,
        ):
            _fail_lock_waits_after_a_while(other)
            held = [k for k in subject_locks(parts[1]) if k not in subject_locks(parts[2])]
            lock_keys(other, held[:1])
            with decider.exclusive(parts) as chosen:
                assert chosen == [0, 3]
                others = other.execute(text("SELECT pg_backend_pid()")).scalar_one()
                mine = probe.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid <> "
                        ":other AND database = (SELECT oid FROM pg_database "
                        "WHERE datname = current_database())"
                    ),
                    {"other": others},
                ).scalar_one()
                assert mine == len(subject_locks(parts[0] + parts[3]))
            unlock_all(other)
    finally:
        decider.close()
        db.blocking.dispose()


def test_a_batch_whose_first_request_is_held_waits_for_all_its_subjects(
    postgres_url: str,
) -> None:
    """The first request is never left out (it may have been left out once already):
    the batch waits, holding nothing, until the other replica is done, then goes whole."""
    parts = _parts(new_subject(ips=["198.51.100.1"]), new_subject(ips=["198.51.100.2"]))
    db = Database(postgres_url)
    decider = Decider(db, EngineSlot(), verdicts=verdicts_repo)
    entered = threading.Event()
    chosen: list[int] = []

    def decide() -> None:
        with decider.exclusive(parts) as going:
            chosen.extend(going)
            entered.set()

    try:
        with db.blocking.connect().execution_options(isolation_level="AUTOCOMMIT") as other:
            lock_keys(other, subject_locks(parts[0])[:1])
            worker = threading.Thread(target=decide)
            worker.start()
            assert not entered.wait(0.5), "it went on while the first request was held"
            unlock_all(other)
            worker.join(10)
        assert entered.is_set() and chosen == [0, 1]
    finally:
        decider.close()
        db.blocking.dispose()


async def test_a_request_another_replica_holds_is_answered_once_it_lets_go(
    postgres_url: str, tmp_path: Path
) -> None:
    """End to end: two requests queued together while the decide thread waits (its
    group's first request is held); when that one is let go, the next group decides the
    free request and leaves the held one for later, then decides it once let go."""
    first, free, held = (verdict(subject=new_subject(ips=[f"198.51.100.{i}"])) for i in (1, 2, 3))
    first_key, held_key = (subject_locks([Verdict.model_validate(v)])[0] for v in (first, held))
    db = Database(postgres_url)
    try:
        with db.blocking.connect().execution_options(isolation_level="AUTOCOMMIT") as other:
            lock_keys(other, [first_key, held_key])
            async with serve(make_settings(postgres_url, tmp_path)) as app:
                before = _deferred(await app.client.get("/metrics"))
                waiting = asyncio.create_task(app.submit(first))
                await asyncio.sleep(0.3)  # its group waits for first_key
                go = asyncio.create_task(app.submit(free))
                await asyncio.sleep(0.05)
                stay = asyncio.create_task(app.submit(held))
                await asyncio.sleep(0.3)  # both queued behind it
                unlock_keys(other, [first_key])
                for task in (waiting, go):
                    answer = await asyncio.wait_for(task, 30)
                    assert answer["results"][0]["status"] == "decided"
                assert not stay.done()
                assert _deferred(await app.client.get("/metrics")) == before + 1
                unlock_all(other)
                later = await asyncio.wait_for(stay, 30)
                assert later["results"][0]["status"] == "decided"
    finally:
        db.blocking.dispose()


def _deferred(response: Any) -> float:
    for line in response.text.splitlines():
        if line.startswith("tollgate_decide_deferred_requests_total "):
            return float(line.split()[1])
    raise AssertionError("no tollgate_decide_deferred_requests_total in /metrics")
