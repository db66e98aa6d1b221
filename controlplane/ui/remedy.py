"""The console's appeal pages: the queue with the remediation figures, and one appeal
with every action it covers. Subjects are shown as the console shows them everywhere
(API keys by handle)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.remedy import report
from controlplane.remedy.repository import AppealFilter
from controlplane.remedy.schemas import Figures
from controlplane.remedy.service import AppealView, Remedy
from controlplane.ui.display import handles, mentions, subject_label, when
from controlplane.ui.service import Subject, subject_href

STATES = ("open", "upheld", "denied")
QUEUE = 100
FIGURES_WINDOW = timedelta(days=30)


def _subject(kind: str, value: str) -> Subject:
    if kind == "api_key":
        handles.remember(value)
    return Subject(kind, subject_label(kind, value), subject_href(kind, value))


@dataclass
class AppealLine:
    id: str
    state: str
    provider: str
    subject: Subject
    statement: str
    filed: str
    filed_by: str
    decided: str
    decided_by: str
    actions: int


@dataclass
class CoveredLine:
    id: str
    type: str
    target: Subject
    rule: str
    state: str
    reference: str
    lifted: str


@dataclass
class AppealPage:
    line: AppealLine
    reference: str
    contact: str
    full_statement: str
    reason: str
    outcome: str
    exempt_until: str
    trace_id: str
    actions: list[CoveredLine] = field(default_factory=list)


@dataclass
class QueuePage:
    state: str
    appeals: list[AppealLine]
    totals: Figures
    rules: list[Figures]
    detectors: list[Figures]
    since: str


def _line(view: AppealView) -> AppealLine:
    row = view.row
    statement = row.statement if len(row.statement) <= 140 else row.statement[:139] + "…"
    return AppealLine(
        id=row.id,
        state=row.state,
        provider=row.provider,
        subject=_subject(row.subject_kind, row.subject_value),
        statement=statement,
        filed=when(row.filed_at),
        filed_by=row.filed_by,
        decided=when(row.decided_at),
        decided_by=row.decided_by or "",
        actions=len(view.actions),
    )


async def queue_page(session: AsyncSession, remedy: Remedy, state: str) -> QueuePage:
    chosen = state if state in STATES else ""
    now = datetime.now(UTC)
    views = await remedy.appeals(session, AppealFilter(state=chosen or None), None, QUEUE)
    figures = await report.remediation(session, now - FIGURES_WINDOW, now)
    return QueuePage(
        state=chosen,
        appeals=[_line(v) for v in views],
        totals=figures.totals,
        rules=figures.rules,
        detectors=figures.detectors,
        since=when(figures.since),
    )


async def appeal_page(session: AsyncSession, remedy: Remedy, appeal_id: str) -> AppealPage:
    view = await remedy.appeal(session, appeal_id)
    row = view.row
    return AppealPage(
        line=_line(view),
        reference=row.reference or "",
        contact=row.contact,
        full_statement=row.statement,
        reason=mentions(row.decision_reason or ""),
        outcome=mentions(view.outcome or ""),
        exempt_until=when(view.exempt_until),
        trace_id=row.trace_id or "",
        actions=[
            CoveredLine(
                id=a.id,
                type=a.type,
                target=_subject(a.target_kind, a.target_value),
                rule=a.rule,
                state=a.state,
                reference=a.reference or "",
                lifted=when(lifted_at),
            )
            for a, lifted_at in view.actions
        ],
    )


def duration(seconds: float | None) -> str:
    """A median as the console shows it."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"
