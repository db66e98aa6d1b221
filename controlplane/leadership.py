"""One leader among replicas runs the periodic jobs.

Several replicas on one PostgreSQL would otherwise each sync policies, expire
actions, reconcile every gateway and write audit checkpoints (APScheduler 3 has
no coordination: two schedulers on one job store run jobs twice). The leader is
whoever holds a session-level advisory lock on a connection kept for it; when
that connection dies the lock is released and another replica takes it at its
next check. A leader learns that its connection was cut only at its own next
check, so a replica that takes the lock waits out a grace of two check intervals
before it leads (`taking over`): by then the one before has stopped. SQLite
serves one process: it is always the leader.
Every replica still converges its own engine and serves requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.store.db import OUTAGES, Database, outage_reason
from controlplane.store.repository import advisory_unlock, ping_connection, try_advisory_lock

log = logging.getLogger(__name__)

LOCK_KEY = 0x70_6C_67_74  # "tlgt": one advisory lock for Tollgate's scheduler


class Leadership:
    def __init__(self, db: Database, grace_seconds: float) -> None:
        """`grace_seconds`: how long the lock is held before leading
        (`Settings.takeover_grace`)."""
        self._db = db
        self._grace = grace_seconds
        self._connection: AsyncConnection | None = None
        self.leader = db.dialect != "postgresql"
        self._taken_at: float | None = None
        """When this replica took the lock while not yet leading (the grace runs)."""
        # Jobs falling due together check at once: unserialised, each would open a
        # connection of its own, and one holding the lock could be dropped unreleased
        # (no replica leading until it is collected).
        self._checking = asyncio.Lock()
        self._unreachable = False

    @property
    def role(self) -> str:
        """`leading`, `taking over` (the lock taken, the grace running) or `standing by`."""
        if self.leader:
            return "leading"
        return "standing by" if self._taken_at is None else "taking over"

    @property
    def _holding(self) -> bool:
        """Whether this replica holds the lock (leading, or waiting out the grace)."""
        return self.leader or self._taken_at is not None

    async def check(self) -> bool:
        """Take or keep the lock; True while this replica leads."""
        if self._db.dialect != "postgresql":
            return True
        async with self._checking:
            return await self._check()

    async def _check(self) -> bool:
        try:
            if self._connection is None:
                self._connection = await self._db.engine.connect()
            if self._holding:
                await ping_connection(self._connection)
            elif await try_advisory_lock(self._connection, LOCK_KEY):
                self._taken_at = time.monotonic()
                if self._grace > 0:
                    log.info(
                        "this replica took the lead's lock; it leads the periodic jobs in "
                        "%.1f s, once a leader cut off before it has stopped",
                        self._grace,
                    )
            if self._taken_at is not None and time.monotonic() - self._taken_at >= self._grace:
                self._taken_at = None
                self.leader = True
                log.info("this replica now leads the periodic jobs")
        except OUTAGES as exc:
            if self.leader or not self._unreachable:
                log.warning(
                    "leadership check failed: the database is unavailable (%s); not leading "
                    "the periodic jobs until it answers",
                    outage_reason(exc),
                )
            self._unreachable = True
            await self._drop()
        except Exception as exc:
            log.warning("leadership check failed (%s); not leading until it succeeds", exc)
            await self._drop()
        else:
            if self._unreachable:
                log.warning("the database answers again: leadership checks resume")
            self._unreachable = False
        return self.leader

    def only(self, job: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """`job`, run only while this replica leads."""

        @wraps(job)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            if await self.check():
                return await job(*args, **kwargs)
            return None

        return guarded

    async def release(self) -> None:
        """Give up leading: unlock first, then discard the connection. Closing alone is
        not enough for a quick successor: the server ends the backend, and frees its
        locks, some time after the client has gone."""
        async with self._checking:
            if self._holding and self._connection is not None:
                try:
                    await advisory_unlock(self._connection, LOCK_KEY)
                except Exception:
                    log.debug("unlocking the leadership lock failed", exc_info=True)
            await self._drop()

    async def _drop(self) -> None:
        self.leader = self._db.dialect != "postgresql"
        self._taken_at = None
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                # Discard, not return to the pool: a pooled connection would keep
                # holding the session lock and no other replica could take over.
                await connection.invalidate()
                await connection.close()
            except Exception:
                log.debug("closing the leadership connection failed", exc_info=True)
