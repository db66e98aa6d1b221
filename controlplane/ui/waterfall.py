"""A trace laid out as a waterfall: one bar per span, placed by start and end time,
indented by depth. Pure layout (percentages), drawn by HTML and CSS alone.

A batch of verdicts shares one trace (the request's), so an action's trace also
holds the other verdicts' spans: those are folded away unless asked for, leaving the
request, this verdict's ingest, evaluate and plan spans, and the connector spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from controlplane.store.models import SpanRow
from controlplane.ui.display import Redactor, duration_ms

VERDICT_ATTRIBUTE = "tollgate.verdict_id"


@dataclass(frozen=True)
class Bar:
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    depth: int
    left: float
    """Percent of the trace's width before the bar starts."""
    width: float
    duration: str
    status: str
    status_message: str
    attributes: list[tuple[str, str]]
    mine: bool
    """The span names the verdict the page is about."""


@dataclass
class Waterfall:
    trace_id: str
    total: str
    bars: list[Bar] = field(default_factory=list)
    hidden: int = 0
    """Spans of the trace's other verdicts, folded away."""
    ticks: list[tuple[float, str]] = field(default_factory=list)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def layout(
    trace_id: str,
    spans: Sequence[SpanRow],
    redact: Redactor,
    verdict_id: str | None = None,
    show_all: bool = False,
) -> Waterfall:
    """Bars in tree order (each span after its parent, siblings by start time)."""
    if not spans:
        return Waterfall(trace_id, "0 ms")
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[SpanRow]] = {}
    for span in spans:
        parent = span.parent_id if span.parent_id in ids else None
        children.setdefault(parent, []).append(span)
    for siblings in children.values():
        siblings.sort(key=lambda s: (s.start_ns, s.span_id))

    def other_verdict(span: SpanRow) -> bool:
        named = span.attributes.get(VERDICT_ATTRIBUTE)
        return verdict_id is not None and named is not None and named != verdict_id

    ordered: list[tuple[SpanRow, int]] = []
    hidden = 0
    stack: list[tuple[SpanRow, int]] = [(s, 0) for s in reversed(children.get(None, []))]
    while stack:
        span, depth = stack.pop()
        if not show_all and other_verdict(span):
            hidden += _count(span, children)
            continue
        ordered.append((span, depth))
        stack.extend((c, depth + 1) for c in reversed(children.get(span.span_id, [])))

    start = min(s.start_ns for s, _ in ordered) if ordered else 0
    end = max(s.end_ns for s, _ in ordered) if ordered else 0
    width = max(end - start, 1)
    waterfall = Waterfall(trace_id, duration_ms(start, end), hidden=hidden)
    for span, depth in ordered:
        left = (span.start_ns - start) / width * 100
        waterfall.bars.append(
            Bar(
                span_id=span.span_id,
                parent_id=span.parent_id,
                name=redact.text(span.name),
                kind=span.kind,
                depth=min(depth, 12),
                left=round(left, 3),
                width=round(max((span.end_ns - span.start_ns) / width * 100, 0.4), 3),
                duration=duration_ms(span.start_ns, span.end_ns),
                status=span.status,
                status_message=redact.text(span.status_message),
                attributes=sorted(
                    (redact.text(k), redact.text(_text(v))) for k, v in span.attributes.items()
                ),
                mine=verdict_id is not None
                and span.attributes.get(VERDICT_ATTRIBUTE) == verdict_id,
            )
        )
    waterfall.ticks = [
        (p, duration_ms(start, start + int(width * p / 100))) for p in (0, 25, 50, 75)
    ]
    return waterfall


def _count(span: SpanRow, children: dict[str | None, list[SpanRow]]) -> int:
    total, stack = 0, [span]
    while stack:
        current = stack.pop()
        total += 1
        stack.extend(children.get(current.span_id, []))
    return total
