"""The tables. API schemas live apart, in each area's `schemas.py`."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Index, false, text
from sqlmodel import Field, SQLModel, col

from controlplane.store.types import JSONDocument, UTCDateTime

_RANDOM = threading.local()
_RANDOM_BLOCK = 6 * 1024
# A forked child must not hand out the ids its parent has left in the block.
os.register_at_fork(after_in_child=_RANDOM.__dict__.clear)


def _random_hex6() -> str:
    """12 hex digits from the OS's CSPRNG, read a block at a time per thread: reading
    6 bytes per id released the GIL once per id, and the decide thread, making several
    ids per verdict, waited each time to get it back from the threads that took it."""
    state = _RANDOM.__dict__
    block: bytes = state.get("block", b"")
    at: int = state.get("at", 0)
    if at + 6 > len(block):
        block, at = os.urandom(_RANDOM_BLOCK), 0
        state["block"] = block
    state["at"] = at + 6
    return block[at : at + 6].hex()


def new_id(prefix: str) -> str:
    """Time-ordered id: `<prefix>_<ms timestamp hex><random hex>`; sorts by creation."""
    return f"{prefix}_{int(time.time() * 1000):012x}{_random_hex6()}"


def _utc(**kw: Any) -> Any:
    return Field(sa_column=Column(UTCDateTime(), **kw))


def _json(**kw: Any) -> Any:
    return Field(sa_column=Column(JSONDocument, **kw))


class VerdictRow(SQLModel, table=True):
    __tablename__ = "verdict"
    __table_args__ = (
        # With the time observed: a verdict's 30 days of history are an index range,
        # not every verdict ever stored about its account or key.
        Index("ix_verdict_provider_account_observed", "provider", "account_id", "observed_at"),
        Index("ix_verdict_provider_api_key_observed", "provider", "api_key_id", "observed_at"),
        Index("ix_verdict_provider_org", "provider", "org_id"),
        # Only the verdicts left `received` (a crash, a fault): what recovery asks for,
        # oldest first. Nearly every verdict is stored decided and never enters it.
        Index(
            "ix_verdict_received",
            "received_at",
            "id",
            sqlite_where=text("status = 'received'"),
            postgresql_where=text("status = 'received'"),
        ),
    )

    id: str = Field(primary_key=True, max_length=200)
    provider: str = Field(max_length=63)
    detector_name: str = Field(max_length=100)
    detector_version: str = Field(max_length=50)
    account_id: str | None = Field(default=None, max_length=200)
    api_key_id: str | None = Field(default=None, max_length=200)
    org_id: str | None = Field(default=None, max_length=200)
    score: float
    confidence: float
    observed_at: datetime = _utc(nullable=False)
    received_at: datetime = _utc(nullable=False)
    body: dict[str, Any] = _json(nullable=False)
    content_hash: str = Field(max_length=64)
    status: str = Field(max_length=16)
    trace_id: str | None = Field(default=None, max_length=32)


class DecisionRow(SQLModel, table=True):
    __tablename__ = "decision"

    id: str = Field(primary_key=True, max_length=40)
    verdict_id: str = Field(foreign_key="verdict.id", unique=True, max_length=200)
    provider: str = Field(max_length=63)
    policy_revision: str = Field(max_length=80)
    entrypoint: str = Field(max_length=200)
    engine: str = Field(max_length=40)
    status: str = Field(max_length=16)
    shadow: bool = False
    input: dict[str, Any] = _json(nullable=False)
    result: Any = _json(nullable=True)
    error: str | None = None
    duration_ms: float
    trace_id: str | None = Field(default=None, max_length=32)
    decided_at: datetime = _utc(nullable=False)


class ActionRow(SQLModel, table=True):
    __tablename__ = "action"
    __table_args__ = (
        Index("ix_action_target", "target_kind", "target_value"),
        Index("ix_action_state_provider", "state", "provider"),
    )

    id: str = Field(primary_key=True, max_length=40)
    decision_id: str = Field(foreign_key="decision.id", index=True, max_length=40)
    verdict_id: str = Field(foreign_key="verdict.id", max_length=200)
    provider: str = Field(max_length=63)
    type: str = Field(max_length=20)
    target_kind: str = Field(max_length=10)
    target_value: str = Field(max_length=200)
    params: dict[str, Any] = _json(nullable=False)
    ttl_seconds: float | None = None
    expires_at: datetime | None = _utc(nullable=True)
    rule: str = Field(max_length=200)
    reason: str
    state: str = Field(max_length=16)
    shadow: bool = False
    policy_revision: str = Field(max_length=80)
    trace_id: str | None = Field(default=None, max_length=32)
    created_at: datetime = _utc(nullable=False)
    updated_at: datetime = _utc(nullable=False)
    parent_id: str | None = Field(default=None, max_length=40)
    """For a key revoked because its account or org is suspended: the suspension. It
    ends with its parent (same expiry; lifted with it)."""
    reference: str | None = Field(default=None, max_length=16, index=True)
    """The short reference a refusal at the gateway quotes (`enforce.sdk.reference_of`
    its entry): the customer quotes it in an appeal, `decision explain` takes it."""


class AuditEventRow(SQLModel, table=True):
    """Append-only; `hash` = sha256(canonical event JSON + prev_hash)."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_verdict", "verdict_id"),
        Index("ix_audit_action", "action_id"),
    )

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: datetime = _utc(nullable=False)
    type: str = Field(max_length=40)
    actor: str = Field(max_length=200)
    provider: str | None = Field(default=None, max_length=63)
    verdict_id: str | None = Field(default=None, max_length=200)
    decision_id: str | None = Field(default=None, max_length=40)
    action_id: str | None = Field(default=None, max_length=40)
    trace_id: str | None = Field(default=None, max_length=32)
    payload: dict[str, Any] = _json(nullable=False)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
    subjects: list[list[str]] | None = _json(nullable=True)
    """[kind, value] of the subjects the event concerns, when its writer knew them (the
    decide path's events): the subject index takes them in SQL, without reading the
    verdict and action behind the event. Not hashed: derived, like the index."""


