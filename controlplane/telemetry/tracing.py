"""Tracing set-up. Spans are always made (their trace ids are stored on decisions and
actions); they are exported over OTLP/HTTP when `TOLLGATE_OTLP_ENDPOINT` is set."""

from __future__ import annotations

import threading

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

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
