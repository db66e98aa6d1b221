"""The embedded span store: finished spans kept in Tollgate's own database, so the web
console and `GET /v1/traces/{id}` show a trace without a tracing backend.

The request path only hands a finished span to a `BatchSpanProcessor` queue (a full
queue drops spans; it never blocks a request). The processor's worker thread writes
each batch with one bulk INSERT through a small sync engine of its own
(`store.db.create_span_engine`), so span writes never take a connection from the API's
pool. OTLP export, when `TOLLGATE_OTLP_ENDPOINT` is set, is another processor on the
same provider and sees every span, kept here or not.

What is kept: Tollgate's pipeline spans (`verdict.ingest`, `policy.evaluate`,
`action.plan`, `connector.apply`, `connector.reconcile`) and the HTTP requests that
change something, with whatever they started. Reads (GET, HEAD, OPTIONS: health
checks, console pages, API queries) and everything under them are dropped, as are
the ASGI send/receive sub-spans: they would fill the table and no auditor asks for
them. Attribute keys that name credentials are redacted as a last line of defence;
the first is that no span is ever given a secret or an API key id.

The telemetry area owns the `span` table: its SQL lives in `repository.py`.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from controlplane.store.db import create_span_engine, writers_of
from controlplane.store.models import SpanRow
from controlplane.telemetry import repository

log = logging.getLogger(__name__)

SCHEDULE_DELAY_MS = 1000
"""A trace shows in the console about a second after its spans end."""
MAX_QUEUE = 16384
"""Spans waiting to be written (a full queue drops spans): about five seconds of a
thousand verdicts a second, at three spans each."""
MAX_BATCH = 2048
"""Spans written per transaction. Batches of 512 were three or four commits (each an
fsync, on SQLite in turn with the verdict groups) per group of 500 verdicts."""
MAX_TRACE_SPANS = 5000
"""A trace larger than this (a huge batch) is cut when read back."""
PRUNE_SECONDS = 600
PRUNE_CHUNK = 5000
"""Spans deleted per transaction: at a thousand verdicts a second ten minutes of spans
are millions of rows, and one DELETE of them all would hold SQLite's write lock (every
verdict's) for seconds."""
"""How often the retention job runs (`Runtime.start` schedules it)."""

_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_REMEMBERED = 10_000
_SENSITIVE_KEY = re.compile(r"authorization|cookie|secret|password|token|api[._-]?key", re.I)
_SENSITIVE_VALUE = re.compile(r"^(bearer\s|tg_)", re.I)
REDACTED = "[redacted]"


def _method(attributes: Any) -> str | None:
    value = attributes.get("http.request.method") or attributes.get("http.method")
    return str(value).upper() if value else None


def _path(attributes: Any) -> str:
    return str(attributes.get("url.path") or attributes.get("http.target") or "")


def _is_read(span: Span) -> bool:
    """A server span of a read-only request, or of a console page."""
    if span.kind is not trace.SpanKind.SERVER:
        return False
    attributes = span.attributes or {}
    return _method(attributes) in _READS or _path(attributes).startswith("/console")


@functools.lru_cache(maxsize=4096)
def _sensitive_key(key: str) -> bool:
    """Whether an attribute key names a credential (a few dozen keys recur: asked once)."""
    return _SENSITIVE_KEY.search(key) is not None


def _attribute(key: str, value: Any) -> Any:
    if _sensitive_key(key):
        return REDACTED
    if isinstance(value, str):
        # The pattern's first characters, before the regex (most values start otherwise).
        return REDACTED if value[:1] in "bBtT" and _SENSITIVE_VALUE.match(value) else value
    if isinstance(value, (list, tuple)):
        return [_attribute(key, v) for v in value]
    return value


_SERVICES: dict[int, tuple[Resource, str]] = {}
"""Each tracer provider's resource -> its service name, by identity: a `Resource` hashes
by dumping its attributes to JSON, which cost the exporter 14% of its time per span."""


def _service(resource: Resource) -> str:
    known = _SERVICES.get(id(resource))
    if known is not None and known[0] is resource:
        return known[1]
    name = str(resource.attributes.get("service.name", "tollgate"))[:100]
    if len(_SERVICES) >= 64:
        _SERVICES.clear()
    _SERVICES[id(resource)] = (resource, name)
    return name


def span_row(span: ReadableSpan) -> dict[str, Any] | None:
    """The `span` row for a finished span, or None for spans not kept (see above)."""
    ctx = span.context
    start, end = span.start_time, span.end_time
    if ctx is None or not ctx.is_valid or start is None or end is None:
        return None
    attributes = span.attributes or {}
    if "asgi.event.type" in attributes:
        return None
    parent = span.parent
    status = span.status
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent and parent.is_valid else None,
        "name": span.name[:200],
        "kind": _KINDS[span.kind],
        "start_ns": start,
        "end_ns": max(end, start),
        "status": _STATUSES[status.status_code],
        "status_message": status.description or None,
        "attributes": {k: _attribute(k, v) for k, v in attributes.items()},
        "service": _service(span.resource),
    }