class AuditHeadRow(SQLModel, table=True):
    """One row: the chain's last seq and hash, locked while appending."""

    __tablename__ = "audit_head"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    seq: int
    hash: str = Field(max_length=64)


class ExemptionRow(SQLModel, table=True):
    __tablename__ = "exemption"
    __table_args__ = (Index("ix_exemption_subject", "provider", "subject_kind", "subject_value"),)

    id: str = Field(primary_key=True, max_length=40)
    provider: str = Field(max_length=63)
    subject_kind: str = Field(max_length=10)
    subject_value: str = Field(max_length=200)
    owner: str = Field(max_length=200)
    reason: str
    expires_at: datetime | None = _utc(nullable=True)
    created_at: datetime = _utc(nullable=False)
    ended_at: datetime | None = _utc(nullable=True)
    """When it was removed or expired (and its carve-out left the gateways); null: live."""
    ended_by: str | None = Field(default=None, max_length=200)
    appeal_id: str | None = Field(default=None, max_length=40)
    """The upheld appeal that added it, if any."""


class IndicatorRow(SQLModel, table=True):
    """Attribution intel and detection signatures, entered here or pulled from peers.
    Identifiers (account, api_key, org, payment) are stored as keyed hashes only
    (`<key id>:<hex>`, see `controlplane.intel.hashing`); never raw."""

    __tablename__ = "indicator"

    id: str = Field(primary_key=True, max_length=40)
    kind: str = Field(max_length=20)
    """`cidr`, `asn`, `org_pattern`, `account`, `api_key`, `org`, `payment`, `signature`."""
    value: str = Field(max_length=200)
    source: str = Field(max_length=100)
    """The lab that said it (for pulled intel: the lab whose key signed it)."""
    confidence: float
    tlp: str = Field(max_length=20)
    expires_at: datetime | None = _utc(nullable=True)
    """Valid until: it stops matching then."""
    created_at: datetime = _utc(nullable=False)
    pap: str = Field(default="green", max_length=10)
    detail: dict[str, Any] | None = _json(nullable=True)
    """A detection signature's `{signal, op, threshold}`; free notes otherwise."""
    first_seen: datetime | None = _utc(nullable=True)
    last_seen: datetime | None = _utc(nullable=True)
    decay_days: float | None = None
    """Half-life of the confidence, counted from `last_seen` (None: no decay)."""
    origin: str = Field(default="local", max_length=63)
    """`local`, or the peer it was pulled from (provenance; `source` says who said it)."""
    stix_id: str | None = Field(default=None, max_length=100, index=True)
    modified: datetime | None = _utc(nullable=True)
    """The STIX version this row holds."""
    revoked: bool = False
    revoked_reason: str | None = Field(default=None, max_length=500)


