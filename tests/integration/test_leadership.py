"""Only one replica leads the periodic jobs: a PostgreSQL advisory lock; SQLite always."""

from __future__ import annotations

import asyncio

from controlplane.leadership import Leadership
from controlplane.store.db import Database


async def test_one_leader_at_a_time_and_a_successor(database_url: str) -> None:
    first_db, second_db = Database(database_url), Database(database_url)
    first, second = Leadership(first_db, 0.0), Leadership(second_db, 0.0)
    ran: list[str] = []

    async def job(name: str) -> None:
        ran.append(name)

    try:
        postgres = first_db.dialect == "postgresql"
        assert await first.check()
        assert await second.check() is not postgres  # SQLite: one process, always leads
        await first.only(job)("first")
        await second.only(job)("second")
        assert ran == (["first"] if postgres else ["first", "second"])

        await first.release()  # the leader goes away: its lock goes with its connection
        assert await second.check()
        await second.only(job)("second again")
        assert ran[-1] == "second again"
    finally:
        await first.release()
        await second.release()
        await first_db.dispose()
        await second_db.dispose()


async def test_a_successor_waits_out_the_grace_before_it_leads(database_url: str) -> None:
    """A leader cut off learns it only at its next check: the replica that takes the lock
    says `taking over` (and runs no job) until the grace has passed."""
    first_db, second_db = Database(database_url), Database(database_url)
    first, second = Leadership(first_db, 0.0), Leadership(second_db, 0.4)
    ran: list[str] = []

    async def job() -> None:
        ran.append("second")

    try:
        if first_db.dialect != "postgresql":
            assert await second.check() and second.role == "leading"  # one process
            return
        assert await first.check()
        assert not await second.check() and second.role == "standing by"
        await first.release()
        assert not await second.check()
        assert second.role == "taking over"
        await second.only(job)()
        assert ran == []
        assert not await first.check()  # the lock is held through the grace
        await asyncio.sleep(0.45)
        assert await second.check() and second.role == "leading"
        await second.only(job)()
        assert ran == ["second"]
    finally:
        await first.release()
        await second.release()
        await first_db.dispose()
        await second_db.dispose()
