"""Audit API schemas: events with links, verification reports, subject histories."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from controlplane.audit.export import Checkpoint
from controlplane.audit.verify import Report
from controlplane.domain.vocabulary import SubjectKind
from controlplane.plan.schemas import ActionOut
from controlplane.store.models import AuditEventRow, DecisionRow, VerdictRow

VERDICT_URL = "/v1/verdicts/{}"
DECISION_URL = "/v1/decisions/{}"
ACTION_URL = "/v1/actions/{}"
TRACE_URL = "/v1/traces/{}"


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


class Order(StrEnum):
    ASC = "asc"
    DESC = "desc"


class Link(BaseModel):
    id: str
    url: str


class EventLinks(BaseModel):
    """Where to read what the event is about; null where it names nothing of that kind."""

    verdict: Link | None
    decision: Link | None
    action: Link | None
    trace: Link | None


def _link(template: str, value: str | None) -> Link | None:
    return Link(id=value, url=template.format(value)) if value else None


class AuditEventOut(BaseModel):
    """One event of the hash chain, with its chain fields and links."""

    seq: int
    at: datetime
    type: str = Field(description="e.g. `verdict.received`, `action.planned`, `action.lifted`.")
    actor: str = Field(description="The token name (or `tollgate`) that caused it.")
    provider: str | None
    verdict_id: str | None
    decision_id: str | None
    action_id: str | None
    trace_id: str | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str = Field(description="sha256(canonical event JSON + prev_hash); see docs/audit.md.")
    links: EventLinks

    @classmethod
    def from_row(cls, row: AuditEventRow) -> AuditEventOut:
        return cls(
            **row.model_dump(),
            links=EventLinks(
                verdict=_link(VERDICT_URL, row.verdict_id),
                decision=_link(DECISION_URL, row.decision_id),
                action=_link(ACTION_URL, row.action_id),
                trace=_link(TRACE_URL, row.trace_id),
            ),
        )


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class BreakOut(BaseModel):
    seq: int | None = Field(description="Where the chain first stops proving itself.")
    kind: str = Field(
        description="hash, link, gap, order, truncated, head, checkpoint, signature or "
        "unknown_key (docs/audit.md says what each means)."
    )
    expected: str
    found: str
    message: str


class VerifyOut(BaseModel):
    """The result of recomputing the chain; `ok` is false exactly when `broken` is set."""

    ok: bool
    source: str
    events: int
    first_seq: int | None
    last_seq: int | None
    last_hash: str | None
    checkpoints: int
    checkpoints_verified: int
    signatures_checked: bool
    key_ids: list[str]
    authenticated_through_seq: int | None
    broken: BreakOut | None = Field(description="The first broken link; null when intact.")
    seconds: float
    events_per_second: float
    warnings: list[str]

    @classmethod
    def from_report(cls, report: Report) -> VerifyOut:
        return cls.model_validate(report.to_dict())


class CheckpointOut(BaseModel):
    """A signed checkpoint of the chain's head. Keep it where the database's admins
    cannot write: `tollgate audit verify --checkpoints` checks the chain against it."""

    seq: int = Field(description="The chain's head when it was signed.")
    hash: str = Field(description="The event hash at `seq`.")
    at: str = Field(
        description="When it was signed (RFC 3339).", json_schema_extra={"format": "date-time"}
    )
    key_id: str = Field(
        description="Which key signed it: 16 hex digits of the SHA-256 of its raw public key."
    )
    signature: str = Field(description="Ed25519 over the message in docs/audit.md, hex.")
    new: bool = Field(
        description="False when the newest checkpoint by this key already covered the "
        "head: that one is returned and nothing was signed."
    )

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, new: bool) -> CheckpointOut:
        return cls(**checkpoint.to_dict(), new=new)


class ReindexOut(BaseModel):
    indexed: int = Field(description="Events indexed, from the first seq to the head.")


class SubjectOut(BaseModel):
    kind: SubjectKind
    value: str


class HistoryVerdict(BaseModel):
    id: str
    url: str
    provider: str
    status: str
    detector: dict[str, Any]
    subject: dict[str, Any]
    score: float
    confidence: float
    labels: list[str]
    observed_at: datetime
    received_at: datetime
    trace_id: str | None

    @classmethod
    def from_row(cls, row: VerdictRow) -> HistoryVerdict:
        body = row.body
        return cls(
            id=row.id,
            url=VERDICT_URL.format(row.id),
            provider=row.provider,
            status=row.status,
            detector=body.get("detector", {}),
            subject=body.get("subject", {}),
            score=row.score,
            confidence=row.confidence,
            labels=body.get("labels", []),
            observed_at=row.observed_at,
            received_at=row.received_at,
            trace_id=row.trace_id,
        )


class HistoryDecision(BaseModel):
    """A decision without its input and output (follow `url` for those)."""

    id: str
    url: str
    verdict_id: str
    status: str
    policy_revision: str
    entrypoint: str
    engine: str
    shadow: bool
    error: str | None
    duration_ms: float
    trace_id: str | None
    decided_at: datetime

    @classmethod
    def from_row(cls, row: DecisionRow) -> HistoryDecision:
        fields = row.model_dump(exclude={"input", "result", "provider"})
        return cls(**fields, url=DECISION_URL.format(row.id))


class HistoryAction(ActionOut):
    targets_subject: bool = Field(
        description="True: aimed at this subject. False: planned from a verdict about it "
        "but aimed at another of its identifiers (its key, an IP)."
    )


class SubjectHistoryOut(BaseModel):
    """Everything recorded about one subject, each list oldest first. `events` is the
    timeline: every step (received, decided, planned, applied, lifted, ...) is one."""

    subject: SubjectOut
    provider: str | None
    verdicts: list[HistoryVerdict]
    decisions: list[HistoryDecision]
    actions: list[HistoryAction]
    events: list[AuditEventOut]
    truncated: bool = Field(
        description="True when a list was cut at `limit` (the newest are kept)."
    )