class IntelObjectRow(SQLModel, table=True):
    """A signed STIX object as a TAXII collection serves it; versions are appended."""

    __tablename__ = "intel_object"
    __table_args__ = (
        Index("ix_intel_object_added", "collection", "date_added"),
        Index("ix_intel_object_stix", "collection", "stix_id"),
    )

    seq: int | None = Field(default=None, primary_key=True)
    collection: str = Field(max_length=63)
    stix_id: str = Field(max_length=100)
    type: str = Field(max_length=40)
    version: str = Field(max_length=40)
    """The object's `modified` (or `created`) as STIX writes it."""
    date_added: datetime = _utc(nullable=False)
    """When this server added it: unique and increasing per collection (TAXII paging)."""
    latest: bool = True
    """The newest version of `stix_id` in the collection (TAXII's default `version=last`)."""
    body: dict[str, Any] = _json(nullable=False)


class IntelPeerRow(SQLModel, table=True):
    """What pulling from one peer has given so far, and its TAXII cursor."""

    __tablename__ = "intel_peer"

    name: str = Field(primary_key=True, max_length=63)
    cursor: str | None = Field(default=None, max_length=40)
    """The peer's `X-TAXII-Date-Added-Last` of the last page taken (`added_after` next)."""
    last_pull_at: datetime | None = _utc(nullable=True)
    last_success_at: datetime | None = _utc(nullable=True)
    last_error: str | None = None
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    retractions: int = 0
    lifted: int = 0


class IntelStatusRow(SQLModel, table=True):
    """The TAXII status of one request that added objects to a collection (TAXII 2.1,
    4.3): what was taken and what was refused, per object."""

    __tablename__ = "intel_status"

    id: str = Field(primary_key=True, max_length=36)
    """A UUID: the `{status-id}` of `GET {api-root}/status/{status-id}/`."""
    collection: str = Field(max_length=63)
    writer: str = Field(max_length=63)
    """The peer token that posted the objects (only it and the readers of the enforcement
    record may read the status)."""
    request_timestamp: datetime = _utc(nullable=False)
    status: str = Field(default="complete", max_length=20)
    total_count: int = 0
    success_count: int = 0
    failure_count: int = 0
    pending_count: int = 0
    details: dict[str, Any] = _json(nullable=False)
    """`{"successes": [...], "failures": [...], "pendings": [...]}`: TAXII status details
    (`id`, `version`, `message`)."""


class PolicyRevisionRow(SQLModel, table=True):
    """A policy revision Tollgate has seen, gated, and kept a snapshot of (so rollback,
    explain and impact work without the source)."""

    __tablename__ = "policy_revision"

    id: str = Field(primary_key=True, max_length=80)
    source: str = Field(max_length=500)
    status: str = Field(max_length=16)
    """`passed` (may be activated) or `rejected` (check or tests failed)."""
    created_at: datetime = _utc(nullable=False)
    problems: list[str] = _json(nullable=False)
    tests: dict[str, Any] = _json(nullable=False)
    modules: dict[str, str] = _json(nullable=False)
    data: list[Any] = _json(nullable=False)