_KINDS = {kind: kind.name.lower() for kind in trace.SpanKind}
_STATUSES = {code: code.name.lower() for code in trace.StatusCode}


class _Sink:
    """One database spans are written to."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_span_engine(url)
        self.users = 1
        self._writers = writers_of(url)

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """One batch, in a transaction of the exporter thread's own engine, queued
        with the process's other writers of the file (the decide thread's groups)."""
        with self._writers, self.engine.begin() as conn:
            repository.insert_spans(conn, rows)


class DatabaseSpanExporter(SpanExporter):
    """Writes each batch to every attached database (one in a server; tests may run
    several apps in one process, which share the process's tracer provider)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sinks: dict[str, _Sink] = {}

    def attach(self, url: str) -> None:
        with self._lock:
            sink = self._sinks.get(url)
            if sink is None:
                self._sinks[url] = _Sink(url)
            else:
                sink.users += 1

    def detach(self, url: str) -> None:
        with self._lock:
            sink = self._sinks.get(url)
            if sink is None:
                return
            sink.users -= 1
            if sink.users == 0:
                del self._sinks[url]
                sink.engine.dispose()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        rows = [r for r in (span_row(s) for s in spans) if r is not None]
        if not rows:
            return SpanExportResult.SUCCESS
        result = SpanExportResult.SUCCESS
        # Held while writing, so a sink is never disposed under a batch being written.
        with self._lock:
            for sink in self._sinks.values():
                try:
                    sink.write(rows)
                except SQLAlchemyError as exc:
                    # The message names the table and error, never the rows' contents.
                    log.warning("span store: a batch of %d spans was lost: %s", len(rows), exc)
                    result = SpanExportResult.FAILURE
        return result

    def shutdown(self) -> None:
        with self._lock:
            for sink in self._sinks.values():
                sink.engine.dispose()
            self._sinks.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class StoreProcessor(SpanProcessor):
    """Batches spans worth keeping for the exporter. Reads are recognised when their
    server span starts, and their descendants by their parent, so no span of a read
    request is queued at all."""

    def __init__(self, exporter: DatabaseSpanExporter) -> None:
        self.exporter = exporter
        self._batch = BatchSpanProcessor(
            exporter,
            max_queue_size=MAX_QUEUE,
            schedule_delay_millis=SCHEDULE_DELAY_MS,
            max_export_batch_size=MAX_BATCH,
        )
        self._skipped: OrderedDict[int, None] = OrderedDict()
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        # The span knows its parent: no context lookup on the hot path.
        parent = span.parent
        if _is_read(span) or (parent is not None and parent.span_id in self._skipped):
            with self._lock:
                self._skipped[span.context.span_id] = None
                if len(self._skipped) > _REMEMBERED:
                    self._skipped.popitem(last=False)

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is None:
            return
        with self._lock:
            if span.context.span_id in self._skipped:
                return
        self._batch.on_end(span)

    def shutdown(self) -> None:
        self._batch.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batch.force_flush(timeout_millis)


class SpanStore:
    """The process's span store: one processor, added once to each tracer provider,
    writing to the databases of the runtimes attached to it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._processor: StoreProcessor | None = None
        self._providers: weakref.WeakSet[TracerProvider] = weakref.WeakSet()

    def attach(self, provider: TracerProvider, url: str) -> None:
        """Start keeping spans in the database at `url`."""
        with self._lock:
            if self._processor is None:
                self._processor = StoreProcessor(DatabaseSpanExporter())
            if provider not in self._providers:
                provider.add_span_processor(self._processor)
                self._providers.add(provider)
            self._processor.exporter.attach(url)

    def detach(self, url: str) -> None:
        """Write what is queued, then stop writing to `url` (blocks: call it in a thread)."""
        processor = self._processor
        if processor is None:
            return
        processor.force_flush(5000)
        processor.exporter.detach(url)

    def flush(self, timeout_millis: int = 5000) -> bool:
        """Write every span queued so far (tests call it; it blocks)."""
        processor = self._processor
        return processor.force_flush(timeout_millis) if processor else True


store = SpanStore()


def prune(session: Session, retention_hours: float, limit: int = PRUNE_CHUNK) -> int:
    """Delete at most `limit` of the spans that started more than `retention_hours`
    ago; returns how many (the caller repeats, one transaction a chunk, until fewer)."""
    cutoff = time.time_ns() - int(retention_hours * 3600 * 1e9)
    return repository.prune_blocking(session, cutoff, limit)


async def trace_spans(
    session: AsyncSession, trace_id: str, limit: int = MAX_TRACE_SPANS
) -> list[SpanRow]:
    """The stored spans of one trace, by start time."""
    return await repository.trace_spans(session, trace_id, limit)
