"""5xx only for faults of the server: a database outage is a 503 with `Retry-After`, logged
in one line; every other 5xx is logged with its traceback; all are counted in /metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from controlplane.telemetry.metrics import REGISTRY
from tests.support.app import Running
from tests.support.verdicts import verdict

SERVER_ERRORS = "tollgate_http_server_errors_total"


def _served(status: int) -> float:
    return REGISTRY.get_sample_value(SERVER_ERRORS, {"status": str(status)}) or 0.0


@asynccontextmanager
async def database_down(api: Running) -> AsyncIterator[None]:
    """The real database refuses new connections (the pool is emptied first)."""
    url = make_url(api.settings.database_url)
    await api.runtime.db.engine.dispose()
    if url.get_backend_name() == "sqlite":
        # SQLite cannot open a file whose folder is gone ("unable to open database file").
        folder = Path(str(url.database)).parent
        away = folder.with_name(folder.name + "-away")
        folder.rename(away)
        try:
            yield
        finally:
            away.rename(folder)
        return
    admin = url.set(drivername="postgresql", database="postgres")
    name = url.database
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name]
        )
        try:
            yield
        finally:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


async def test_a_database_outage_is_503_with_retry_after_logged_and_counted(
    fresh_api: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="controlplane.api.errors")
    before = _served(503)

    async with database_down(fresh_api):
        listed = await fresh_api.client.get("/v1/actions")
        submitted = await fresh_api.client.post("/v1/verdicts", json=verdict())

    for response in (listed, submitted):
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "database_unavailable"
        assert int(response.headers["retry-after"]) > 0
    assert _served(503) - before >= 2
    logged = [r for r in caplog.records if r.name == "controlplane.api.errors"]
    assert len(logged) >= 2
    # An outage is not a bug: one WARNING line each, naming the request, no traceback.
    assert {r.levelno for r in logged} == {logging.WARNING}
    assert not any(r.exc_info for r in logged)
    assert all("the database is unavailable" in r.getMessage() for r in logged)
    assert any(r.getMessage().startswith("POST /v1/verdicts:") for r in logged)
    assert (await fresh_api.client.get("/v1/actions")).status_code == 200, "back once it is"
    scraped = (await fresh_api.client.get("/metrics")).text
    assert f'{SERVER_ERRORS}{{status="503"}}' in scraped


async def test_an_unexpected_fault_is_500_in_the_error_shape_logged_and_counted(
    api: Running, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("injected fault in the ingest service")

    # Fault injection into the real server: the one way to make it fail on purpose.
    monkeypatch.setattr(api.runtime.ingest, "submit", broken)
    caplog.set_level(logging.ERROR, logger="controlplane.api.errors")
    before = _served(500)

    response = await api.client.post("/v1/verdicts", json=verdict())

    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert "injected" not in response.text, "internals stay in the log"
    assert _served(500) == before + 1
    [record] = [r for r in caplog.records if r.name == "controlplane.api.errors"]
    assert record.exc_info is not None
    assert "injected fault" in str(record.exc_info[1])


async def test_a_write_failing_mid_batch_stores_none_of_it_and_is_answered(
    api: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decisions are written as they are decided (on PostgreSQL by a thread of their
    own, while the next ones are evaluated): a write that fails there fails the batch
    whole, answered, with nothing of it stored, and the next batch is written as usual."""
    from controlplane.evaluate import repository as decisions_repo

    real = decisions_repo.insert_decisions
    calls = 0
    # PostgreSQL writes a hundred decisions at a time, the first while the rest are
    # evaluated: the second write fails, after one went through. SQLite writes them
    # all at once, once they are decided.
    failing = 2 if api.settings.database_url.startswith("postgresql") else 1

    def failing_one(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == failing:
            raise RuntimeError("injected fault writing decisions")
        real(*args, **kwargs)

    monkeypatch.setattr(decisions_repo, "insert_decisions", failing_one)
    # More verdicts than one hand-over of the decide thread holds, on distinct subjects.
    batch = [
        verdict(subject={"account_id": f"acct_w{i}", "api_key_id": f"key_w{i}"}) for i in range(250)
    ]

    response = await api.client.post("/v1/verdicts", json={"verdicts": batch})

    assert response.status_code == 500, response.text[:300]
    assert calls == failing, "no write after the one that failed"
    for item in (batch[0], batch[-1]):
        stored = await api.client.get(f"/v1/verdicts/{item['id']}")
        assert stored.status_code == 404, "nothing of the failed batch was kept"
    monkeypatch.setattr(decisions_repo, "insert_decisions", real)
    again = await api.client.post("/v1/verdicts", json={"verdicts": batch})
    assert again.status_code == 202, again.text[:300]
    assert again.json()["accepted"] == len(batch)


async def test_sightings_failing_beside_the_audit_chain_store_nothing_of_the_batch(
    api: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group's sightings are written by the write thread while the decide thread builds
    its audit events: a failure there fails the batch whole, answered, nothing kept."""
    from controlplane.customers import repository as customers_repo

    real = customers_repo.record_sightings

    def failing(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("injected fault writing sightings")

    monkeypatch.setattr(customers_repo, "record_sightings", failing)
    batch = [
        verdict(subject={"account_id": f"acct_s{i}", "api_key_id": f"key_s{i}"}) for i in range(20)
    ]

    response = await api.client.post("/v1/verdicts", json={"verdicts": batch})

    assert response.status_code == 500, response.text[:300]
    stored = await api.client.get(f"/v1/verdicts/{batch[0]['id']}")
    assert stored.status_code == 404, "nothing of the failed batch was kept"
    monkeypatch.setattr(customers_repo, "record_sightings", real)
    again = await api.client.post("/v1/verdicts", json={"verdicts": batch})
    assert again.status_code == 202, again.text[:300]
    verified = await api.client.get("/v1/audit/verify")
    assert verified.status_code == 200 and verified.json()["ok"], verified.text[:300]


async def test_a_verdict_stored_by_another_replica_meanwhile_is_answered_as_a_repeat(
    api: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another replica stores one of the batch's ids between this one's read of what is
    stored and its insert: the insert fails on the id, the group is read and decided
    again, and the verdict is a repeat, not a 500 and not a second decision."""
    from controlplane.ingest import repository as ingest_repo

    first = verdict(subject={"account_id": "acct_race1", "api_key_id": "key_race1"})
    stored = await api.client.post("/v1/verdicts", json={"verdicts": [first]})
    assert stored.status_code == 202, stored.text[:300]
    real = ingest_repo.stored_verdicts
    reads: list[int] = []

    def stale_once(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        found = real(*args, **kwargs)
        return {} if len(reads) == 1 else found  # read before the other replica committed

    monkeypatch.setattr(ingest_repo, "stored_verdicts", stale_once)
    fresh = verdict(subject={"account_id": "acct_race2", "api_key_id": "key_race2"})

    with caplog.at_level(logging.ERROR):
        response = await api.client.post("/v1/verdicts", json={"verdicts": [first, fresh]})

    assert response.status_code == 202, response.text[:300]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, "a failed insert is not a fault of deciding"
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (1, 1)
    assert len(reads) == 2, "the group was read again"
    assert [r["duplicate"] for r in body["results"]] == [True, False]
    assert body["results"][0]["decision_id"] == stored.json()["results"][0]["decision_id"]
    verified = await api.client.get("/v1/audit/verify")
    assert verified.status_code == 200 and verified.json()["ok"], verified.text[:300]
