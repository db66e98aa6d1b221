"""The database: one async engine per process, sessions, and migrations; and a sync
engine for the hot writers (the decide thread, the connector followers), which run in
threads of their own with no event loop round trip per statement.

On SQLite the sync writers of a process queue on one lock per database file before
they take SQLite's write lock: a writer waiting for another starts the moment it
commits, where SQLite's busy handler would sleep in steps of up to 100 ms."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import (
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
    nullcontext,
)
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import exc as sql
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker

from controlplane.store.repository import ping
from controlplane.store.types import json_text, json_value

MIGRATIONS = Path(__file__).parent / "migrations"

OUTAGES = (sql.OperationalError, sql.InterfaceError, sql.DisconnectionError, sql.TimeoutError)
"""What SQLAlchemy raises when the database is down, restarting, unreachable or its
file cannot be opened (psycopg's and sqlite3's OperationalError arrive wrapped)."""


def outage_reason(exc: BaseException) -> str:
    """The driver's own first line about an outage (no SQL, no traceback), for a log."""
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return (lines[0] if lines else type(cause).__name__)[:300]


def create_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL, full fsync at commit and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **JSON_CODEC)
        _sqlite_events(engine.sync_engine)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True, **JSON_CODEC)


JSON_CODEC: dict[str, Any] = {"json_serializer": json_text, "json_deserializer": json_value}
"""Engine options: JSON columns through msgspec (see `json_text`)."""


def create_blocking_engine(url: str) -> Engine:
    """A sync engine on the same database (same SQLite pragmas and write transactions),
    for work done in a thread of its own. A SQLite file's connections never go stale:
    only a server's are pinged before use."""
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_sync_engine(sync_url(url), connect_args={"timeout": 30}, **JSON_CODEC)
        _sqlite_events(engine)
        return engine
    engine = create_sync_engine(sync_url(url), **JSON_CODEC)
    _ping_when_idle(engine)
    event.listen(engine, "connect", _custom_plans)
    return engine


