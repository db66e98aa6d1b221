"""Prometheus metrics: counters kept as things happen, and gauges read from the database
at scrape time.

Counters and the latency histogram are per process (Prometheus sums replicas); they
cost a dict update on the hot path. Counts that must agree across replicas and
restarts (actions by type and state, the undecided backlog, the audit head, the
connectors' lag) are read from the database when /metrics is scraped, each with one
indexed query, so nothing has to keep them current; the 30-day remediation figures,
an aggregate over history, are computed again at most every 5 minutes.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from sqlalchemy import Connection, event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from controlplane.audit import repository as audit_repo
from controlplane.enforce import repository as enforce_repo
from controlplane.ingest import repository as verdicts_repo
from controlplane.plan import repository as actions_repo
from controlplane.remedy import report
from controlplane.remedy import reviews_repository as reviews_repo
from controlplane.store.types import utcnow

log = logging.getLogger(__name__)

# litestar adds the charset to a text/* type itself: keep it from being sent twice.
CONTENT_TYPE = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")

REGISTRY = CollectorRegistry()
"""Tollgate's own registry (not the library's global one): what /metrics serves."""
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

VERDICTS_RECEIVED = Counter(
    "tollgate_verdicts_received",
    "Verdicts stored (a repeat of a stored verdict id is not counted).",
    registry=REGISTRY,
)
DECISIONS = Counter(
    "tollgate_decisions",
    "Decisions recorded, by status (ok, error).",
    ["status"],
    registry=REGISTRY,
)
DECIDE_FAULTS = Counter(
    "tollgate_decide_faults",
    "Batches whose deciding failed for a reason of the server's own (not a policy error): "
    "their verdicts were stored undecided and are decided again later, by exception type.",
    ["exception"],
    registry=REGISTRY,
)
ENGINE_PROCESS_EXITS = Counter(
    "tollgate_engine_process_exits",
    "Engine processes that exited (killed, crashed) with inputs of a batch under way; each "
    "is replaced at the next batch, and an input two of them exited under is decided as "
    "an evaluation error.",
    registry=REGISTRY,
)
DECISION_FALLBACKS = Counter(
    "tollgate_decision_fallbacks",
    "Decisions that errored (engine refused the input, policy error, contract broken), by "
    "what their provider's fallback planned: flag_review, or none.",
    ["fallback"],
    registry=REGISTRY,
)
AUDIT_EVENTS = Counter(
    "tollgate_audit_events",
    "Audit events committed, by event type.",
    ["type"],
    registry=REGISTRY,
)
EVALUATION_SECONDS = Histogram(
    "tollgate_evaluation_duration_seconds",
    "Policy evaluation time of one verdict (the decision's duration_ms).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
    registry=REGISTRY,
)
DECIDE_LOCK_WAIT = Histogram(
    "tollgate_decide_lock_wait_seconds",
    "PostgreSQL: how long a batch waited for the locks of its subjects because another "
    "replica deciding one of them held it (0 when they were all free).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
    registry=REGISTRY,
)
DECIDE_DEFERRED = Counter(
    "tollgate_decide_deferred_requests_total",
    "PostgreSQL: requests left out of a batch for the next one because another replica "
    "was deciding one of their subjects (the batch went on with the others).",
    registry=REGISTRY,
)
DECIDE_LOCK_SECONDS = Histogram(
    "tollgate_decide_lock_seconds",
    "PostgreSQL: how long taking a batch's subject locks took in all (the statements, "
    "one lock per account, key, org and IP, plus any wait).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
    registry=REGISTRY,
)
HTTP_SERVER_ERRORS = Counter(
    "tollgate_http_server_errors",
    "API answers with a 5xx status, by status (each is logged with its traceback).",
    ["status"],
    registry=REGISTRY,
)

_PENDING = "tollgate_metrics_audit_events"


def count_on_commit(session: AsyncSession | Session, types: Tally[str]) -> None:
    """Count audit events by type once the session's transaction commits (a rolled-back
    append counts nothing)."""
    pending: Tally[str] = session.info.setdefault(_PENDING, Tally())
    pending.update(types)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    counts: Tally[str] | None = session.info.pop(_PENDING, None)
    if counts:
        for event_type, n in counts.items():
            AUDIT_EVENTS.labels(event_type).inc(n)
        if counts["verdict.received"]:
            VERDICTS_RECEIVED.inc(counts["verdict.received"])


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)


def decisions_recorded(decisions: Iterable[Mapping[str, Any]]) -> None:
    """Count committed decisions by status and observe their evaluation time."""
    for decision in decisions:
        DECISIONS.labels(decision["status"]).inc()
        EVALUATION_SECONDS.observe(decision["duration_ms"] / 1000)


def engine_process_exited() -> None:
    """Count an engine process gone while it had inputs to evaluate."""
    ENGINE_PROCESS_EXITS.inc()


def decide_faults(exception: str) -> None:
    """Count a batch whose deciding failed with an unexpected exception."""
    DECIDE_FAULTS.labels(exception).inc()


def decide_locked(seconds: float, waited: float, deferred: int) -> None:
    """A batch's subject locks taken in `seconds`, `waited` of them for another replica;
    `deferred` of its requests left for the next batch (another replica held one of
    their subjects)."""
    DECIDE_LOCK_SECONDS.observe(seconds)
    DECIDE_LOCK_WAIT.observe(waited)
    DECIDE_DEFERRED.inc(deferred)


def fallbacks_planned(planned: Iterable[str]) -> None:
    """Count committed error decisions by the fallback action type planned (`none`)."""
    for fallback in planned:
        DECISION_FALLBACKS.labels(fallback).inc()


class _Snapshot:
    """A collector serving figures read just before the scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


