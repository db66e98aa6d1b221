"""The sync engine's pooled PostgreSQL connections are pinged before use only after
sitting idle (`IDLE_PING_SECONDS`): one the server dropped meanwhile is replaced without
the caller seeing it; one taken back a moment after use costs no round trip, so a drop
inside that moment reaches the caller as an outage (answered 503, retried)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from controlplane.store import db
from controlplane.store.db import create_blocking_engine
from tests.support.databases import PostgresServer, fresh_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine(postgres: PostgresServer, tmp_path: Path) -> Iterator[Engine]:
    with fresh_database("postgresql", tmp_path, postgres) as url:
        engine = create_blocking_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        pid: int = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        return pid


def terminate(engine: Engine, pid: int) -> None:
    """End that server process from a connection of our own (not the pool's)."""
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


def test_a_connection_dropped_while_idle_is_replaced_before_use(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = backend_pid(engine)
    terminate(engine, first)
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)  # it has sat idle long enough

    second = backend_pid(engine)

    assert second != first


def test_a_connection_used_a_moment_ago_is_not_pinged(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 3600.0)
    first = backend_pid(engine)
    terminate(engine, first)

    # No ping: the drop shows at the statement, as an outage the caller answers 503 ...
    with pytest.raises(OperationalError):
        backend_pid(engine)
    # ... and the pool, told the connection was lost, connects again.
    assert backend_pid(engine) != first