class PolicyActivationRow(SQLModel, table=True):
    """Every activation and rollback: the newest row names the active revision."""

    __tablename__ = "policy_activation"

    id: str = Field(primary_key=True, max_length=40)
    revision: str = Field(foreign_key="policy_revision.id", max_length=80)
    kind: str = Field(max_length=16)
    actor: str = Field(max_length=200)
    reason: str
    at: datetime = _utc(nullable=False)


class ApiTokenRow(SQLModel, table=True):
    """A bearer token, stored as its SHA-256: Tollgate never keeps a token in clear."""

    __tablename__ = "api_token"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200)
    role: str = Field(max_length=20)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _utc(nullable=False)
    expires_at: datetime | None = _utc(nullable=True)
    revoked_at: datetime | None = _utc(nullable=True)


class ActionEnforcementRow(SQLModel, table=True):
    """Where one action stands at one connector's gateway."""

    __tablename__ = "action_enforcement"
    __table_args__ = (Index("ix_enforcement_connector_state", "connector", "state"),)

    action_id: str = Field(foreign_key="action.id", primary_key=True, max_length=40)
    connector: str = Field(primary_key=True, max_length=63)
    state: str = Field(max_length=16)
    """`applied` or `failed`."""
    attempts: int = 0
    error: str | None = None
    retryable: bool = True
    """For `failed`: False when the gateway can never hold the entry (not retried)."""
    updated_at: datetime = _utc(nullable=False)


class ConnectorStatusRow(SQLModel, table=True):
    """The last reconcile of each connector, for `GET /v1/connectors`."""

    __tablename__ = "connector_status"

    name: str = Field(primary_key=True, max_length=63)
    healthy: bool = False
    detail: str = ""
    last_reconcile_at: datetime | None = _utc(nullable=True)
    last_success_at: datetime | None = _utc(nullable=True)
    desired: int = 0
    applied: int = 0
    failed: int = 0
    drift_repaired: int = 0
    lag_seconds: float = 0.0
    """Age of the oldest change not yet applied at the gateway (0: in step)."""
    rejected: int = 0
    """Entries the gateway can never hold (permanent failures), at the last reconcile."""
    last_error: str | None = None


class AuditCheckpointRow(SQLModel, table=True):
    """A signed statement that the audit chain ended at `seq` with `hash`. The Ed25519
    signature covers (seq, hash), so whoever rewrites history before `seq` and
    recomputes every hash still cannot make the signed hash match without the key."""

    __tablename__ = "audit_checkpoint"

    id: str = Field(primary_key=True, max_length=40)
    seq: int = Field(index=True)
    hash: str = Field(max_length=64)
    at: datetime = _utc(nullable=False)
    key_id: str = Field(max_length=64)
    """First 16 hex digits of the SHA-256 of the raw 32-byte public key."""
    signature: str = Field(max_length=128)
    """Hex of the 64-byte Ed25519 signature."""


class AuditSubjectRow(SQLModel, table=True):
    """Which subjects each audit event concerns: the subject of its verdict, the target
    of its action, the subject of an exemption. Derived from the chain (never hashed),
    filled behind it by `controlplane.audit.subjects`; it can be rebuilt at any time."""

    __tablename__ = "audit_subject"

    kind: str = Field(primary_key=True, max_length=10)
    value: str = Field(primary_key=True, max_length=200)
    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})


class AuditSubjectHeadRow(SQLModel, table=True):
    """One row: the last audit seq `audit_subject` has indexed, locked while indexing."""

    __tablename__ = "audit_subject_head"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    seq: int


# Time-range queries and exports of the audit trail; the /metrics action gauge.
Index("ix_audit_at", col(AuditEventRow.at))
Index("ix_action_type_state", col(ActionRow.type), col(ActionRow.state))