async def _database_families(session: AsyncSession) -> list[Metric]:
    actions = GaugeMetricFamily(
        "tollgate_actions", "Actions by type and state, now.", labels=["type", "state"]
    )
    undecided = GaugeMetricFamily(
        "tollgate_verdicts_undecided", "Verdicts stored but not decided yet (the backlog)."
    )
    head = GaugeMetricFamily("tollgate_audit_head_seq", "The audit chain's last seq.")
    checkpoint = GaugeMetricFamily(
        "tollgate_audit_checkpoint_seq", "The seq the newest signed checkpoint covers."
    )
    checkpoint_at = GaugeMetricFamily(
        "tollgate_audit_checkpoint_timestamp_seconds",
        "When the newest checkpoint was signed (alert when it stops moving).",
    )
    lag = GaugeMetricFamily(
        "tollgate_connector_lag_seconds",
        "Age of the oldest desired entry not yet at the connector's gateway (0: in step), "
        "as of its last reconcile.",
        labels=["connector"],
    )
    entries = GaugeMetricFamily(
        "tollgate_connector_entries",
        "Entries at the connector's last reconcile: desired, applied, failed.",
        labels=["connector", "state"],
    )
    healthy = GaugeMetricFamily(
        "tollgate_connector_healthy",
        "1 when the connector's last reconcile reached its gateway.",
        labels=["connector"],
    )
    reviews_open = GaugeMetricFamily("tollgate_reviews_open", "Reviews waiting for a reviewer.")
    oldest_review = GaugeMetricFamily(
        "tollgate_review_oldest_open_seconds",
        "Age of the oldest open review (0: none open): alert when reviewers fall behind.",
    )
    waiting, oldest = await reviews_repo.open_summary(session)
    reviews_open.add_metric([], waiting)
    oldest_review.add_metric([], max(0.0, (utcnow() - oldest).total_seconds()) if oldest else 0.0)
    for action_type, state, n in await actions_repo.action_counts(session):
        actions.add_metric([action_type, state], n)
    undecided.add_metric([], await verdicts_repo.undecided_count(session))
    head.add_metric([], (await audit_repo.head(session))[0])
    latest = await audit_repo.latest_checkpoint(session)
    statuses = await enforce_repo.statuses(session)
    families: list[Metric] = [
        actions,
        undecided,
        head,
        reviews_open,
        oldest_review,
        *await _remediation_cached(session),
    ]
    if latest is not None:
        checkpoint.add_metric([], latest.seq)
        checkpoint_at.add_metric([], datetime.fromisoformat(latest.at).timestamp())
        families += [checkpoint, checkpoint_at]
    for name, status in sorted(statuses.items()):
        lag.add_metric([name], status.lag_seconds)
        for state in ("desired", "applied", "failed"):
            entries.add_metric([name, state], getattr(status, state))
        healthy.add_metric([name], 1 if status.healthy else 0)
    if statuses:
        families += [lag, entries, healthy]
    return families


