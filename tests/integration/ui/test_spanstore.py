"""The embedded span store: pipeline spans reach the database off the request path,
`GET /v1/traces/{id}` returns them tree-ready, reads are not kept, old spans are pruned,
OTLP export works beside it, and no span carries an API key id or a token."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from sqlalchemy import select
from sqlmodel import col

from controlplane.auth.roles import Role
from controlplane.store.models import SpanRow
from controlplane.telemetry import spanstore
from tests.integration.ui.conftest import Seeded
from tests.support.store import add, fetch
from tests.support.verdicts import new_subject, verdict

PIPELINE = ["verdict.ingest", "policy.evaluate", "action.plan"]


def traceparent() -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


async def flush() -> None:
    assert await asyncio.to_thread(spanstore.store.flush), "the span store did not flush"


async def test_a_verdicts_trace_is_stored_and_served_tree_ready(seeded: Seeded) -> None:
    api = seeded.api
    trace_id, header = traceparent()
    document = verdict(subject=new_subject())
    [result] = (await api.submit(document, headers={"traceparent": header}))["results"]
    await api.runtime.enforcer.settle()
    await flush()

    response = await api.client.get(f"/v1/traces/{trace_id}")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["trace_id"] == trace_id and body["truncated"] is False
    spans = body["spans"]
    by_id = {s["span_id"]: s for s in spans}
    mine = {
        s["name"]: s for s in spans if s["attributes"].get("tollgate.verdict_id") == document["id"]
    }
    assert sorted(mine) == sorted(PIPELINE)
    ingest, evaluate, plan = (mine[n] for n in PIPELINE)
    assert evaluate["parent_id"] == ingest["span_id"]
    assert plan["parent_id"] == evaluate["span_id"]
    # The request's server span is kept (it changed something) and parents the ingest.
    server = by_id[ingest["parent_id"]]
    assert server["kind"] == "server" and "POST" in server["name"]
    # The detector's span is not here: the request continues it from `traceparent`.
    assert server["parent_id"] is not None and server["parent_id"] not in by_id
    assert evaluate["attributes"]["tollgate.policy_revision"] == result["policy_revision"]
    assert evaluate["attributes"]["tollgate.decision_id"] == result["decision_id"]
    for span in spans:
        assert span["end_ns"] >= span["start_ns"] > 1_700_000_000 * 10**9
        assert span["status"] in {"unset", "ok", "error"}
        assert span["service"] == "tollgate"
    starts = [s["start_ns"] for s in spans]
    assert starts == sorted(starts)
    # The connector's apply continues the trace of the change it applied.
    [apply] = [s for s in spans if s["name"] == "connector.apply"]
    assert apply["parent_id"] == plan["span_id"]
    assert not any(s["attributes"].get("asgi.event.type") for s in spans), "ASGI sub-spans"


async def test_read_requests_are_not_kept(seeded: Seeded) -> None:
    api = seeded.api
    trace_id, header = traceparent()
    response = await api.client.get("/v1/actions", headers={"traceparent": header})
    assert response.status_code == 200
    await flush()

    assert await fetch(api.runtime.db, SpanRow, col(SpanRow.trace_id) == trace_id) == []
    assert (await api.client.get(f"/v1/traces/{trace_id}")).status_code == 404


async def test_no_api_key_id_or_token_is_ever_in_a_span(seeded: Seeded) -> None:
    api = seeded.api
    key_id = f"key_secretive_{secrets.token_hex(6)}"
    token, _ = await api.runtime.tokens.create("detector-x", Role.DETECTOR, actor="tests")
    headers = {"Authorization": f"Bearer {token}"}
    # A first offense and a repeat: a rate limit, then a revocation, of this very key.
    for _ in range(2):
        document = verdict(subject=new_subject() | {"api_key_id": key_id})
        response = await api.client.post("/v1/verdicts", json=document, headers=headers)
        assert response.status_code == 202, response.text
    await api.runtime.enforcer.settle()
    await flush()

    async with api.runtime.db.read() as session:
        rows = list((await session.execute(select(SpanRow))).scalars())
    assert rows, "no spans were stored"
    stored = json.dumps([row.model_dump() for row in rows], default=str)
    assert key_id not in stored
    assert token not in stored
    assert "Bearer" not in stored


async def test_prune_drops_spans_past_retention_a_chunk_at_a_time(seeded: Seeded) -> None:
    db = seeded.api.runtime.db
    now = time.time_ns()
    old = [secrets.token_hex(16) for _ in range(5)]
    fresh = secrets.token_hex(16)
    await add(
        db,
        *(_row(t, now - (80 + i) * 3600 * 10**9) for i, t in enumerate(old)),
        _row(fresh, now - 3600 * 10**9),
    )

    with db.write_blocking() as session, session.begin():
        removed = spanstore.prune(session, retention_hours=72, limit=2)
    assert removed == 2  # one chunk, the oldest first
    assert await fetch(db, SpanRow, col(SpanRow.trace_id) == old[-1]) == []
    assert len(await fetch(db, SpanRow, col(SpanRow.trace_id) == old[0])) == 1

    await seeded.api.runtime.prune_spans()  # the job: chunk after chunk, until done
    for trace_id in old:
        assert await fetch(db, SpanRow, col(SpanRow.trace_id) == trace_id) == []
    assert len(await fetch(db, SpanRow, col(SpanRow.trace_id) == fresh)) == 1


async def test_trace_api_checks_the_id_and_the_role(seeded: Seeded) -> None:
    api = seeded.api
    trace_id = seeded.actions()[0]["trace_id"]
    assert (await api.client.get("/v1/traces/not-hex")).status_code == 422
    missing = await api.client.get(f"/v1/traces/{'0' * 32}")
    assert missing.status_code == 404 and "kept 72 hours" in missing.json()["message"]
    detector = await api.token(Role.DETECTOR)
    assert (await api.client.get(f"/v1/traces/{trace_id}", headers=detector)).status_code == 403
    auditor = await api.token(Role.AUDITOR)
    answer = await api.client.get(f"/v1/traces/{trace_id.upper()}", headers=auditor)
    assert answer.status_code == 200 and answer.json()["spans"]


def _row(trace_id: str, start_ns: int) -> SpanRow:
    return SpanRow(
        trace_id=trace_id,
        span_id=secrets.token_hex(8),
        parent_id=None,
        name="policy.evaluate",
        kind="internal",
        start_ns=start_ns,
        end_ns=start_ns + 1000,
        status="unset",
        status_message=None,
        attributes={},
        service="tollgate",
    )


# -- what the exporter keeps, and OTLP beside it -----------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        _Receiver.bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[str]:
    """A real OTLP/HTTP endpoint on loopback that records what it is sent."""
    _Receiver.bodies = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()
        thread.join(5)


async def test_otlp_export_works_alongside_the_store(seeded: Seeded, otlp_receiver: str) -> None:
    db = seeded.api.runtime.db
    provider = TracerProvider()
    otlp = BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_receiver, timeout=5))
    provider.add_span_processor(otlp)
    spanstore.store.attach(provider, db.url)
    try:
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span(
            "connector.apply",
            attributes={"tollgate.connector": "edge", "http.request.header.authorization": "x"},
        ) as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
        with tracer.start_as_current_span(
            "GET /v1/actions",
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": "GET"},
        ) as read:
            read_trace = format(read.get_span_context().trace_id, "032x")
            with tracer.start_as_current_span("under a read"):
                pass
        assert otlp.force_flush(5000)
        await flush()
    finally:
        # Not provider.shutdown(): it would shut the process's span store down too.
        await asyncio.to_thread(otlp.shutdown)
        await asyncio.to_thread(spanstore.store.detach, db.url)

    [row] = await fetch(db, SpanRow, col(SpanRow.trace_id) == trace_id)
    assert row.name == "connector.apply"
    assert row.attributes["http.request.header.authorization"] == spanstore.REDACTED
    assert await fetch(db, SpanRow, col(SpanRow.trace_id) == read_trace) == []
    assert any(trace_id.encode() in _hex(body) for body in _Receiver.bodies), "OTLP got nothing"


def _hex(body: bytes) -> bytes:
    return body.hex().encode()
