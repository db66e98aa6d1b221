"""Prepared SELECTs return what SQLAlchemy's own execution returns (IN lists of any
length, literal IN lists, times, JSON, booleans), on SQLite and PostgreSQL; an empty IN
list goes through SQLAlchemy; and every prepared statement of the repositories is one
the fast path can run (none falls back)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, or_, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import psycopg

import controlplane
from controlplane.store.bulk import insert_many
from controlplane.store.prepared import Prepared, _compile
from tests.integration.store.test_bulk_insert import WHEN, _action, action
from tests.integration.store.test_bulk_insert import engine as engine

BY_TARGETS = Prepared(
    select(
        _action.c.id,
        _action.c.target_value,
        _action.c.params,
        _action.c.shadow,
        _action.c.created_at,
        _action.c.expires_at,
    )
    .where(
        _action.c.provider.in_(bindparam("providers", expanding=True)),
        _action.c.target_value.in_(bindparam("values", expanding=True)),
        _action.c.state.in_(["planned", "applied"]),
        or_(_action.c.expires_at.is_(None), _action.c.expires_at > bindparam("now")),
    )
    .order_by(_action.c.id)
)


@pytest.fixture
def stored(engine: Engine) -> Iterator[Engine]:
    rows = [
        action(
            i,
            state="lifted" if i % 3 == 1 else "planned",
            shadow=i % 2 == 0,
            expires_at=None if i % 4 == 0 else WHEN + timedelta(minutes=i),
        )
        for i in range(12)
    ]
    with engine.begin() as connection:
        insert_many(connection, _action, rows)
    yield engine


@pytest.mark.parametrize("count", [1, 3, 7, 12])
def test_rows_are_sqlalchemys_rows(stored: Engine, count: int) -> None:
    params = {
        "providers": ["lab-a", "lab-b"],
        "values": [f"key-{i}" for i in range(count)],
        "now": WHEN,
    }
    with stored.connect() as connection:
        ours = BY_TARGETS.rows(connection, params)
        theirs = list(connection.execute(BY_TARGETS.statement, params))
    assert ours, "the rows asked for exist"
    assert [tuple(r) for r in ours] == [tuple(r) for r in theirs]
    assert [r._asdict() for r in ours] == [dict(r._mapping) for r in theirs]
    first = ours[0]
    assert isinstance(first.shadow, bool)
    assert first.created_at == WHEN and first.created_at.tzinfo is not None
    assert first.params["big"] == 10**30


def test_an_empty_in_list_is_sqlalchemys_to_render(stored: Engine) -> None:
    params: dict[str, Any] = {"providers": ["lab-a"], "values": [], "now": WHEN}
    with stored.connect() as connection:
        assert BY_TARGETS.rows(connection, params) == []


def test_every_prepared_statement_of_the_repositories_runs_without_sqlalchemy() -> None:
    found = []
    for module in pkgutil.walk_packages(controlplane.__path__, "controlplane."):
        if not module.name.endswith("repository"):
            continue
        for name, value in vars(importlib.import_module(module.name)).items():
            if isinstance(value, Prepared):
                found.append(f"{module.name}.{name}")
                for dialect in (sqlite.dialect(), psycopg.dialect()):
                    assert _compile(value.statement, dialect) is not None, (name, dialect.name)
    assert len(found) >= 10, found
