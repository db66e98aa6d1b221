"""Bulk inserts and column conversions: `insert_many` stores exactly what SQLAlchemy's own
INSERT stores (scalar defaults included), refuses rows that disagree, and JSON documents
and UTC times read back as they were written, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.store.bulk import COPY_FROM, insert_many
from controlplane.store.db import create_blocking_engine, create_engine
from controlplane.store.models import ActionRow, DecisionRow, VerdictRow

_action = ActionRow.__table__  # type: ignore[attr-defined]
WHEN = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_blocking_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            insert(VerdictRow.__table__),  # type: ignore[attr-defined]
            [
                {
                    "id": "v1",
                    "provider": "lab-a",
                    "detector_name": "d",
                    "detector_version": "1",
                    "score": 0.5,
                    "confidence": 0.5,
                    "observed_at": WHEN,
                    "received_at": WHEN,
                    "body": {},
                    "content_hash": "h",
                    "status": "decided",
                }
            ],
        )
        connection.execute(
            insert(DecisionRow.__table__),  # type: ignore[attr-defined]
            [
                {
                    "id": "dec1",
                    "verdict_id": "v1",
                    "provider": "lab-a",
                    "policy_revision": "r",
                    "entrypoint": "tollgate.decision",
                    "engine": "opa-embedded",
                    "input": {},
                    "result": {},
                    "status": "ok",
                    "decided_at": WHEN,
                    "duration_ms": 1.0,
                }
            ],
        )
    yield engine
    engine.dispose()


def action(i: int, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": f"act{i}",
        "decision_id": "dec1",
        "verdict_id": "v1",
        "provider": "lab-a",
        "type": "revoke_key",
        "target_kind": "api_key",
        "target_value": f"key-{i}",
        "params": {"reason": "distillation", "n": [1, 2, i], "big": 10**30, "ü": "é"},
        "ttl_seconds": 60,
        "expires_at": WHEN + timedelta(seconds=60),
        "rule": "r",
        "reason": "x",
        "state": "planned",
        "policy_revision": "r",
        "trace_id": None,
        "created_at": WHEN,
        "updated_at": WHEN,
        "parent_id": None,
        "reference": None,
    }
    row.update(changes)
    return row


def stored(engine: Engine, ids: list[str]) -> dict[str, dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(select(_action).where(_action.c.id.in_(ids)))
        return {r.id: dict(r._mapping) for r in rows}


@pytest.mark.parametrize("count", [3, COPY_FROM], ids=["few", "copied"])
def test_insert_many_stores_what_sqlalchemy_stores(engine: Engine, count: int) -> None:
    # `shadow` is given by no row: both paths store its scalar default (False). From
    # COPY_FROM rows PostgreSQL is sent COPY, whose text format escapes tabs, newlines
    # and backslashes: they must arrive as they left.
    awkward = "tab\there\nnew line \\N, back\\slash, \u00e9"
    ours = [action(i, reason=awkward, trace_id=None) for i in range(count)]
    theirs = [action(i + 100, reason=awkward, trace_id=None) for i in range(count)]
    with engine.begin() as connection:
        insert_many(connection, _action, ours)
        connection.execute(insert(_action), theirs)
    got = stored(engine, [r["id"] for r in ours + theirs])
    for mine, other in zip(ours, theirs, strict=True):
        differ = ("id", "target_value", "params")
        a = {k: v for k, v in got[mine["id"]].items() if k not in differ}
        b = {k: v for k, v in got[other["id"]].items() if k not in differ}
        assert a == b
    first = got["act0"]
    assert first["shadow"] is False
    assert first["params"]["big"] == 10**30
    assert first["params"]["n"] == [1, 2, 0]
    assert first["created_at"] == WHEN and first["created_at"].tzinfo is not None


def test_a_duplicate_key_among_many_rows_is_sqlalchemys_integrity_error(engine: Engine) -> None:
    rows = [action(i) for i in range(COPY_FROM)]
    with pytest.raises(IntegrityError), engine.begin() as connection:
        insert_many(connection, _action, [*rows, action(0)])
    assert stored(engine, [r["id"] for r in rows]) == {}
    with engine.begin() as connection:  # the connection is usable again
        insert_many(connection, _action, rows)
    assert len(stored(engine, [r["id"] for r in rows])) == COPY_FROM


async def test_many_rows_through_an_async_sessions_run_sync(
    engine: Engine, database_url: str
) -> None:
    """API handlers write through an async session (`run_sync`): many rows go in too."""
    rows = [action(i) for i in range(COPY_FROM * 2)]
    writer = create_engine(database_url)
    try:
        async with AsyncSession(writer) as session, session.begin():
            await session.run_sync(lambda sync: insert_many(sync.connection(), _action, rows))
    finally:
        await writer.dispose()
    assert len(stored(engine, [r["id"] for r in rows])) == len(rows)


def test_insert_many_refuses_rows_that_disagree_and_writes_nothing(engine: Engine) -> None:
    short = action(2)
    del short["reference"]
    with (
        pytest.raises(ValueError, match="every row must give the same columns"),
        engine.begin() as connection,
    ):
        insert_many(connection, _action, [action(1), short])
    with pytest.raises(ValueError, match="no column colour"), engine.begin() as connection:
        insert_many(connection, _action, [action(3, colour="red")])
    assert stored(engine, ["act1", "act2", "act3"]) == {}


def test_times_in_any_offset_read_back_as_the_same_utc_instant(engine: Engine) -> None:
    ahead = timezone(timedelta(hours=5, minutes=30))
    local = datetime(2026, 11, 30, 17, 30, 0, 0, tzinfo=ahead)  # 12:00:00 UTC
    with engine.begin() as connection:
        insert_many(connection, _action, [action(1, created_at=local)])
        connection.execute(insert(_action), [action(2, created_at=local)])
    got = stored(engine, ["act1", "act2"])
    for row in got.values():
        assert row["created_at"] == datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
        assert row["created_at"].utcoffset() == timedelta(0)
    if engine.dialect.name == "sqlite":
        # The text SQLite keeps is the dialect's own: comparisons in SQL stay right.
        with engine.connect() as connection:
            texts = connection.execute(
                text("SELECT created_at FROM action WHERE id IN ('act1', 'act2')")
            ).scalars()
            assert set(texts) == {"2026-11-30 12:00:00.000000"}


def test_a_naive_time_is_refused(engine: Engine) -> None:
    with pytest.raises(Exception, match="naive datetime"), engine.begin() as connection:
        insert_many(connection, _action, [action(1, created_at=datetime(2026, 1, 1))])


def test_documents_msgspec_refuses_still_round_trip(engine: Engine) -> None:
    # Keys that are not strings, and text msgspec will not encode: json.dumps stores them.
    odd = {"flags": {True: "yes", None: "none"}, "text": "plain"}
    with engine.begin() as connection:
        insert_many(connection, _action, [action(1, params=odd)])
    assert stored(engine, ["act1"])["act1"]["params"] == {
        "flags": {"true": "yes", "null": "none"},
        "text": "plain",
    }
