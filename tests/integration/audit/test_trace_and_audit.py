"""Every step is traced and audited: trace ids on rows, spans, and one hash chain."""

from __future__ import annotations

import asyncio
import re
import secrets

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlmodel import col

from controlplane.store.models import ActionRow, AuditEventRow, DecisionRow, VerdictRow
from tests.support.app import Running
from tests.support.store import assert_chain_intact, audit_events, count, fetch
from tests.support.verdicts import action_types, legitimate, new_subject, verdict

HEX32 = re.compile(r"^[0-9a-f]{32}$")
PIPELINE_EVENTS = {"verdict.received", "decision.recorded", "action.planned"}


def traceparent() -> tuple[str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, f"00-{trace_id}-{span_id}-01"


async def test_decisions_and_actions_carry_the_verdicts_trace_id(api: Running) -> None:
    document = verdict()
    [result] = (await api.submit(document))["results"]
    db = api.runtime.db

    [row] = await fetch(db, VerdictRow, col(VerdictRow.id) == document["id"])
    [decision] = await fetch(db, DecisionRow, col(DecisionRow.verdict_id) == document["id"])
    actions = await fetch(db, ActionRow, col(ActionRow.verdict_id) == document["id"])

    assert row.trace_id is not None and HEX32.match(row.trace_id)
    assert row.trace_id != "0" * 32
    assert decision.trace_id == row.trace_id == result["trace_id"]
    assert actions and all(a.trace_id == row.trace_id for a in actions)


async def test_each_request_gets_its_own_trace(api: Running) -> None:
    one = (await api.submit(legitimate()))["results"][0]["trace_id"]
    two = (await api.submit(legitimate()))["results"][0]["trace_id"]
    assert one != two


async def test_traceparent_header_continues_the_detectors_trace(api: Running) -> None:
    trace_id, header = traceparent()
    batch = [verdict(), verdict()]

    body = await api.submit({"verdicts": batch}, headers={"traceparent": header})

    assert [r["trace_id"] for r in body["results"]] == [trace_id, trace_id]
    assert all(a["trace_id"] == trace_id for r in body["results"] for a in r["actions"])
    for document in batch:
        stored = (await api.client.get(f"/v1/verdicts/{document['id']}")).json()
        assert stored["trace_id"] == trace_id
        events = await fetch(
            api.runtime.db, AuditEventRow, col(AuditEventRow.verdict_id) == document["id"]
        )
        assert {e.trace_id for e in events} == {trace_id}


async def test_pipeline_spans_name_the_verdict(api: Running, spans: InMemorySpanExporter) -> None:
    trace_id, header = traceparent()
    document = verdict()

    [result] = (await api.submit(document, headers={"traceparent": header}))["results"]

    mine = [
        s
        for s in spans.get_finished_spans()
        if s.attributes.get("tollgate.verdict_id") == document["id"]
    ]
    by_name = {s.name: s for s in mine}
    assert sorted(by_name) == ["action.plan", "policy.evaluate", "verdict.ingest"]
    ingest, evaluate, plan = (
        by_name[n] for n in ("verdict.ingest", "policy.evaluate", "action.plan")
    )
    assert {format(s.context.trace_id, "032x") for s in mine} == {trace_id}
    assert evaluate.parent is not None and evaluate.parent.span_id == ingest.context.span_id
    assert plan.parent is not None and plan.parent.span_id == evaluate.context.span_id
    assert ingest.attributes["tollgate.provider"] == "lab-a"
    assert evaluate.attributes["tollgate.decision_id"] == result["decision_id"]
    assert evaluate.attributes["tollgate.policy_revision"] == result["policy_revision"]
    assert evaluate.attributes["tollgate.decision_status"] == "ok"
    assert plan.attributes["tollgate.actions"] == 1
    assert list(plan.attributes["tollgate.rules"]) == ["graduated.first_offense"]


async def test_audit_events_record_each_step(api: Running) -> None:
    subject = new_subject()
    await api.submit(verdict(subject=subject))
    document = verdict(subject=subject)
    [result] = (await api.submit(document))["results"]

    events = sorted(
        await fetch(api.runtime.db, AuditEventRow, col(AuditEventRow.verdict_id) == document["id"]),
        key=lambda e: e.seq,
    )

    assert [e.type for e in events] == [
        "verdict.received",
        "decision.recorded",
        "action.planned",
        "action.planned",
    ]
    received, recorded, *planned = events
    assert received.actor == "test-admin", "the actor is the token that submitted it"
    assert received.payload["score"] == document["score"]
    assert len(received.payload["content_hash"]) == 64
    assert recorded.actor == "tollgate"
    assert recorded.decision_id == result["decision_id"]
    assert recorded.payload["status"] == "ok"
    assert recorded.payload["policy_revision"] == result["policy_revision"]
    assert recorded.payload["actions"] == 2
    assert sorted(e.action_id for e in planned) == sorted(a["id"] for a in result["actions"])
    assert sorted(e.payload["type"] for e in planned) == ["flag_review", "revoke_key"]
    assert all(e.decision_id == result["decision_id"] for e in planned)


async def test_audit_chain_is_contiguous_and_every_hash_verifies(api: Running) -> None:
    await api.submit({"verdicts": [verdict(), legitimate(), verdict()]})

    events = await audit_events(api.runtime.db)

    assert_chain_intact(events)
    assert {"verdict.received", "decision.recorded", "action.planned"} <= {e.type for e in events}


async def test_concurrent_submissions_make_one_contiguous_chain(fresh_api: Running) -> None:
    shared = new_subject()
    bodies = [
        verdict(subject=shared),
        {"verdicts": [verdict(), legitimate(), verdict(subject=shared)]},
        verdict(),
        {"verdicts": [verdict() for _ in range(5)]},
        legitimate(),
        verdict(subject=shared),
        {"verdicts": [verdict(subject=new_subject(ips=["192.0.2.33"])) for _ in range(3)]},
        verdict(),
    ]

    responses = await asyncio.gather(
        *(fresh_api.client.post("/v1/verdicts", json=body) for body in bodies)
    )

    assert [r.status_code for r in responses] == [202] * len(bodies)
    results = [r for response in responses for r in response.json()["results"]]
    assert all(r["status"] == "decided" for r in results)
    db = fresh_api.runtime.db
    assert await count(db, DecisionRow) == len(results) == await count(db, VerdictRow)
    actions = await count(db, ActionRow)
    events = await audit_events(db)
    assert_chain_intact(events)
    pipeline = [e for e in events if e.type in PIPELINE_EVENTS]
    assert len(pipeline) == 2 * len(results) + actions
    # The subject reported three times, in whatever order the requests landed: decisions
    # do not race on its history, so at most one is a first offense, the others repeats.
    shared_ids = {bodies[0]["id"], bodies[1]["verdicts"][2]["id"], bodies[5]["id"]}
    shared_types = [action_types(r) for r in results if r["verdict_id"] in shared_ids]
    assert len(shared_types) == 3
    assert shared_types.count(["rate_limit"]) <= 1
    assert shared_types.count(["flag_review", "revoke_key"]) >= 2