def _custom_plans(dbapi_connection: Any, _record: Any) -> None:
    """PostgreSQL plans each of the decide thread's statements for its own parameters.
    Their IN lists are arrays (`store/prepared.py`): one text, so the driver prepares it
    after a few runs, and the server would then settle on a generic plan that cannot
    know an array's length; measured on a batch's sightings lookup, three times slower
    than a plan for the actual lists. Planning each costs well under a millisecond."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_custom_plan")
    dbapi_connection.commit()


IDLE_PING_SECONDS = 1.0
"""A pooled connection unused for longer than this is pinged before use."""
_RETURNED = "tollgate_returned"


def _ping_when_idle(engine: Engine) -> None:
    """`pool_pre_ping`, for connections that sat in the pool over a second only: the
    decide thread takes a connection two or three times per group, one round trip each
    time for a connection it used a millisecond ago, a tenth of a group's round trips.
    A connection the server dropped while it sat idle (a restart, an idle timeout) is
    still found dead before use and replaced; one that dies within the second fails its
    statement, and the group is answered 503 with Retry-After like any outage."""

    def returned(_dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED] = time.monotonic()

    def taken(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_RETURNED)
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return  # new (just connected), or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool drops it and connects again (up to three times), as pre-ping does.
            raise sql.DisconnectionError(str(exc)) from exc

    event.listen(engine, "checkin", returned)
    event.listen(engine, "checkout", taken)


def create_span_engine(url: str) -> Engine:
    """A small engine for the span exporter's thread (`telemetry/spanstore.py`), so span
    writes never take a connection from the API's pool. SQLite: WAL, the write lock
    taken at BEGIN (as the API's writers do) and no fsync per batch: losing the last
    second of spans at power loss is an acceptable price for not slowing every writer
    down."""
    target = sync_url(url)
    if make_url(target).get_backend_name() != "sqlite":
        return create_sync_engine(
            target,
            pool_size=1,
            max_overflow=1,
            pool_pre_ping=True,
            hide_parameters=True,
            **JSON_CODEC,
        )
    # hide_parameters: an error the exporter logs never quotes the spans it held.
    engine = create_sync_engine(
        target, connect_args={"timeout": 30}, hide_parameters=True, **JSON_CODEC
    )

    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
        dbapi_connection.isolation_level = None

    def begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", pragmas)
    event.listen(engine, "begin", begin)
    return engine


class FairLock:
    """A lock handed to its waiters in the order they came. A `threading.Lock` goes to
    whichever thread asks first once it is free, most often the one that just released
    it: a job writing in many short transactions kept a waiting verdict group out for
    all of them (hundreds of milliseconds); here the group goes next."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held = False
        self._waiters: collections.deque[threading.Lock] = collections.deque()

    def acquire(self) -> None:
        with self._guard:
            if not self._held:
                self._held = True
                return
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        try:
            waiter.acquire()  # `release` hands the lock over by releasing this
        except BaseException:  # interrupted: leave the line, or pass on what came
            with self._guard:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                else:
                    self._hand_over()
            raise

    def release(self) -> None:
        with self._guard:
            if not self._held:
                raise RuntimeError("release of a FairLock that is not held")
            self._hand_over()

    def _hand_over(self) -> None:
        if self._waiters:
            self._waiters.popleft().release()  # still held: by the first in line now
        else:
            self._held = False

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_FILE_WRITERS: dict[str, FairLock] = {}
_FILE_WRITERS_GUARD = threading.Lock()


def writers_of(url: str) -> AbstractContextManager[Any]:
    """The lock the process's sync writers of this SQLite file share (none elsewhere),
    taken in turn: a writer waiting for it starts the moment the one before it
    commits, where SQLite's busy handler would sleep in steps of up to 100 ms."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return nullcontext()
    key = str(Path(parsed.database or "").resolve())
    with _FILE_WRITERS_GUARD:
        return _FILE_WRITERS.setdefault(key, FairLock())


def _sqlite_events(engine: Engine) -> None:
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", _sqlite_begin)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a verdict acknowledged with 202 survives power loss, not only a crash.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
    # Let SQLAlchemy's "begin" event open transactions, so writers can say IMMEDIATE.
    dbapi_connection.isolation_level = None


def _sqlite_begin(conn: Any) -> None:
    # A writer takes SQLite's write lock up front: a deferred transaction that reads
    # and then writes fails at once (SQLITE_BUSY_SNAPSHOT) when another writer won.
    immediate = conn.get_execution_options().get(WRITE_OPTION)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


WRITE_OPTION = "tollgate_write"
AFTER_COMMIT = "tollgate_after_commit"


def after_commit(session: AsyncSession, hook: Callable[[], object]) -> None:
    """Run `hook` once the unit of work that holds `session` has committed, never when it
    rolls back: how a service wakes what acts on its writes (the connectors) only once
    they can be seen. A hook registered twice runs once."""
    hooks: list[Callable[[], object]] | None = session.info.get(AFTER_COMMIT)
    if hooks is None:
        raise RuntimeError(
            "after_commit needs the session of a unit of work (Database.transaction()): "
            "writes in any other session are never committed"
        )
    if hook not in hooks:
        hooks.append(hook)


class Database:
    """The engine and two session makers: `read()` for queries, `write()` for
    transactions that change state (SQLite: BEGIN IMMEDIATE). Only the request and job
    boundaries open sessions, with `read()` or `transaction()`; services are given one."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._writers = writers_of(url)
        self.engine = create_engine(url)
        self.dialect = self.engine.dialect.name
        self.read = async_sessionmaker(self.engine, expire_on_commit=False)
        self.write = async_sessionmaker(
            self.engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: one write transaction (SQLite: BEGIN IMMEDIATE, taken at its
        first statement), committed when the block ends and rolled back when it raises;
        once it has committed, the hooks its services gave `after_commit` run."""
        hooks: list[Callable[[], object]] = []
        async with self.write() as session:
            session.info[AFTER_COMMIT] = hooks
            async with session.begin():
                yield session
        for hook in hooks:
            hook()

    @cached_property
    def blocking(self) -> Engine:
        """The sync engine, made on first use (by the decide thread)."""
        return create_blocking_engine(self.url)

    @cached_property
    def _blocking_sessions(self) -> tuple[sessionmaker[Session], sessionmaker[Session]]:
        # Reads in autocommit on PostgreSQL: at READ COMMITTED each statement sees its own
        # snapshot inside a transaction too, so its BEGIN and ROLLBACK bought nothing
        # but two round trips per group. (SQLite's reads open no transaction either.)
        reads = (
            self.blocking
            if self.dialect == "sqlite"
            else self.blocking.execution_options(isolation_level="AUTOCOMMIT")
        )
        return (
            sessionmaker(reads, expire_on_commit=False),
            sessionmaker(
                self.blocking.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False
            ),
        )

    def read_blocking(self) -> Session:
        """A sync session for queries (call from a thread, never the event loop)."""
        return self._blocking_sessions[0]()

    @contextmanager
    def write_blocking(self) -> Iterator[Session]:
        """A sync session for a transaction that changes state (SQLite: BEGIN IMMEDIATE,
        after the process's other sync writers of the file are done)."""
        with self._writers, self._blocking_sessions[1]() as session:
            yield session

    async def ping(self) -> None:
        """Raises when the database does not answer."""
        async with self.read() as session:
            await ping(session)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if "blocking" in self.__dict__:
            self.blocking.dispose()


def sync_url(url: str) -> str:
    """The same database for a sync driver (Alembic runs sync)."""
    parsed = make_url(url)
    if parsed.drivername == "sqlite+aiosqlite":
        parsed = parsed.set(drivername="sqlite")
    return parsed.render_as_string(hide_password=False)


def upgrade(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations up to `revision`."""
    from alembic import command
    from alembic.config import Config

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = sync_url(url)
    command.upgrade(config, revision)
    if parsed.get_backend_name() == "sqlite":
        engine = create_sync_engine(sync_url(url))
        try:
            with engine.begin() as conn:
                planner_statistics(conn)
        finally:
            engine.dispose()


ROWS = 1_000_000
"""The table size the SQLite planner is told to expect (a lab's after some weeks)."""
FEW_VALUES = {
    "provider": 2,
    "connector": 2,
    "collection": 2,
    "state": 4,
    "status": 4,
    "type": 4,
    "kind": 4,
    "target_kind": 4,
    "subject_kind": 4,
    "scope": 4,
}
"""Indexed columns with a handful of values, and how much an equality on one narrows."""


def planner_statistics(conn: Connection) -> int:
    """Give SQLite's query planner the shape of a database with history (SQLite).

    Without statistics SQLite guesses that an equality on any indexed column finds about
    ten rows, so for `provider IN (...) AND account_id IN (...)` it may take the index
    that starts with `provider` and read every verdict of the provider: a lookup whose
    cost grows with history. These rows in `sqlite_stat1` (SQLite's own statistics
    table, the one ANALYZE writes) say which columns narrow and which do not; only
    indexes without statistics get them, so an operator's ANALYZE stands. Returns how
    many indexes were given statistics."""
    conn.exec_driver_sql("ANALYZE sqlite_schema")  # creates sqlite_stat1, loads nothing
    known = {
        (table, index) for table, index in conn.exec_driver_sql("SELECT tbl, idx FROM sqlite_stat1")
    }
    rows: list[tuple[str, str | None, str]] = []
    tables = [
        name
        for (name,) in conn.exec_driver_sql(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    for table in tables:
        indexes = list(conn.exec_driver_sql(f"PRAGMA index_list('{table}')"))
        for _, index, unique, *_ in indexes:
            if (table, index) in known:
                continue
            columns = [c for _, _, c in conn.exec_driver_sql(f"PRAGMA index_info('{index}')")]
            left, counts = ROWS, []
            for position, column in enumerate(columns):
                if unique and position == len(columns) - 1:
                    left = 1
                elif column in FEW_VALUES:
                    left = max(1, left // FEW_VALUES[column])
                else:  # an id, a value, a time: a few rows each
                    left = min(10, max(1, left // 5))
                counts.append(left)
            rows.append((table, index, " ".join(str(n) for n in (ROWS, *counts))))
    if rows:
        conn.exec_driver_sql("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)", rows)
        conn.exec_driver_sql("ANALYZE sqlite_schema")  # this connection reloads them
    return len(rows)
