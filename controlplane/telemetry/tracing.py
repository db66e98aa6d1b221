"""Tracing set-up. Spans are always made (their trace ids are stored on decisions and
actions); they are exported over OTLP/HTTP when `TOLLGATE_OTLP_ENDPOINT` is set."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from controlplane import __version__

SPAN_INGEST = "verdict.ingest"
SPAN_EVALUATE = "policy.evaluate"
SPAN_PLAN = "action.plan"

_lock = threading.Lock()
_provider: TracerProvider | None = None


def configure(otlp_endpoint: str = "") -> TracerProvider:
    """Install Tollgate's tracer provider once per process and return it."""
    global _provider
    with _lock:
        if _provider is None:
            _provider = TracerProvider(
                resource=Resource.create(
                    {"service.name": "tollgate", "service.version": __version__}
                )
            )
            trace.set_tracer_provider(_provider)
            if otlp_endpoint:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )

                _provider.add_span_processor(
                    BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint))
                )
        return _provider


_tracer: trace.Tracer | None = None


def tracer() -> trace.Tracer:
    """Tollgate's tracer, looked up once (the lookup is not free on a hot path)."""
    global _tracer
    if _tracer is None:
        _tracer = trace.get_tracer("tollgate", __version__)
    return _tracer


def trace_id_hex(span: trace.Span) -> str | None:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


_IDS = RandomIdGenerator()
_SCOPE = InstrumentationScope("tollgate", __version__)
_SDK: tuple[SpanProcessor, Resource] | None = None


def _sdk() -> tuple[SpanProcessor, Resource] | None:
    """The installed SDK provider's span processors (all of them, as one) and resource;
    None while no SDK provider is installed."""
    global _SDK
    if _SDK is None:
        provider = trace.get_tracer_provider()
        if isinstance(provider, TracerProvider):
            # The provider's own fan-out to every processor added to it (the span
            # store, OTLP), as its spans use when they end.
            _SDK = (provider._active_span_processor, provider.resource)
    return _SDK


def pipeline_span(
    name: str,
    parent: trace.Span | None,
    attributes: Mapping[str, AttributeValue],
    start_ns: int | None = None,
) -> trace.Span:
    """A span of the decide path (`verdict.ingest`, `policy.evaluate`, `action.plan`,
    thousands a second). The SDK's `start_span` costs ~21 µs (sampler call, attribute
    limits and locks, a start hook per processor); this span ~4: its context is made
    as the SDK's default sampler would (parent-based, always on: a child of a sampled
    parent is recorded, of an unsampled one is not) and, when it ends, the same
    processors get it as a `ReadableSpan`, as they get the SDK's. Without an SDK
    provider (nothing configured) it is the API's span, as `tracer().start_span`'s."""
    sdk = _sdk()
    if sdk is None:
        context = trace.set_span_in_context(parent) if parent is not None else None
        return tracer().start_span(name, context, attributes=attributes, start_time=start_ns)
    return PipelineSpan(name, parent, attributes, start_ns, sdk)


class PipelineSpan(trace.Span):
    """See `pipeline_span`. Ended once; attributes set after the end are ignored."""

    __slots__ = ("_attributes", "_context", "_end", "_name", "_parent", "_sdk", "_start", "_status")

    def __init__(
        self,
        name: str,
        parent: trace.Span | None,
        attributes: Mapping[str, AttributeValue],
        start_ns: int | None,
        sdk: tuple[SpanProcessor, Resource],
    ) -> None:
        above = parent.get_span_context() if parent is not None else None
        if above is not None and above.is_valid:
            trace_id, flags, state = above.trace_id, above.trace_flags, above.trace_state
            self._parent: SpanContext | None = above
        else:
            trace_id = _IDS.generate_trace_id()
            flags = trace.TraceFlags(trace.TraceFlags.SAMPLED | trace.TraceFlags.RANDOM_TRACE_ID)
            state = None
            self._parent = None
        self._context = SpanContext(
            trace_id, _IDS.generate_span_id(), is_remote=False, trace_flags=flags, trace_state=state
        )
        self._name = name
        self._attributes: dict[str, AttributeValue] | None = (
            {k: _frozen(v) for k, v in attributes.items()} if flags.sampled else None
        )
        self._status = Status(StatusCode.UNSET)
        self._start = start_ns if start_ns is not None else time.time_ns()
        self._end: int | None = None
        self._sdk = sdk

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._attributes is not None and self._end is None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self.is_recording():
            assert self._attributes is not None
            self._attributes[key] = _frozen(value)

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.is_recording():
            self._status = status if isinstance(status, Status) else Status(status, description)

    def update_name(self, name: str) -> None:
        if self.is_recording():
            self._name = name

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        raise NotImplementedError("pipeline spans carry no events")

    def record_exception(
        self,
        exception: BaseException,
        attributes: Any = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        raise NotImplementedError("pipeline spans carry no events: set their status")

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            return
        self._end = end_time if end_time is not None else time.time_ns()
        if self._attributes is None:
            return
        processor, resource = self._sdk
        processor.on_end(
            ReadableSpan(
                name=self._name,
                context=self._context,
                parent=self._parent,
                resource=resource,
                attributes=self._attributes,
                kind=SpanKind.INTERNAL,
                status=self._status,
                start_time=self._start,
                end_time=self._end,
                instrumentation_scope=_SCOPE,
            )
        )


def _frozen(value: AttributeValue) -> AttributeValue:
    """A sequence as a tuple, as the SDK keeps attribute values."""
    return tuple(value) if isinstance(value, list) else value
