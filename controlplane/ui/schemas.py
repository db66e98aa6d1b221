"""Trace API schemas: spans as stored, ready to be made into a tree by `parent_id`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class SpanOut(BaseModel):
    span_id: str = Field(description="16 hex digits.")
    parent_id: str | None = Field(
        description="The parent span; null, or a span not in `spans` (a caller's span "
        "continued through `traceparent`, or a read request's span, which is not kept), "
        "makes this span a root."
    )
    name: str
    kind: str = Field(description="`internal`, `server`, `client`, `producer` or `consumer`.")
    start_ns: int = Field(description="Nanoseconds since the Unix epoch.")
    end_ns: int
    duration_ms: float
    status: str = Field(description="`unset`, `ok` or `error`.")
    status_message: str | None
    attributes: dict[str, Any] = Field(description="`tollgate.*` and OpenTelemetry attributes.")
    service: str


class TraceOut(BaseModel):
    trace_id: str
    spans: list[SpanOut] = Field(description="By start time.")
    truncated: bool = Field(description="The trace has more spans than one answer holds.")
