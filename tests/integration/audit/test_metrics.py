"""`/metrics`: Prometheus text without a token, counters that move with the pipeline, and
gauges that agree with the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlmodel import col

from controlplane.audit import service as audit
from controlplane.audit.chain import EventDraft
from controlplane.store.models import ActionRow
from controlplane.store.types import utcnow
from tests.support.app import Running, make_settings, serve
from tests.support.verdicts import legitimate, new_subject, verdict

EDGE = {"name": "edge", "type": "memory", "providers": ["lab-a"], "reconcile_seconds": 3600}


@pytest.fixture(scope="module")
async def metered(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    """A server with one (in-memory) connector, so its gauges have something to show."""
    settings = make_settings(
        module_database_url, tmp_path_factory.mktemp("data"), connectors=[EDGE]
    )
    async with serve(settings) as running:
        yield running


async def scrape(api: Running) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await api.client.get("/metrics", headers={"Authorization": ""})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counters_move_with_verdicts_decisions_and_audit_events(metered: Running) -> None:
    before = await scrape(metered)
    subject = new_subject()

    await metered.submit({"verdicts": [verdict(subject=subject), legitimate(), verdict()]})
    await metered.submit(verdict(subject=subject))  # a repeat of the subject, a new verdict
    await metered.submit({"verdicts": [legitimate()] * 1})

    after = await scrape(metered)
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    assert value(delta, "tollgate_verdicts_received_total") == 5
    assert value(delta, "tollgate_decisions_total", status="ok") == 5
    assert value(delta, "tollgate_evaluation_duration_seconds_count") == 5
    assert value(delta, "tollgate_evaluation_duration_seconds_sum") > 0
    assert value(delta, "tollgate_audit_events_total", type="verdict.received") == 5
    assert value(delta, "tollgate_audit_events_total", type="decision.recorded") == 5
    assert value(after, "tollgate_database_up") == 1


async def test_a_repeated_verdict_is_not_received_twice(metered: Running) -> None:
    document = verdict()
    await metered.submit(document)
    before = await scrape(metered)

    await metered.submit(document)

    after = await scrape(metered)
    assert value(after, "tollgate_verdicts_received_total") == value(
        before, "tollgate_verdicts_received_total"
    )


async def test_gauges_agree_with_the_database(metered: Running) -> None:
    await metered.submit({"verdicts": [verdict(), verdict()]})
    await metered.runtime.enforcer.reconcile("edge")

    samples = await scrape(metered)

    async with metered.runtime.db.read() as session:
        rows = await session.execute(
            select(col(ActionRow.type), col(ActionRow.state), func.count()).group_by(
                col(ActionRow.type), col(ActionRow.state)
            )
        )
        counts = {(t, s): n for t, s, n in rows.all()}
    assert counts
    for (action_type, state), n in counts.items():
        assert value(samples, "tollgate_actions", type=action_type, state=state) == n
    head = (await metered.client.get("/v1/audit", params={"limit": 1})).json()["items"][0]
    assert value(samples, "tollgate_audit_head_seq") >= head["seq"]
    assert value(samples, "tollgate_verdicts_undecided") == 0
    assert value(samples, "tollgate_connector_healthy", connector="edge") == 1
    assert value(samples, "tollgate_connector_lag_seconds", connector="edge") == 0
    applied = value(samples, "tollgate_connector_entries", connector="edge", state="applied")
    desired = value(samples, "tollgate_connector_entries", connector="edge", state="desired")
    assert applied == desired > 0


async def test_an_append_that_rolls_back_counts_nothing(metered: Running) -> None:
    before = await scrape(metered)

    with pytest.raises(RuntimeError):
        async with metered.runtime.db.write() as session, session.begin():
            await audit.record(
                session, [EventDraft(type="test.rolled_back", actor="tests", at=utcnow())]
            )
            raise RuntimeError("the caller's transaction fails after the append")
    async with metered.runtime.db.write() as session, session.begin():
        await audit.record(session, [EventDraft(type="test.committed", actor="tests", at=utcnow())])

    after = await scrape(metered)
    assert value(after, "tollgate_audit_events_total", type="test.rolled_back") == 0
    assert (
        value(after, "tollgate_audit_events_total", type="test.committed")
        == value(before, "tollgate_audit_events_total", type="test.committed") + 1
    )