class SpanRow(SQLModel, table=True):
    """A finished OpenTelemetry span, kept by the embedded span store
    (`controlplane.telemetry.spanstore`) so an auditor can see a trace without a tracing
    backend. Written in batches off the request path; pruned after
    `TOLLGATE_SPAN_RETENTION_HOURS`. Attributes never hold secrets or API key ids."""

    __tablename__ = "span"

    trace_id: str = Field(primary_key=True, max_length=32)
    span_id: str = Field(primary_key=True, max_length=16)
    parent_id: str | None = Field(default=None, max_length=16)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=10)
    """`internal`, `server`, `client`, `producer` or `consumer`."""
    start_ns: int = Field(sa_column=Column(BigInteger(), nullable=False, index=True))
    """Nanoseconds since the epoch; the retention job prunes by it."""
    end_ns: int = Field(sa_column=Column(BigInteger(), nullable=False))
    status: str = Field(max_length=8)
    """`unset`, `ok` or `error`."""
    status_message: str | None = None
    attributes: dict[str, Any] = _json(nullable=False)
    service: str = Field(max_length=100)


class PolicySourceRow(SQLModel, table=True):
    """The revision each policy source was at when last synced: a source that moves
    (even back to a revision seen before) is followed; one that stays is not re-read
    as a reason to undo a rollback."""

    __tablename__ = "policy_source"

    source: str = Field(primary_key=True, max_length=500)
    revision: str = Field(max_length=80)
    synced_at: datetime = _utc(nullable=False)


class ChangeRow(SQLModel, table=True):
    """One change to the desired state of one gateway entry (an action planned, lifted,
    expired, exempted, upheld on appeal), appended in the transaction that made it.
    `seq` orders the log: it is assigned under the `change_head` lock, so a change is
    visible only after every change with a lower `seq` (connectors never skip one)."""

    __tablename__ = "enforcement_change"
    __table_args__ = (Index("ix_change_kind_seq", "target_kind", "seq"),)

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    provider: str = Field(max_length=63)
    type: str = Field(max_length=20)
    target_kind: str = Field(max_length=10)
    target_value: str = Field(max_length=200)
    cause: str = Field(max_length=16)
    """`planned`, `lifted`, `expired`, `exempted`, `upheld`."""
    action_id: str | None = Field(default=None, max_length=40)
    trace_id: str | None = Field(default=None, max_length=32)
    span_id: str | None = Field(default=None, max_length=16)
    """The span that made the change: the apply that follows continues its trace."""
    at: datetime = _utc(nullable=False)


class ChangeHeadRow(SQLModel, table=True):
    """One row: the change log's last seq, locked while appending."""

    __tablename__ = "change_head"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    seq: int


class ConnectorCursorRow(SQLModel, table=True):
    """The last change each connector has applied (saved with its outcome)."""

    __tablename__ = "connector_cursor"

    name: str = Field(primary_key=True, max_length=63)
    seq: int
    updated_at: datetime = _utc(nullable=False)


class BouncerCursorRow(SQLModel, table=True):
    """Where each CrowdSec bouncer (by its token) is in the change log: moved only when a
    stream answer was sent whole, so a bouncer sees every change once."""

    __tablename__ = "bouncer_cursor"

    token_id: str = Field(primary_key=True, max_length=40)
    seq: int
    last_pull: datetime = _utc(nullable=False)


# Expiry finds due actions without scanning every active one; the decider's intel
# index takes the indicators added since its last look.
Index("ix_action_expires", col(ActionRow.expires_at))
Index("ix_indicator_created", col(IndicatorRow.created_at))


class CustomerRow(SQLModel, table=True):
    """A lab's record of an account it knows: its org, tier, whether it is verified,
    its keys. Policies see it as `input.context.customer`."""

    __tablename__ = "customer"
    __table_args__ = (Index("ix_customer_org", "org_id"),)

    account_id: str = Field(primary_key=True, max_length=200)
    org_id: str | None = Field(default=None, max_length=200)
    tier: str = Field(max_length=40)
    verified: bool = True
    keys: list[str] = _json(nullable=False)
    contract: str | None = Field(default=None, max_length=200)
    owner: str | None = Field(default=None, max_length=200)
    created_at: datetime = _utc(nullable=False)
    updated_at: datetime = _utc(nullable=False)


