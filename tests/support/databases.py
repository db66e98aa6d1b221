"""Fresh databases for tests: a SQLite file, or a throwaway database on a real PostgreSQL.

PostgreSQL comes from, in order: `TOLLGATE_TEST_DATABASE_URL`; a server answering on
127.0.0.1:5432 (user postgres, trust auth); a server started with `pgserver`. When none
can be had, the tests that need it fail with a message saying what to do; they are
never skipped.

Migrating takes seconds (SQLite syncs every migration) and the suite asks for hundreds
of fresh databases, so each backend is migrated once per test session into a template:
a fresh SQLite database is a copy of the template's file, a fresh PostgreSQL database is
`CREATE DATABASE ... TEMPLATE`. Both are byte for byte what migrating would give.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from controlplane.store.db import upgrade

URL_ENV = "TOLLGATE_TEST_DATABASE_URL"
LOCAL_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ADMIN_DATABASE = "postgres"


@dataclass(frozen=True)
class PostgresServer:
    """A PostgreSQL server the tests may create and drop databases on."""

    url: URL
    """Any database on the server; its host, port and credentials are reused."""
    origin: str
    """Where the server came from, for error messages."""

    def _connect_args(self, database: str) -> dict[str, Any]:
        args: dict[str, Any] = {
            "dbname": database,
            "user": self.url.username,
            "password": self.url.password,
            "host": self.url.host or self.url.query.get("host"),
            "port": self.url.port,
        }
        return {k: v for k, v in args.items() if v is not None}

    def admin(self) -> psycopg.Connection[Any]:
        """An autocommit connection to the `postgres` database (CREATE/DROP DATABASE)."""
        return psycopg.connect(**self._connect_args(ADMIN_DATABASE), autocommit=True)

    def check(self) -> None:
        try:
            with self.admin() as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            pytest.fail(
                f"PostgreSQL from {self.origin} ({self.url!r}) refused the connection: {exc}. "
                f"Fix it, or point {URL_ENV} at a server where the user may create databases.",
                pytrace=False,
            )

    def url_of(self, database: str) -> str:
        return self.url.set(database=database).render_as_string(hide_password=False)

    @contextmanager
    def database(self, template: str | None = None) -> Iterator[str]:
        """A new database `tollgate_test_<random>` (empty, or a copy of `template`),
        dropped afterwards."""
        name = f"tollgate_test_{secrets.token_hex(6)}"
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with self.admin() as conn:
            conn.execute(create)
        try:
            yield self.url_of(name)
        finally:
            _drop(self, name)


def _drop(server: PostgresServer, name: str) -> None:
    with server.admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


_SQLITE_TEMPLATE: list[Path] = []
_PG_TEMPLATES: dict[str, str] = {}
"""Migrated templates of this test session: the SQLite file, and per PostgreSQL server
(by URL) the template database's name."""


def _sqlite_template() -> Path:
    if not _SQLITE_TEMPLATE:
        directory = Path(tempfile.mkdtemp(prefix="tollgate-template-"))
        atexit.register(shutil.rmtree, directory, True)
        upgrade(sqlite_url(directory))
        path = directory / "tollgate.db"
        # Alembic's engine is gone, so SQLite has checkpointed its WAL into the file:
        # the file alone is the whole database.
        leftovers = [p.name for p in directory.iterdir() if p != path]
        assert not leftovers, f"the migrated template left {leftovers} beside its file"
        _SQLITE_TEMPLATE.append(path)
    return _SQLITE_TEMPLATE[0]


def _pg_template(server: PostgresServer) -> str:
    key = server.url.render_as_string(hide_password=False)
    if key not in _PG_TEMPLATES:
        name = f"tollgate_template_{secrets.token_hex(6)}"
        with server.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        upgrade(server.url_of(name))
        _PG_TEMPLATES[key] = name
    return _PG_TEMPLATES[key]


def _drop_template(server: PostgresServer) -> None:
    name = _PG_TEMPLATES.pop(server.url.render_as_string(hide_password=False), None)
    if name is not None:
        _drop(server, name)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def postgres_server(scratch: Path) -> Iterator[PostgresServer]:
    """The PostgreSQL server for this test session (see the module docstring)."""
    configured = os.environ.get(URL_ENV)
    if configured:
        server = PostgresServer(make_url(configured), f"${URL_ENV}")
        server.check()
        try:
            yield server
        finally:
            _drop_template(server)
        return
    if _answers("127.0.0.1", 5432):
        server = PostgresServer(make_url(LOCAL_URL), "127.0.0.1:5432")
        server.check()
        try:
            yield server
        finally:
            _drop_template(server)
        return
    try:
        import pgserver
    except ImportError as exc:
        pytest.fail(
            f"no PostgreSQL for the tests: {URL_ENV} is unset, nothing answers on "
            f"127.0.0.1:5432 and pgserver cannot be imported ({exc}). Install the dev "
            f"extras (`pip install -e '.[dev]'`) or set {URL_ENV}.",
            pytrace=False,
        )
    try:
        handle = pgserver.get_server(scratch / "pgdata", cleanup_mode="stop")
    except Exception as exc:
        pytest.fail(
            f"no PostgreSQL for the tests: starting one with pgserver in {scratch} failed "
            f"({type(exc).__name__}: {exc}). Set {URL_ENV} to a server you run.",
            pytrace=False,
        )
    try:
        uri = make_url(handle.get_uri()).set(drivername="postgresql+psycopg")
        server = PostgresServer(uri, f"pgserver in {scratch}")
        server.check()
        yield server
    finally:
        handle.cleanup()


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'tollgate.db'}"


@contextmanager
def fresh_database(backend: str, directory: Path, server: PostgresServer | None) -> Iterator[str]:
    """A migrated, empty database on `backend` (`sqlite` or `postgresql`): a copy of the
    session's migrated template."""
    if backend == "sqlite":
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_sqlite_template(), directory / "tollgate.db")
        yield sqlite_url(directory)
        return
    assert server is not None, "a PostgreSQL database needs the postgres_server fixture"
    with server.database(template=_pg_template(server)) as url:
        yield url
