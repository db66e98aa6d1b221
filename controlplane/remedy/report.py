"""The remediation report: how often enforcement was appealed and overturned, per rule
and per detector, and how fast people answered (as a regulator asks of a platform's
complaint handling: complaints received, decisions, median decision time, reversals)."""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.enforce import repository as enforce_repo
from controlplane.errors import InvalidInput
from controlplane.ingest import repository as verdicts_repo
from controlplane.plan import repository as actions_repo
from controlplane.remedy import repository
from controlplane.remedy.schemas import Figures, RemediationReport
from controlplane.store.types import utcnow

Format = Literal["json", "csv", "markdown"]
DEFAULT_WINDOW = timedelta(days=30)
TOTAL = "(all)"


def window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    end = until or utcnow()
    start = since or end - DEFAULT_WINDOW
    for name, moment in (("since", start), ("until", end)):
        if moment.tzinfo is None:
            raise InvalidInput(
                f"{name} needs a time zone (e.g. 2026-11-01T00:00:00Z)",
                details=[{"field": name, "message": "no time zone"}],
            )
    if start >= end:
        raise InvalidInput(
            "since must be before until",
            details=[{"field": "since", "message": "not before until"}],
        )
    return start, end


@dataclass
class _Tally:
    actions: int = 0
    states: dict[str, str] = field(default_factory=dict)
    """appeal id -> state."""
    to_appeal: list[float] = field(default_factory=list)
    to_decision: dict[str, float] = field(default_factory=dict)
    to_lift: list[float] = field(default_factory=list)

    def figures(self, name: str) -> Figures:
        states = list(self.states.values())
        upheld, denied = states.count("upheld"), states.count("denied")
        return Figures(
            name=name,
            actions=self.actions,
            appeals=len(states),
            upheld=upheld,
            denied=denied,
            open=states.count("open"),
            overturn_rate=round(upheld / (upheld + denied), 4) if upheld + denied else None,
            median_action_to_appeal_seconds=_median(self.to_appeal),
            median_appeal_to_decision_seconds=_median(list(self.to_decision.values())),
            median_decision_to_lift_seconds=_median(self.to_lift),
        )


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


async def remediation(session: AsyncSession, since: datetime, until: datetime) -> RemediationReport:
    taken = await actions_repo.actions_taken(session, since, until, verdicts_repo.detector_of)
    facts = await repository.appeal_facts(session, since, until)
    covered = await actions_repo.actions_by_id(session, [f.action_id for f in facts if f.action_id])
    actions = {a.id: a for a in covered}
    detector_of = await verdicts_repo.detectors_of(session, [a.verdict_id for a in covered])
    facts = [
        replace(
            f,
            rule=a.rule,
            detector=detector_of.get(a.verdict_id),
            action_at=a.created_at,
        )
        if (a := actions.get(f.action_id or "")) is not None
        else f
        for f in facts
    ]
    lifted = [f.action_id for f in facts if f.action_id and f.lifted_at is not None]
    removed = await enforce_repo.removed_at(session, lifted)
    rules: dict[str, _Tally] = defaultdict(_Tally)
    detectors: dict[str, _Tally] = defaultdict(_Tally)
    total = _Tally()
    for rule, detector, n in taken:
        rules[rule].actions += n
        detectors[detector].actions += n
        total.actions += n
    for f in facts:
        groups = [total]
        if f.rule is not None:
            groups.append(rules[f.rule])
        if f.detector is not None:
            groups.append(detectors[f.detector])
        for tally in groups:
            tally.states[f.appeal_id] = f.state
            if f.decided_at is not None:
                tally.to_decision[f.appeal_id] = (f.decided_at - f.filed_at).total_seconds()
        for tally in groups[1:]:
            if f.action_at is not None:
                tally.to_appeal.append(max(0.0, (f.filed_at - f.action_at).total_seconds()))
            gone = removed.get(f.action_id or "")
            if f.lifted_at is not None and f.decided_at is not None and gone is not None:
                tally.to_lift.append(max(0.0, (gone - f.decided_at).total_seconds()))
        if f.action_at is not None:
            total.to_appeal.append(max(0.0, (f.filed_at - f.action_at).total_seconds()))
        gone = removed.get(f.action_id or "")
        if f.lifted_at is not None and f.decided_at is not None and gone is not None:
            total.to_lift.append(max(0.0, (gone - f.decided_at).total_seconds()))
    return RemediationReport(
        since=since,
        until=until,
        totals=total.figures(TOTAL),
        rules=[t.figures(name) for name, t in sorted(rules.items())],
        detectors=[t.figures(name) for name, t in sorted(detectors.items())],
    )


_COLUMNS = (
    "actions",
    "appeals",
    "upheld",
    "denied",
    "open",
    "overturn_rate",
    "median_action_to_appeal_seconds",
    "median_appeal_to_decision_seconds",
    "median_decision_to_lift_seconds",
)


def _rows(report: RemediationReport) -> list[tuple[str, Figures]]:
    return [
        ("total", report.totals),
        *(("rule", f) for f in report.rules),
        *(("detector", f) for f in report.detectors),
    ]


def to_csv(report: RemediationReport) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["since", "until", "by", "name", *_COLUMNS])
    for by, f in _rows(report):
        writer.writerow(
            [
                report.since.isoformat(),
                report.until.isoformat(),
                by,
                f.name,
                *("" if getattr(f, c) is None else getattr(f, c) for c in _COLUMNS),
            ]
        )
    return buffer.getvalue()


def _cell(value: object) -> str:
    return "-" if value is None else str(value).replace("|", "\\|")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def to_markdown(report: RemediationReport) -> str:
    t = report.totals
    lines = [
        "# Remediation report",
        "",
        f"Period: {report.since.isoformat()} to {report.until.isoformat()}.",
        "",
        "| complaints received | decisions | reversed (upheld) | denied | still open "
        "| overturn rate | median time to decision |",
        "|---|---|---|---|---|---|---|",
        f"| {t.appeals} | {t.upheld + t.denied} | {t.upheld} | {t.denied} | {t.open} "
        f"| {_rate(t.overturn_rate)} | {_duration(t.median_appeal_to_decision_seconds)} |",
        "",
        f"Enforcement actions taken: {t.actions}.",
    ]
    for title, items in (("Per rule", report.rules), ("Per detector", report.detectors)):
        lines += [
            "",
            f"## {title}",
            "",
            "| name | actions | appeals | upheld | denied | overturn rate | action to appeal "
            "| appeal to decision | decision to lift |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {_cell(f.name)} | {f.actions} | {f.appeals} | {f.upheld} | {f.denied} "
            f"| {_rate(f.overturn_rate)} | {_duration(f.median_action_to_appeal_seconds)} "
            f"| {_duration(f.median_appeal_to_decision_seconds)} "
            f"| {_duration(f.median_decision_to_lift_seconds)} |"
            for f in items
        ] or ["| (none) | | | | | | | | |"]
    return "\n".join(lines) + "\n"


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0%}"