class SightingRow(SQLModel, table=True):
    """A key or network seen in a verdict about an account or org: how many keys and
    networks an operation uses, read per subject from an index (never from every verdict
    of the subject), and which keys a suspension must revoke."""

    __tablename__ = "sighting"
    __table_args__ = (
        # Only verified customers' sightings: the networks they use, read for every batch
        # by network (a lookup that never reads everyone else who used the network).
        Index(
            "ix_sighting_verified",
            "provider",
            "kind",
            "value",
            sqlite_where=text("verified"),
            postgresql_where=text("verified"),
        ),
        # An account's sightings, to set `verified` when its customer record changes.
        Index(
            "ix_sighting_account",
            "scope_id",
            sqlite_where=text("scope = 'account'"),
            postgresql_where=text("scope = 'account'"),
        ),
        # Who saw a key or an account (never a network: thousands may share one), to
        # flag those sightings when the key is revoked or the account suspended.
        Index(
            "ix_sighting_target",
            "provider",
            "kind",
            "value",
            sqlite_where=text("kind <> 'network'"),
            postgresql_where=text("kind <> 'network'"),
        ),
        # The flagged sightings of an account or org alone (what it has had acted on).
        Index(
            "ix_sighting_acted",
            "provider",
            "scope",
            "scope_id",
            sqlite_where=text("acted_at IS NOT NULL"),
            postgresql_where=text("acted_at IS NOT NULL"),
        ),
    )

    provider: str = Field(primary_key=True, max_length=63)
    scope: str = Field(primary_key=True, max_length=10)
    """`account` or `org`."""
    scope_id: str = Field(primary_key=True, max_length=200)
    kind: str = Field(primary_key=True, max_length=10)
    """`api_key`, `network` (the /24 or /48 an address is in) or (of an org) `account`."""
    value: str = Field(primary_key=True, max_length=200)
    first_seen: datetime = _utc(nullable=False)
    last_seen: datetime = _utc(nullable=False)
    verified: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    """An account sighting whose account has a verified customer record (kept by the
    decide path as it records sightings and by the customers API as records change)."""
    acted_at: datetime | None = _utc(nullable=True)
    """Set (to when) as the key is revoked or the account suspended, or as it is seen
    while it is; cleared by a later batch about the scope once nothing is active on it.
    A superset of what is acted on now: `history.*.keys_acted_on` and
    `accounts_acted_on` check these against the active actions, and never read the
    scope's other sightings."""


class SightingTallyRow(SQLModel, table=True):
    """How many distinct keys, networks and accounts an account or org was seen with,
    and the lowest 64 of its networks in string order: what `history.account` and
    `history.org` count, kept as sightings are inserted, so a verdict about a busy org
    reads one row, not every sighting of the org."""

    __tablename__ = "sighting_tally"

    provider: str = Field(primary_key=True, max_length=63)
    scope: str = Field(primary_key=True, max_length=10)
    scope_id: str = Field(primary_key=True, max_length=200)
    keys: int = 0
    networks: int = 0
    accounts: int = 0
    first_networks: list[str] = _json(nullable=False)
    """As `history.*.networks` lists them (`customers.repository.FIRST_NETWORKS`)."""


