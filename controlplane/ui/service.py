"""What each console page shows, built from the areas' services and repositories.

Every value that can hold an API key id goes through a `Redactor` here, before a
template sees it, so no template can leak one. The audit trail comes from the audit
area's services (`list_events`, `subject_history`, `verify_chain`); what no service
answers (one action's story, key handles) comes from the repository of the area that
owns the table. Each page reads in the request's session, and is given the few
services it asks besides (never the whole runtime); a page that reads the subject
index is built after the request brought it up to date (`controllers.py`).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.audit import repository as audit_repo
from controlplane.audit import service as audit
from controlplane.audit import subjects
from controlplane.audit.checkpoints import public_keys
from controlplane.audit.repository import AuditFilter
from controlplane.audit.verify import verify_chain
from controlplane.domain.redact import key_handle, redact_keys
from controlplane.domain.vocabulary import ActionType, SubjectKind
from controlplane.enforce import repository as enforce_repo
from controlplane.enforce.service import Enforcer
from controlplane.errors import InvalidInput, NotFound, TollgateError
from controlplane.evaluate import repository as decisions_repo
from controlplane.evaluate.explain import explain
from controlplane.ingest import repository as verdicts_repo
from controlplane.intel.service import IntelService
from controlplane.plan import repository as actions_repo
from controlplane.policy import repository as policies_repo
from controlplane.policy.service import bundle_of
from controlplane.remedy import repository as remedy_repo
from controlplane.remedy.reviews_service import ReviewService
from controlplane.settings import Settings
from controlplane.store.models import (
    ActionRow,
    AuditEventRow,
    DecisionRow,
    PolicyRevisionRow,
    VerdictRow,
)
from controlplane.telemetry import spanstore
from controlplane.ui import diff
from controlplane.ui.display import (
    Redactor,
    handles,
    is_handle,
    mentions,
    short,
    subject_label,
    when,
)
from controlplane.ui.waterfall import Waterfall, layout

PAGE = 50
HISTORY = 200
KINDS = [k.value for k in SubjectKind]
ACTION_TYPES = [t.value for t in ActionType]


# -- shared pieces ---------------------------------------------------------------------


def subject_href(kind: str, value: str) -> str:
    """The subject page of a subject (an API key by its handle)."""
    shown = subject_label(kind, value)
    return "/console/subject?" + urlencode({"kind": kind, "value": shown})


def _pretty(value: Any, redact: Redactor) -> str:
    return json.dumps(redact.value(value), indent=2, sort_keys=True, default=str)


async def resolve_key(session: AsyncSession, handle: str) -> str | None:
    """The API key id behind a handle: one the console has shown, else a search."""
    known = handles.lookup(handle)
    if known is not None:
        return known
    key = SubjectKind.API_KEY.value
    # The subject index may trail the chain by a few seconds: targets and verdicts too.
    ids = {
        *await audit_repo.subject_values(session, key),
        *await actions_repo.target_values(session, key),
        *await verdicts_repo.api_key_ids(session),
    }
    for api_key_id in ids:
        if key_handle(api_key_id) == handle:
            handles.remember(api_key_id)
            return api_key_id
    return None


@dataclass
class Subject:
    kind: str
    label: str
    href: str


def _subject(kind: str | None, value: str | None, redact: Redactor) -> Subject | None:
    if not kind or not value:
        return None
    return Subject(kind, redact.subject(kind, value), subject_href(kind, value))


def _verdict_subject(verdict: VerdictRow) -> tuple[str, str] | None:
    for kind, value in (
        (SubjectKind.ACCOUNT.value, verdict.account_id),
        (SubjectKind.API_KEY.value, verdict.api_key_id),
        (SubjectKind.ORG.value, verdict.org_id),
    ):
        if value:
            return kind, value
    return None


def _payload_subject(payload: dict[str, Any]) -> tuple[str, str] | None:
    for name in ("subject", "target"):
        found = payload.get(name)
        if isinstance(found, dict) and found.get("kind") and found.get("value"):
            return str(found["kind"]), str(found["value"])
    return None


# -- timeline --------------------------------------------------------------------------


@dataclass
class Filters:
    """The timeline's filters, as typed (empty: not filtered)."""

    subject_kind: str = ""
    subject: str = ""
    provider: str = ""
    action_type: str = ""
    rule: str = ""
    revision: str = ""
    actor: str = ""
    event: str = ""
    since: str = ""
    until: str = ""

    def query(self, **extra: Any) -> str:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update({k: v for k, v in extra.items() if v is not None})
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))


