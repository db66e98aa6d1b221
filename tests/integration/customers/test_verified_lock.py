"""PostgreSQL: the locks around sighting writes. A batch recording sightings and a
customer write re-flagging the same sightings never wait for each other (the batch
takes the customers' lock before it writes any sighting row, as the customer write
takes it before its own); a batch inserting a new sighting of a key waits for a
transaction revoking that key, so the new sighting is flagged."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from controlplane.customers import repository
from controlplane.store.db import create_blocking_engine
from tests.support.databases import PostgresServer, fresh_database

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
KNOWN = ("lab-a", "account", "acct_lock", "network", "198.51.100.0/24")


@pytest.fixture
def postgres_url(postgres: PostgresServer, tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgresql", tmp_path / "db", postgres) as url:
        yield url


class Batch(threading.Thread):
    """`record_sightings` as a batch calls it, in a transaction of its own and a thread
    (a lock waited for more than 10 s fails it): `seen` against what was `read`, `acted`
    asked in the batch's session."""

    def __init__(
        self,
        engine: Engine,
        seen: dict[repository.Sighted, datetime],
        read: repository.ScopesRead,
        acted: Callable[[set[repository.Target], Session], set[repository.Target]],
    ) -> None:
        super().__init__()
        self._engine, self._seen, self._read, self._acted = engine, seen, read, acted
        self.failures: list[BaseException] = []

    def run(self) -> None:
        try:
            with Session(self._engine) as session, session.begin():
                session.execute(text("SET LOCAL lock_timeout = '10s'"))
                repository.record_sightings(
                    session,
                    self._seen,
                    self._read,
                    lambda targets: self._acted(targets, session),
                    set(),
                    NOW,
                )
        except BaseException as exc:
            self.failures.append(exc)

    def waits(self) -> bool:
        self.start()
        self.join(0.5)
        return self.is_alive()

    def ends_well(self) -> bool:
        self.join(15)
        return not self.is_alive() and not self.failures


def test_a_batchs_sightings_wait_for_a_customer_write_before_touching_a_row(
    postgres_url: str,
) -> None:
    engine = create_blocking_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO sighting (provider, scope, scope_id, kind, value, first_seen,"
                    " last_seen) VALUES (:p, :s, :i, :k, :v, :t, :t)"
                ),
                dict(zip("psikv", KNOWN, strict=True), t=NOW - timedelta(days=2)),
            )
        customer = engine.connect()
        customer.begin()
        customer.execute(text("SET lock_timeout = '10s'"))
        # The customer write holds the lock, as replace_customers does first.
        customer.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": repository._VERIFIED_LOCK})

        # The known sighting is stale (moved forward), one is new.
        recording = Batch(
            engine,
            {KNOWN: NOW, (*KNOWN[:4], "203.0.113.0/24"): NOW},
            repository.ScopesRead(known={KNOWN: NOW - timedelta(days=2)}),
            lambda _, __: set(),
        )
        assert recording.waits(), "the batch did not wait for the customer write"
        # Had the batch moved the stale row before asking for the lock, this update
        # would wait for it while it waits for us: a deadlock PostgreSQL breaks by
        # failing one of the two.
        customer.execute(
            text("UPDATE sighting SET verified = true WHERE scope_id = :i"), {"i": KNOWN[2]}
        )
        customer.commit()
        customer.close()
        assert recording.ends_well(), recording.failures
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT value, verified, last_seen FROM sighting WHERE scope_id = :i"),
                {"i": KNOWN[2]},
            ).all()
        assert {(r.value, r.verified) for r in rows} == {
            ("198.51.100.0/24", True),
            ("203.0.113.0/24", False),
        }
        assert all(r.last_seen == NOW for r in rows)
    finally:
        engine.dispose()


def test_a_new_sighting_of_a_key_being_revoked_elsewhere_is_flagged(postgres_url: str) -> None:
    """One transaction revokes a key (its action row, then the key's sightings flagged)
    and has not committed; a batch records the first sighting of that key by another
    account. Had the batch not waited, it would read no active revocation and insert its
    sighting unflagged, after the flagging had passed: that account would never count
    the key as revoked."""
    key = ("lab-a", "api_key", "key_race")
    fresh = ("lab-a", "account", "acct_race", "api_key", "key_race")
    engine = create_blocking_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE revoked (value text)"))
        revoking = Session(engine)
        revoking.begin()
        revoking.execute(text("INSERT INTO revoked VALUES ('key_race')"))
        repository.mark_acted(revoking, [key], NOW)

        def active(targets: set[repository.Target], session: Session) -> set[repository.Target]:
            values = set(session.execute(text("SELECT value FROM revoked")).scalars())
            return {t for t in targets if t[2] in values}

        recording = Batch(engine, {fresh: NOW}, repository.ScopesRead(), active)
        assert recording.waits(), "the batch did not wait for the revoking transaction"
        revoking.commit()
        revoking.close()
        assert recording.ends_well(), recording.failures
        with engine.connect() as connection:
            flagged = connection.execute(
                text("SELECT acted_at FROM sighting WHERE scope_id = 'acct_race'")
            ).scalar_one()
        assert flagged == NOW
    finally:
        engine.dispose()