class ReviewRow(SQLModel, table=True):
    """Hard actions a policy withheld from a verified customer, waiting for a reviewer
    to confirm (the actions are planned then) or dismiss (with a reason)."""

    __tablename__ = "review"
    __table_args__ = (Index("ix_review_state_created", "state", "created_at"),)

    id: str = Field(primary_key=True, max_length=40)
    provider: str = Field(max_length=63)
    verdict_id: str = Field(max_length=200)
    decision_id: str = Field(max_length=40)
    action_id: str = Field(index=True, max_length=40)
    """The `flag_review` action that opened it."""
    subject_kind: str = Field(max_length=10)
    subject_value: str = Field(max_length=200)
    rule: str = Field(max_length=200)
    reason: str
    withheld: list[dict[str, Any]] = _json(nullable=False)
    """The actions that would have been taken, as the policy asked for them."""
    policy_revision: str = Field(max_length=80)
    trace_id: str | None = Field(default=None, max_length=32)
    state: str = Field(max_length=16)
    """`open`, `confirmed` or `dismissed`."""
    created_at: datetime = _utc(nullable=False)
    resolved_at: datetime | None = _utc(nullable=True)
    resolved_by: str | None = Field(default=None, max_length=200)
    resolution: str | None = None
    """The dismissal's reason, or the confirmation's note."""
    applied: list[str] = _json(nullable=False)
    """Ids of the actions a confirmation planned."""


Index("ix_action_parent", col(ActionRow.parent_id))


class AppealRow(SQLModel, table=True):
    """A request to review enforcement on one subject, filed for a customer, decided by
    a reviewer who did not file it (`controlplane.remedy`)."""

    __tablename__ = "appeal"
    __table_args__ = (
        Index("ix_appeal_subject", "provider", "subject_kind", "subject_value"),
        Index("ix_appeal_state_filed", "state", "filed_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    provider: str = Field(max_length=63)
    subject_kind: str = Field(max_length=10)
    subject_value: str = Field(max_length=200)
    reference: str | None = Field(default=None, max_length=16)
    statement: str
    contact: str = Field(max_length=200)
    state: str = Field(max_length=16)
    """`open`, `upheld` or `denied`."""
    filed_by: str = Field(max_length=200)
    filed_at: datetime = _utc(nullable=False)
    decided_by: str | None = Field(default=None, max_length=200)
    decided_at: datetime | None = _utc(nullable=True)
    decision_reason: str | None = None
    exemption_id: str | None = Field(default=None, max_length=40)
    trace_id: str | None = Field(default=None, max_length=32)
    span_id: str | None = Field(default=None, max_length=16)
    """The span the appeal was filed in: its decision continues the same trace."""


class AppealActionRow(SQLModel, table=True):
    """An action an appeal covers: named when filed, or found on the subject (and, when
    upheld, every other action lifted with it)."""

    __tablename__ = "appeal_action"

    appeal_id: str = Field(foreign_key="appeal.id", primary_key=True, max_length=40)
    action_id: str = Field(foreign_key="action.id", primary_key=True, max_length=40, index=True)
    lifted_at: datetime | None = _utc(nullable=True)


class LiftRow(SQLModel, table=True):
    """An action taken back by people (by hand, an upheld appeal, an exemption): the
    policy sees these in `history.appeals` (the cool-down against re-ban loops), the
    remediation report counts them."""

    __tablename__ = "lift"
    __table_args__ = (Index("ix_lift_target", "provider", "target_kind", "target_value"),)

    id: str = Field(primary_key=True, max_length=40)
    action_id: str = Field(foreign_key="action.id", max_length=40, index=True)
    provider: str = Field(max_length=63)
    type: str = Field(max_length=20)
    target_kind: str = Field(max_length=10)
    target_value: str = Field(max_length=200)
    rule: str = Field(max_length=200)
    score: float
    """The score of the verdict behind the action: new evidence must beat it."""
    cause: str = Field(max_length=16)
    """`lifted` (by hand), `upheld` (an appeal), `exempted` (an exemption)."""
    appeal_id: str | None = Field(default=None, max_length=40)
    actor: str = Field(max_length=200)
    reason: str
    at: datetime = _utc(nullable=False)


Index("ix_exemption_expires", col(ExemptionRow.expires_at))
Index("ix_lift_at", col(LiftRow.at))
# The remediation report and its /metrics figures count the actions of a period.
Index("ix_action_created", col(ActionRow.created_at))
Index("ix_indicator_modified", col(IndicatorRow.modified))