@dataclass
class EventView:
    seq: int
    at: str
    type: str
    actor: str
    provider: str
    subject: Subject | None
    action_id: str | None
    action_type: str
    rule: str
    revision: str
    revision_short: str
    summary: str
    trace_id: str | None
    state: str


@dataclass
class TimelinePage:
    filters: Filters
    events: list[EventView] = field(default_factory=list)
    next_cursor: int | None = None
    problems: list[str] = field(default_factory=list)
    redirect: str | None = None
    """Set when the filters named an API key by its id: the page moves to its handle."""


def _when_typed(text: str, name: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"{name}: {text!r} is not a date and time like 2026-11-26T12:00"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _infer_kind(value: str) -> str:
    if is_handle(value):
        return SubjectKind.API_KEY.value
    try:
        ipaddress.ip_address(value)
        return SubjectKind.IP.value
    except ValueError:
        pass
    if "/" in value:
        return SubjectKind.CIDR.value
    raise InvalidInput(f"subject {value!r}: choose its kind (account, api_key, org, ip, cidr)")


async def _revision_id(session: AsyncSession, typed: str) -> str:
    revisions = await policies_repo.revisions(session, limit=1000)
    matches = [r.id for r in revisions if r.id.startswith(typed)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise InvalidInput(f"revision {typed!r}: no recorded revision starts with it")
    raise InvalidInput(f"revision {typed!r} is ambiguous: type more of it")


async def _audit_filter(
    session: AsyncSession, f: Filters, page: TimelinePage
) -> AuditFilter | None:
    kind = value = None
    if f.subject.strip():
        typed = f.subject.strip()
        kind_text = f.subject_kind or _infer_kind(typed)
        kind_enum = SubjectKind(kind_text) if kind_text in KINDS else None
        if kind_enum is None:
            raise InvalidInput(f"subject kind {kind_text!r}: one of {', '.join(KINDS)}")
        if kind_enum is SubjectKind.API_KEY and not is_handle(typed):
            # Never keep a key id in the URL: the same page, named by the handle.
            page.redirect = "/console?" + f.query(subject=handles.remember(typed))
            return None
        if kind_enum is SubjectKind.API_KEY:
            found = await resolve_key(session, typed)
            if found is None:
                raise InvalidInput(f"no API key with handle {typed} is on record")
            typed = found
        kind, value = kind_enum.value, subjects.normalise(kind_enum, typed, "subject")
    if f.action_type and f.action_type not in ACTION_TYPES:
        raise InvalidInput(f"action type {f.action_type!r}: one of {', '.join(ACTION_TYPES)}")
    return AuditFilter(
        subject_kind=kind,
        subject_value=value,
        provider=f.provider.strip() or None,
        action_type=f.action_type or None,
        rule=f.rule.strip() or None,
        policy_revision=(
            await _revision_id(session, f.revision.strip()) if f.revision.strip() else None
        ),
        actor=f.actor.strip() or None,
        type=f.event.strip() or None,
        since=_when_typed(f.since, "from") if f.since.strip() else None,
        until=_when_typed(f.until, "until") if f.until.strip() else None,
    )


async def timeline(session: AsyncSession, f: Filters, cursor: int | None) -> TimelinePage:
    """Audit events newest first, with each one's action, subject and revision (with a
    subject filter, once the subject index caught up)."""
    page = TimelinePage(filters=f)
    try:
        where = await _audit_filter(session, f, page)
    except InvalidInput as exc:
        page.problems.append(exc.message)
        return page
    if where is None:
        return page
    rows = await audit.list_events(session, where, cursor, PAGE + 1, ascending=False)
    page.events = await event_views(session, rows[:PAGE])
    if len(rows) > PAGE:
        page.next_cursor = rows[PAGE - 1].seq
    return page


async def event_views(session: AsyncSession, rows: list[AuditEventRow]) -> list[EventView]:
    actions = {
        a.id: a
        for a in await actions_repo.actions_by_id(
            session, sorted({r.action_id for r in rows if r.action_id})
        )
    }
    verdicts = await verdicts_repo.verdicts_by_id(
        session, [r.verdict_id for r in rows if r.verdict_id]
    )
    decisions = await decisions_repo.decisions_by_id(
        session, [r.decision_id for r in rows if r.decision_id]
    )
    keys: list[str | None] = [v.api_key_id for v in verdicts.values()]
    keys += [a.target_value for a in actions.values() if a.target_kind == "api_key"]
    for row in rows:
        named = _payload_subject(row.payload)
        if named and named[0] == "api_key":
            keys.append(named[1])
    redact = Redactor(keys)
    return [_event_view(r, actions, verdicts, decisions, redact) for r in rows]


def _event_view(
    row: AuditEventRow,
    actions: dict[str, ActionRow],
    verdicts: dict[str, VerdictRow],
    decisions: dict[str, DecisionRow],
    redact: Redactor,
) -> EventView:
    action = actions.get(row.action_id or "")
    verdict = verdicts.get(row.verdict_id or "")
    decision = decisions.get(row.decision_id or "")
    p = row.payload
    if action is not None:
        named: tuple[str, str] | None = (action.target_kind, action.target_value)
    else:
        named = _payload_subject(p) or (_verdict_subject(verdict) if verdict else None)
    revision = (
        action.policy_revision
        if action
        else decision.policy_revision
        if decision
        else str(p.get("revision") or "")
    )
    if row.type == "verdict.received":
        detector = p.get("detector") or {}
        summary = (
            f"score {p.get('score')}, confidence {p.get('confidence')}, "
            f"detector {detector.get('name', '?')}"
        )
    elif row.type == "decision.recorded":
        summary = f"{p.get('status', '?')}, {p.get('actions', 0)} action(s)"
        if p.get("error"):  # a failed decision is never a quiet no-action: say why here
            summary += f": {p['error']}"
    elif action is not None:
        summary = str(p.get("error") or p.get("reason") or action.reason)
    else:
        summary = str(p.get("reason") or "")
    return EventView(
        seq=row.seq,
        at=when(row.at),
        type=row.type,
        actor=redact.text(row.actor),
        provider=row.provider or "",
        subject=_subject(named[0], named[1], redact) if named else None,
        action_id=row.action_id,
        action_type=action.type if action else "",
        rule=action.rule if action else "",
        revision=revision,
        revision_short=short(revision),
        summary=redact.text(summary),
        trace_id=row.trace_id,
        state=str(p.get("state") or p.get("status") or ""),
    )


# -- subject ---------------------------------------------------------------------------


@dataclass
class SubjectPage:
    kind: str
    label: str
    exemptions: list[dict[str, str]] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    events: list[EventView] = field(default_factory=list)
    truncated: bool = False


async def subject_page(session: AsyncSession, kind_text: str, value_text: str) -> SubjectPage:
    """A subject's story: exemptions, verdicts and their decisions, actions, events
    (once the subject index caught up)."""
    if kind_text not in KINDS:
        raise InvalidInput(f"subject kind {kind_text!r}: one of {', '.join(KINDS)}")
    kind = SubjectKind(kind_text)
    value = value_text.strip()
    if kind is SubjectKind.API_KEY:
        if not is_handle(value):
            raise InvalidInput("name an API key by its handle (key: and 12 hex digits)")
        found = await resolve_key(session, value)
        if found is None:
            raise NotFound(f"no API key with handle {value} is on record")
        value = found
    value = subjects.normalise(kind, value, "value")
    history = await audit.subject_history(session, kind, value, None, HISTORY)
    exemptions = await remedy_repo.exemptions_of(session, kind.value, value)
    keys: list[str | None] = [value if kind is SubjectKind.API_KEY else None]
    keys += [v.api_key_id for v in history.verdicts]
    keys += [a.target_value for a in history.actions if a.target_kind == "api_key"]
    redact = Redactor(keys)
    decided = {d.verdict_id: d for d in history.decisions}
    page = SubjectPage(kind.value, redact.subject(kind.value, value), truncated=history.truncated)
    page.exemptions = [
        {
            "provider": e.provider,
            "owner": e.owner,
            "reason": redact.text(e.reason),
            "created": when(e.created_at),
            "expires": when(e.expires_at) or "never",
        }
        for e in exemptions
    ]
    for v in reversed(history.verdicts):
        d = decided.get(v.id)
        page.verdicts.append(
            {
                "id": redact.text(v.id),
                "provider": v.provider,
                "detector": f"{v.detector_name} {v.detector_version}",
                "score": v.score,
                "confidence": v.confidence,
                "observed": when(v.observed_at),
                "decision": d.status if d else v.status,
                "revision": short(d.policy_revision) if d else "",
                "revision_full": d.policy_revision if d else "",
            }
        )
    page.actions = [_action_summary(a, redact) for a in reversed(history.actions)]
    page.events = await event_views(session, list(reversed(history.events)))
    return page


def _action_summary(a: ActionRow, redact: Redactor) -> dict[str, Any]:
    return {
        "id": a.id,
        "type": a.type,
        "target": _subject(a.target_kind, a.target_value, redact),
        "state": a.state,
        "shadow": a.shadow,
        "rule": a.rule,
        "reason": redact.text(a.reason),
        "provider": a.provider,
        "created": when(a.created_at),
        "expires": when(a.expires_at) or "never",
        "revision": a.policy_revision,
        "params": redact.value(a.params),
    }


# -- action ----------------------------------------------------------------------------


@dataclass
class ConnectorState:
    name: str
    type: str
    state: str
    attempts: int
    error: str
    updated: str


@dataclass
class ActionPage:
    action: dict[str, Any]
    verdict: dict[str, Any] | None
    decision: dict[str, Any] | None
    explanation: dict[str, Any] | None
    explain_error: str | None
    connectors: list[ConnectorState]
    events: list[EventView]
    waterfall: Waterfall | None
    show_all: bool


async def action_page(
    session: AsyncSession,
    enforcer: Enforcer,
    action_id: str,
    show_all: bool,
) -> ActionPage:
    """Verdict, decision (with the rules that fired, as `explain` re-runs it), applies
    per connector, and trace."""
    row = await actions_repo.get_action(session, action_id)
    if row is None:
        raise NotFound(f"no action {action_id!r}")
    verdict = await verdicts_repo.get_verdict(session, row.verdict_id)
    decision = await decisions_repo.get_decision(session, row.decision_id)
    applied = await enforce_repo.enforcement_of(session, row.id)
    story = await audit_repo.story_events(session, row.id, row.decision_id, row.verdict_id, 500)
    keys = [verdict.api_key_id if verdict else None]
    keys.append(row.target_value if row.target_kind == "api_key" else None)
    redact = Redactor(keys)
    explanation, explain_error = None, None
    if decision is not None:
        try:
            e = await explain(session, decision.id)
        except TollgateError as exc:
            explain_error = redact.text(exc.message)
        else:
            explanation = {
                "matches": e.matches,
                "rerun_error": redact.text(e.rerun_error),
                "actions": [
                    {
                        "type": a.get("type", ""),
                        "rule": a.get("rule", ""),
                        "target": redact.value(a.get("target")),
                        "metadata": redact.value(a.get("metadata") or {}),
                        "mine": a.get("rule") == row.rule and a.get("type") == row.type,
                    }
                    for a in e.actions
                ],
                "fired": [
                    {
                        "rule": f.rule,
                        "location": f.location,
                        "title": (f.metadata or {}).get("title", ""),
                        "description": (f.metadata or {}).get("description", ""),
                        "owner": ((f.metadata or {}).get("custom") or {}).get("owner", ""),
                        "bindings": _pretty(f.bindings, redact) if f.bindings else "",
                    }
                    for f in e.fired
                ],
            }
    waterfall = None
    if row.trace_id:
        spans = await spanstore.trace_spans(session, row.trace_id)
        waterfall = layout(row.trace_id, spans, redact, row.verdict_id, show_all)
    return ActionPage(
        action=_action_summary(row, redact)
        | {"trace_id": row.trace_id, "updated": when(row.updated_at)},
        verdict=_verdict_view(verdict, redact) if verdict else None,
        decision=_decision_view(decision, redact) if decision else None,
        explanation=explanation,
        explain_error=explain_error,
        connectors=_connector_states(enforcer, row, applied, redact),
        events=await event_views(session, story),
        waterfall=waterfall,
        show_all=show_all,
    )


def _verdict_view(v: VerdictRow, redact: Redactor) -> dict[str, Any]:
    body = v.body
    subject = body.get("subject") or {}
    return {
        "id": redact.text(v.id),
        "provider": v.provider,
        "detector": f"{v.detector_name} {v.detector_version}",
        "score": v.score,
        "confidence": v.confidence,
        "observed": when(v.observed_at),
        "received": when(v.received_at),
        "subjects": [
            s
            for s in (
                _subject("account", subject.get("account_id"), redact),
                _subject("api_key", subject.get("api_key_id"), redact),
                _subject("org", subject.get("org_id"), redact),
                *(_subject("ip", ip, redact) for ip in subject.get("ips") or []),
            )
            if s is not None
        ],
        "signals": redact.value(body.get("signals") or {}),
        "labels": redact.value(body.get("labels") or []),
        "document": _pretty(body, redact),
    }


def _decision_view(d: DecisionRow, redact: Redactor) -> dict[str, Any]:
    return {
        "id": d.id,
        "revision": d.policy_revision,
        "entrypoint": d.entrypoint,
        "engine": d.engine,
        "status": d.status,
        "shadow": d.shadow,
        "error": redact.text(d.error),
        "duration": f"{d.duration_ms:.2f} ms",
        "decided": when(d.decided_at),
        "input": _pretty(d.input, redact),
        "result": _pretty(d.result, redact),
    }


def _connector_states(
    enforcer: Enforcer, row: ActionRow, applied: list[Any], redact: Redactor
) -> list[ConnectorState]:
    by_name = {a.connector: a for a in applied}
    states: list[ConnectorState] = []
    for name in enforcer.names:
        config = enforcer.config(name)
        if not config.covers(row.provider, row.type, row.target_kind):
            continue
        found = by_name.pop(name, None)
        states.append(
            ConnectorState(
                name=name,
                type=config.type,
                state=found.state if found else ("never (shadow)" if row.shadow else "not yet"),
                attempts=found.attempts if found else 0,
                error=redact.text(found.error) if found else "",
                updated=when(found.updated_at) if found else "",
            )
        )
    for name, found in sorted(by_name.items()):
        states.append(
            ConnectorState(
                name=name,
                type="(no longer configured)",
                state=found.state,
                attempts=found.attempts,
                error=redact.text(found.error),
                updated=when(found.updated_at),
            )
        )
    return states


# -- policies --------------------------------------------------------------------------


@dataclass
class RevisionView:
    id: str
    status: str
    active: bool
    created: str
    source: str
    tests: str
    problems: list[str]
    shadow_rules: list[str]
    previous: str | None
    changes: list[diff.FileChange]


@dataclass
class PoliciesPage:
    active: str | None
    revisions: list[RevisionView]
    activations: list[dict[str, str]]


async def policies_page(session: AsyncSession) -> PoliciesPage:
    """Every revision (newest first) with what it changed from the one before it."""
    revisions = await policies_repo.revisions(session, limit=200)
    activations = await policies_repo.activations(session, limit=200)
    active = activations[0].revision if activations else None
    oldest_first = list(reversed(revisions))
    views = []
    for i, r in enumerate(oldest_first):
        before = oldest_first[i - 1] if i else None
        views.append(_revision_view(r, before, active))
    return PoliciesPage(
        active=active,
        revisions=list(reversed(views)),
        activations=[
            {
                "revision": a.revision,
                "kind": a.kind,
                "actor": a.actor,
                "reason": a.reason,
                "at": when(a.at),
            }
            for a in activations
        ],
    )


def _revision_view(
    r: PolicyRevisionRow, before: PolicyRevisionRow | None, active: str | None
) -> RevisionView:
    return RevisionView(
        id=r.id,
        status=r.status,
        active=r.id == active,
        created=when(r.created_at),
        source=r.source,
        tests=diff.tests_summary(r.tests),
        problems=list(r.problems),
        shadow_rules=list(bundle_of(r).shadow.shown),
        previous=before.id if before else None,
        changes=diff.changes(before, r),
    )


async def revision_page(session: AsyncSession, revision: str) -> RevisionView:
    """One revision with the full diff against the revision recorded before it."""
    revisions = await policies_repo.revisions(session, limit=1000)
    activations = await policies_repo.activations(session, limit=1)
    oldest_first = list(reversed(revisions))
    for i, r in enumerate(oldest_first):
        if r.id == revision:
            before = oldest_first[i - 1] if i else None
            return _revision_view(r, before, activations[0].revision if activations else None)
    raise NotFound(f"no recorded policy revision {revision!r}")


# -- connectors and audit --------------------------------------------------------------


async def reviews_page(session: AsyncSession, reviews: ReviewService, state: str) -> dict[str, Any]:
    """The review queue: hard actions withheld from verified customers, oldest open
    first in age, each with what would have been done; keys shown by their handle."""
    chosen = state if state in {"open", "confirmed", "dismissed"} else "open"
    rows, _ = await reviews.page(session, chosen, None, 200)
    now = datetime.now(UTC)
    items = [
        {
            "id": r.id,
            "provider": r.provider,
            "subject": subject_label(r.subject_kind, r.subject_value),
            "subject_kind": r.subject_kind,
            "href": subject_href(r.subject_kind, r.subject_value),
            "rule": r.rule,
            "reason": redact_keys(mentions(r.reason), _review_keys(r)),
            "withheld": [
                f"{w['type']} {w['target']['kind']} "
                f"{subject_label(w['target']['kind'], w['target']['value'])}"
                + (f" ({w['rule']})" if w.get("rule") else "")
                for w in r.withheld
            ],
            "opened": when(r.created_at),
            "age_hours": (now - r.created_at).total_seconds() / 3600,
            "resolved": when(r.resolved_at) if r.resolved_at else "",
            "resolved_by": r.resolved_by or "",
            "resolution": redact_keys(mentions(r.resolution), _review_keys(r))
            if r.resolution
            else "",
            "applied": len(r.applied),
        }
        for r in rows
    ]
    return {"state": chosen, "reviews": items}


def _review_keys(review: Any) -> list[str]:
    """The key ids a review names (its subject, what it withheld): shown as handles."""
    keys = [w["target"]["value"] for w in review.withheld if w["target"]["kind"] == "api_key"]
    return keys + ([review.subject_value] if review.subject_kind == "api_key" else [])


async def peers_page(session: AsyncSession, intel: IntelService) -> list[dict[str, Any]]:
    """What `GET /v1/intel/peers` answers, with times as the console shows them."""
    peers = await intel.peers(session)
    return [
        {
            **p,
            "last_pull": when(p["last_pull_at"]) if p["last_pull_at"] else "never",
            "last_success": when(p["last_success_at"]) if p["last_success_at"] else "never",
            "last_error": mentions(p["last_error"]) if p["last_error"] else "",
        }
        for p in peers
    ]


async def connectors_page(session: AsyncSession, enforcer: Enforcer) -> list[dict[str, Any]]:
    """What `GET /v1/connectors` answers: health now and the last reconcile."""
    statuses = await enforce_repo.statuses(session)
    out = []
    for name in enforcer.names:
        config = enforcer.config(name)
        healthy, gateway, detail = await enforcer.health(session, name)
        s = statuses.get(name)
        out.append(
            {
                "name": name,
                "type": config.type,
                "providers": ", ".join(config.providers),
                "healthy": healthy,
                "gateway": gateway,
                "detail": mentions(detail),
                "last_reconcile": when(s.last_reconcile_at) if s else "never",
                "last_success": when(s.last_success_at) if s else "never",
                "desired": s.desired if s else 0,
                "applied": s.applied if s else 0,
                "failed": s.failed if s else 0,
                "drift_repaired": s.drift_repaired if s else 0,
                "lag": f"{s.lag_seconds:.1f} s" if s else "",
                "last_error": mentions(s.last_error) if s and s.last_error else "",
            }
        )
    return out


async def verify_page(session: AsyncSession, settings: Settings) -> dict[str, Any]:
    """The audit chain recomputed from genesis, with signed checkpoints checked against
    the configured signing key's public half when there is one."""
    try:
        keys = public_keys([], settings)
    except TollgateError as exc:
        return {"ok": False, "error": exc.message}
    r = await verify_chain(session, keys)
    broken = r.broken
    return {
        "error": None,
        "ok": r.ok,
        "events": r.events,
        "first_seq": r.first_seq,
        "last_seq": r.last_seq,
        "last_hash": r.last_hash or "",
        "checkpoints": r.checkpoints,
        "checkpoints_verified": r.checkpoints_verified,
        "signatures_checked": r.signatures_checked,
        "key_ids": r.key_ids,
        "authenticated_through_seq": r.authenticated_through_seq,
        "broken": None
        if broken is None
        else {
            "seq": broken.seq,
            "kind": broken.kind,
            "expected": broken.expected,
            "found": broken.found,
            "message": broken.message,
        },
        "seconds": round(r.seconds, 3),
        "warnings": r.warnings,
    }
