"""Only one replica leads the periodic jobs: a PostgreSQL advisory lock; SQLite always."""

from __future__ import annotations

from controlplane.leadership import Leadership
from controlplane.store.db import Database


async def test_one_leader_at_a_time_and_a_successor(database_url: str) -> None:
    first_db, second_db = Database(database_url), Database(database_url)
    first, second = Leadership(first_db), Leadership(second_db)
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
