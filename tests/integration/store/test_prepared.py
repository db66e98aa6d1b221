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
from controlplane.store.prepared import Prepared, _compile, int_array, text_array
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


EXCEPT = Prepared(
    select(_action.c.id)
    .where(
        _action.c.provider == bindparam("provider"),
        _action.c.id.not_in(bindparam("exclude", expanding=True)),
    )
    .order_by(_action.c.id)
)


@pytest.mark.parametrize("count", [1, 5])
def test_not_in_lists_are_sqlalchemys_too(stored: Engine, count: int) -> None:
    params = {"provider": "lab-a", "exclude": [f"act{i}" for i in range(count)]}
    with stored.connect() as connection:
        ours = [tuple(r) for r in EXCEPT.rows(connection, params)]
        theirs = [tuple(r) for r in connection.execute(EXCEPT.statement, params)]
    assert ours == theirs and len(ours) == 12 - count


def test_postgresql_sends_each_in_list_as_one_array(stored: Engine) -> None:
    """One text whatever the lists' lengths, planned for each (SQLite: a text each)."""
    with stored.connect() as connection:
        for count in (2, 9):
            values = [f"key-{i}" for i in range(count)]
            BY_TARGETS.rows(connection, {"providers": ["lab-a"], "values": values, "now": WHEN})
        EXCEPT.rows(connection, {"provider": "lab-a", "exclude": ["act1", "act2"]})
    compiled = BY_TARGETS._compiled[stored.dialect.name]
    assert compiled is not None
    texts = list(compiled.rendered.values())
    if stored.dialect.name == "postgresql":
        assert len(texts) == 1 and "= ANY(" in texts[0] and "POSTCOMPILE" not in texts[0]
        # Planned for the arrays given each time, not by a generic plan (see `store.db`).
        with stored.connect() as connection:
            mode = connection.exec_driver_sql("SHOW plan_cache_mode").scalar()
        assert mode == "force_custom_plan"
        not_in = EXCEPT._compiled["postgresql"]
        assert not_in is not None
        assert "<> ALL(" in next(iter(not_in.rendered.values()))
    else:
        assert len(texts) >= 2 and all("IN (" in t for t in texts)


HOSTILE = ['a"b', "c\\d", "x,y}{", "NULL", " spaced ", "", '\\"', "é{}", "'); DROP TABLE a; --"]


def test_strings_that_look_like_array_syntax_are_matched_as_themselves(engine: Engine) -> None:
    """On PostgreSQL a list of strings goes as one array literal: quotes, backslashes,
    commas, braces and the word NULL in an item are the item's own characters."""
    rows = [action(i, target_value=value) for i, value in enumerate(HOSTILE)]
    with engine.begin() as connection:
        insert_many(connection, _action, rows)
    with engine.connect() as connection:
        for i, value in enumerate(HOSTILE):
            found = BY_TARGETS.rows(
                connection, {"providers": ["lab-a"], "values": [value, "absent"], "now": WHEN}
            )
            assert [(r.id, r.target_value) for r in found] == [(f"act{i}", value)]
        params = {"providers": ["lab-a"], "values": HOSTILE, "now": WHEN}
        every = BY_TARGETS.rows(connection, params)
    assert sorted(r.target_value for r in every) == sorted(HOSTILE)


def test_text_array_quotes_every_item() -> None:
    assert text_array(['a"b', "c\\d", ""]) == '{"a\\"b","c\\\\d",""}'


def test_int_array_takes_integers_only() -> None:
    assert int_array([1, -2, 2**63 - 1]) == "{1,-2,9223372036854775807}"
    with pytest.raises(ValueError):
        int_array(["1}, {2"])  # type: ignore[list-item]


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
