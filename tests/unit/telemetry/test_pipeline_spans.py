"""The decide path's spans, made without the SDK's per-span machinery, reach the span
processors as the SDK's own spans would: same trace, parent, name, attributes, status,
times, resource and scope; sampled as the SDK's default sampler samples; ended once;
and OTLP encodes them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, StatusCode, TraceFlags

from controlplane.telemetry.tracing import PipelineSpan


@pytest.fixture
def provider() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    yield provider, exported
    provider.shutdown()


def made(provider: TracerProvider, parent: trace.Span | None, name: str) -> PipelineSpan:
    sdk = (provider._active_span_processor, provider.resource)
    return PipelineSpan(name, parent, {"tollgate.verdict_id": "v-1"}, None, sdk)


def test_a_pipeline_span_is_what_the_sdk_would_have_exported(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    sdk, exported = provider
    tracer = sdk.get_tracer("tollgate")
    parent = tracer.start_span("POST /v1/verdicts")
    ours = made(sdk, parent, "policy.evaluate")
    theirs = tracer.start_span(
        "policy.evaluate",
        trace.set_span_in_context(parent),
        attributes={"tollgate.verdict_id": "v-1"},
    )
    for span in (ours, theirs):
        span.set_attribute("tollgate.rules", ["b", "a"])
        span.set_status(StatusCode.ERROR, "engine refused the input")
        span.end()
        span.end()  # once only
        span.set_attribute("tollgate.late", 1)  # after the end: ignored
    parent.end()

    spans = exported.get_finished_spans()
    [mine] = [s for s in spans if s.context.span_id == ours.get_span_context().span_id]
    [sdks] = [s for s in spans if s.context.span_id == theirs.get_span_context().span_id]
    assert len(spans) == 3
    for field in ("name", "kind", "attributes", "resource"):
        assert getattr(mine, field) == getattr(sdks, field), field
    assert mine.parent == sdks.parent == parent.get_span_context()
    assert mine.context.trace_id == sdks.context.trace_id == parent.get_span_context().trace_id
    assert mine.context.trace_flags == sdks.context.trace_flags
    assert (mine.status.status_code, mine.status.description) == (
        sdks.status.status_code,
        sdks.status.description,
    )
    assert mine.instrumentation_scope is not None
    assert mine.instrumentation_scope.name == "tollgate"
    assert mine.start_time is not None and mine.end_time is not None
    assert mine.start_time <= mine.end_time
    assert dict(mine.attributes or {})["tollgate.rules"] == ("b", "a")

    encoded = encode_spans([mine, sdks])  # what the OTLP exporter sends
    [resource] = encoded.resource_spans
    names = {s.name for scope in resource.scope_spans for s in scope.spans}
    assert names == {"policy.evaluate"}


def test_sampling_follows_the_parent_as_the_sdks_default_sampler_does(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    sdk, exported = provider
    unsampled = NonRecordingSpan(
        SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    )
    child = made(sdk, unsampled, "verdict.ingest")
    assert child.get_span_context().trace_id == 0x1234
    assert child.get_span_context().is_valid and not child.is_recording()
    child.end()

    root = made(sdk, None, "verdict.ingest")
    invalid = made(sdk, trace.INVALID_SPAN, "verdict.ingest")
    for span in (root, invalid):
        assert span.get_span_context().trace_flags.sampled
        assert span.get_span_context().trace_id != 0
        span.end()
    assert root.get_span_context().trace_id != invalid.get_span_context().trace_id

    ended: list[ReadableSpan] = list(exported.get_finished_spans())
    assert {s.context.span_id for s in ended} == {
        root.get_span_context().span_id,
        invalid.get_span_context().span_id,
    }
    assert all(s.parent is None for s in ended)
