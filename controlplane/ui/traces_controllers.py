"""`/v1/traces`: a trace's spans from the embedded span store, for tools and the console.

It lives beside the console, which draws the same spans as a waterfall."""

from __future__ import annotations

import re
from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.auth.guards import requires
from controlplane.auth.roles import READERS
from controlplane.errors import InvalidInput, NotFound
from controlplane.settings import Settings
from controlplane.telemetry import spanstore
from controlplane.ui.schemas import SpanOut, TraceOut

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


class TraceController(Controller):
    path = "/v1/traces"
    tags = ["traces"]
    guards = [requires(*READERS)]

    @get("/{trace_id:str}", operation_id="getTrace", summary="Get a trace's spans")
    async def get_trace(
        self,
        trace_id: Annotated[str, Parameter(pattern=r"^[0-9a-fA-F]{32}$")],
        session: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> TraceOut:
        """The spans of one trace kept by the embedded span store, by start time: span
        id, parent, name, start and end in nanoseconds, attributes and status. A verdict's,
        decision's and action's `trace_id` name their trace."""
        trace_id = trace_id.lower()
        if not TRACE_ID.match(trace_id):
            raise InvalidInput(
                f"trace id {trace_id!r} is not 32 hex digits",
                details=[{"field": "trace_id", "message": "expected 32 hex digits"}],
            )
        rows = await spanstore.trace_spans(session, trace_id, spanstore.MAX_TRACE_SPANS + 1)
        if not rows:
            hours = settings.span_retention_hours
            kept = f"spans are kept {hours:g} hours" if hours > 0 else "the span store is off"
            raise NotFound(
                f"no spans stored for trace {trace_id} ({kept}; read requests are not kept, "
                "and spans show about a second after they end)"
            )
        return TraceOut(
            trace_id=trace_id,
            truncated=len(rows) > spanstore.MAX_TRACE_SPANS,
            spans=[
                SpanOut(
                    span_id=r.span_id,
                    parent_id=r.parent_id,
                    name=r.name,
                    kind=r.kind,
                    start_ns=r.start_ns,
                    end_ns=r.end_ns,
                    duration_ms=round((r.end_ns - r.start_ns) / 1e6, 3),
                    status=r.status,
                    status_message=r.status_message,
                    attributes=r.attributes,
                    service=r.service,
                )
                for r in rows[: spanstore.MAX_TRACE_SPANS]
            ],
        )


ROUTES = [TraceController]
