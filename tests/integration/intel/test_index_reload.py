"""The decider's intel index: loaded once, followed incrementally, and reloaded whole in a
thread of its own (a million indicators take seconds) while batches keep the index they
have; the new one is swapped in at a later batch and misses nothing added meanwhile."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from controlplane.evaluate.intel import IntelIndex
from controlplane.evaluate.repository import IntelCache
from controlplane.intel import repository as intel_repo
from controlplane.store.db import Database
from controlplane.store.types import utcnow
from tests.support.store import add, indicator

RELOAD_SECONDS = 0.3
"""The test's reload interval (ten minutes in service)."""


def ranges(index: IntelIndex, ip: str) -> set[object]:
    return {m["value"] for m in index.matches(ip)}


def look(cache: IntelCache, db: Database, now: datetime | None = None) -> IntelIndex:
    """What one batch does: take the index (caught up) at the current time."""
    with db.read_blocking() as session:
        return cache.index(session, now or utcnow())


async def test_a_reload_runs_apart_and_misses_nothing(database_url: str) -> None:
    db = Database(database_url)
    cache = IntelCache(db=db)
    cache.RELOAD_SECONDS = RELOAD_SECONDS
    # The reload is held until the test lets it go: on a small database it can finish
    # before the batch that started it has looked, and then that batch rightly swaps it in.
    loaded, let_go = threading.Event(), threading.Event()
    load_apart = cache._load_apart

    def held(now: datetime) -> IntelIndex:
        index = load_apart(now)
        loaded.set()
        let_go.wait(30)
        return index

    cache._load_apart = held  # type: ignore[method-assign]
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
        assert await asyncio.to_thread(loaded.wait, 30), "the reload never ran"
        await add(db, indicator("100.64.7.0/24"))
        assert look(cache, db) is first, "the reload came in before it was let go"
        let_go.set()
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
        let_go.set()
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


async def test_a_batch_reads_what_changed_since_the_newest_seen_and_late_rows_still_come(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer shares 500 indicators at once: the next batch reads them, the batches after
    it read none of them again (not the last 30 s of intel per batch); a row stamped
    before the newest seen but committed after it is found at the next look back."""
    db = Database(database_url)
    cache = IntelCache(db=db)
    cache.LOOK_BACK_EVERY = timedelta(seconds=0.3)
    read: list[int] = []
    changed_since = intel_repo.indicators_changed_since

    def counting(session: Session, since: datetime) -> list[Any]:
        rows = changed_since(session, since)
        read.append(len(rows))
        return rows

    monkeypatch.setattr(intel_repo, "indicators_changed_since", counting)
    try:
        # The batches' clock is the test's: a slow insert must not make a batch look
        # back (every LOOK_BACK_EVERY) where the test expects it not to.
        clock = utcnow()
        look(cache, db, clock)
        stamp = utcnow()
        shared = [indicator(f"100.{64 + i // 256}.{i % 256}.0/24") for i in range(500)]
        for row in shared:
            row.created_at = row.modified = stamp  # one transaction's rows share a stamp
        await add(db, *shared)
        tick = timedelta(milliseconds=10)
        assert ranges(look(cache, db, clock + tick), "100.65.3.9") == {"100.65.3.0/24"}
        assert read[-1] == 500
        read.clear()
        for i in range(5):
            look(cache, db, clock + (2 + i) * tick)
        assert read == [0] * 5, f"batches read {read} rows they had already taken"

        late = indicator("192.0.2.0/24")
        late.created_at = late.modified = stamp - timedelta(seconds=5)
        await add(db, late)
        later = clock + timedelta(seconds=0.4)  # past the look-back interval
        assert ranges(look(cache, db, later), "192.0.2.1") == {"192.0.2.0/24"}
    finally:
        cache.close()
        await db.dispose()