REMEDIATION_WINDOW = timedelta(days=30)
REMEDIATION_REFRESH = timedelta(minutes=5)
"""How long a scrape serves the remediation figures computed by an earlier one. They
aggregate 30 days of actions and appeals (a million actions at a busy lab): computed
at every scrape, every 15 s, their cost would grow with history; a 30-day figure moves
little in 5 minutes."""
_remediation: dict[str, tuple[datetime, list[Metric]]] = {}
"""Database URL -> (when computed, the families)."""


async def _remediation_cached(session: AsyncSession) -> list[Metric]:
    bind = session.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind
    key = engine.url.render_as_string(hide_password=True)
    now = utcnow()
    held = _remediation.get(key)
    if held is not None and now - held[0] < REMEDIATION_REFRESH:
        return held[1]
    families = await _remediation_families(session)
    _remediation[key] = (now, families)
    return families


async def _remediation_families(session: AsyncSession) -> list[Metric]:
    """The remediation figures of the last 30 days, per rule and per detector (the
    report's `GET /v1/reports/remediation` figures; labels name rules and detectors,
    never subjects)."""
    now = datetime.now(UTC)
    figures = await report.remediation(session, now - REMEDIATION_WINDOW, now)
    labels = ["by", "name"]
    taken = GaugeMetricFamily(
        "tollgate_remediation_actions",
        "Actions taken in the last 30 days (refreshed every 5 minutes).",
        labels=labels,
    )
    appeals = GaugeMetricFamily(
        "tollgate_remediation_appeals",
        "Appeals filed in the last 30 days covering the rule's or detector's actions, by "
        "state (open, upheld, denied).",
        labels=[*labels, "state"],
    )
    overturn = GaugeMetricFamily(
        "tollgate_remediation_overturn_ratio",
        "Upheld / decided appeals of the last 30 days (absent before any decision).",
        labels=labels,
    )
    median = GaugeMetricFamily(
        "tollgate_remediation_median_seconds",
        "Median seconds, last 30 days: action_to_appeal, appeal_to_decision, "
        "decision_to_lift (until the last gateway took the action off).",
        labels=[*labels, "stage"],
    )
    rows = [
        ("total", figures.totals),
        *(("rule", f) for f in figures.rules),
        *(("detector", f) for f in figures.detectors),
    ]
    for by, f in rows:
        taken.add_metric([by, f.name], f.actions)
        for state in ("open", "upheld", "denied"):
            appeals.add_metric([by, f.name, state], getattr(f, state))
        if f.overturn_rate is not None:
            overturn.add_metric([by, f.name], f.overturn_rate)
        for stage, value in (
            ("action_to_appeal", f.median_action_to_appeal_seconds),
            ("appeal_to_decision", f.median_appeal_to_decision_seconds),
            ("decision_to_lift", f.median_decision_to_lift_seconds),
        ):
            if value is not None:
                median.add_metric([by, f.name, stage], value)
    return [taken, appeals, overturn, median]


async def scrape(session: AsyncSession) -> bytes:
    """The Prometheus text exposition: process metrics, then database figures read in
    `session` (the scrape's read session), and `tollgate_database_up` 0 (with the rest
    still served) when the database fails."""
    up = GaugeMetricFamily("tollgate_database_up", "1 when the scrape could read the database.")
    try:
        families = await _database_families(session)
        up.add_metric([], 1)
    except Exception as exc:
        log.warning("metrics: reading the database failed: %s", type(exc).__name__)
        families = []
        up.add_metric([], 0)
    snapshot = CollectorRegistry()
    snapshot.register(_Snapshot([up, *families]))
    return generate_latest(REGISTRY) + generate_latest(snapshot)
