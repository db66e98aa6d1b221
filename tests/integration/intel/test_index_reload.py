"""The decider's intel index: loaded once, followed incrementally, and reloaded whole in a
thread of its own (a million indicators take seconds) while batches keep the index they
have; the new one is swapped in at a later batch and misses nothing added meanwhile."""

from __future__ import annotations

import asyncio
import time

from controlplane.evaluate.intel import IntelIndex
from controlplane.evaluate.repository import IntelCache
from controlplane.store.db import Database
from controlplane.store.types import utcnow
from tests.support.store import add, indicator

RELOAD_SECONDS = 0.3
"""The test's reload interval (ten minutes in service)."""


def ranges(index: IntelIndex, ip: str) -> set[object]:
    return {m["value"] for m in index.matches(ip)}


def look(cache: IntelCache, db: Database) -> IntelIndex:
    """What one batch does: take the index (caught up) at the current time."""
    with db.read_blocking() as session:
        return cache.index(session, utcnow())


async def test_a_reload_runs_apart_and_misses_nothing(database_url: str) -> None:
    db = Database(database_url)
    cache = IntelCache(db=db)
    cache.RELOAD_SECONDS = RELOAD_SECONDS
    try:
        await add(db, indicator("203.0.113.0/24"))
        first = look(cache, db)
        assert ranges(first, "203.0.113.9") == {"203.0.113.0/24"}
        await add(db, indicator("198.51.100.0/24"))
        await asyncio.sleep(RELOAD_SECONDS + 0.1)
        # Due for a reload: it starts apart, and until it is in, batches go on with the
        # index they had, caught up with what was added.
        during = look(cache, db)
        assert during is first
        assert ranges(during, "198.51.100.7") == {"198.51.100.0/24"}
        await add(db, indicator("100.64.7.0/24"))
        deadline = time.monotonic() + 30
        swapped = during
        while swapped is during and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            swapped = look(cache, db)
        assert swapped is not during, "the reload never came in"
        for ip, network in (
            ("203.0.113.9", "203.0.113.0/24"),
            ("198.51.100.7", "198.51.100.0/24"),
            ("100.64.7.1", "100.64.7.0/24"),  # added while the reload ran
        ):
            assert ranges(swapped, ip) == {network}
    finally:
        cache.close()
        await db.dispose()


async def test_without_a_database_a_reload_is_inline(database_url: str) -> None:
    db = Database(database_url)
    cache = IntelCache()
    cache.RELOAD_SECONDS = RELOAD_SECONDS
    try:
        first = look(cache, db)
        await add(db, indicator("203.0.113.0/24"))
        await asyncio.sleep(RELOAD_SECONDS + 0.1)
        reloaded = look(cache, db)
        assert reloaded is not first
        assert ranges(reloaded, "203.0.113.1") == {"203.0.113.0/24"}
    finally:
        await db.dispose()
