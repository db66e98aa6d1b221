"""Undoing mistakes: lifts by hand, exemptions, appeals.

Each is a change to the desired state like any other: in one transaction it writes
the actions' new states, the audit events, the `lift` rows the policies see as
`history.appeals`, and then the change log (`record_changes`, after the audit events:
one lock order); after the commit the connectors are woken, so a gateway drops an
entry within a follower's batch of the commit.

An IP or CIDR exemption is also a gateway entry of its own (`allow`), consulted
before the block list where the gateway can: a single address carved out of a
blocked range is served while its neighbours stay refused.

Every method works in the session it is given: the request or job that calls it
holds the transaction, and wakes the connectors once it commits (`after_commit`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.audit import service as audit
from controlplane.audit.chain import EventDraft
from controlplane.domain.vocabulary import ACTIVE_STATES, ActionState
from controlplane.enforce.sdk import EntryType
from controlplane.enforce.service import Enforcer, record_changes
from controlplane.errors import Conflict, Forbidden, InvalidInput, NotFound
from controlplane.evaluate import repository as decisions_repo
from controlplane.ingest import repository as verdicts_repo
from controlplane.plan import repository as actions_repo
from controlplane.remedy import repository
from controlplane.remedy.repository import AppealFilter as AppealFilter
from controlplane.settings import Providers
from controlplane.store.db import after_commit
from controlplane.store.models import ActionRow, AppealRow, ExemptionRow, new_id
from controlplane.store.types import utcnow
from controlplane.telemetry.tracing import tracer

SPAN_FILE = "appeal.file"
SPAN_UPHOLD = "appeal.uphold"
SPAN_DENY = "appeal.deny"
SPAN_EXEMPT = "exemption.add"
ACTIVE = {s.value for s in ACTIVE_STATES}
NETWORK_KINDS = ("ip", "cidr")
SUBJECT_WIDE = ("account", "org")
"""Subjects whose upheld appeal lifts every active action on them."""


@dataclass(frozen=True)
class Subject:
    kind: str
    value: str


@dataclass(frozen=True)
class ExemptionDraft:
    provider: str
    subject: Subject
    owner: str
    reason: str
    expires_at: datetime | None = None


@dataclass(frozen=True)
class AppealDraft:
    provider: str
    subject: Subject
    statement: str
    contact: str
    action_ids: Sequence[str] = ()
    reference: str | None = None


@dataclass
class ExemptionOutcome:
    row: ExemptionRow
    lifted: list[str] = field(default_factory=list)
    covering: list[str] = field(default_factory=list)
    carve_out: list[tuple[str, bool, str]] = field(default_factory=list)
    """(connector, carved out, detail) for each connector serving the provider."""


@dataclass
class AppealView:
    row: AppealRow
    actions: list[tuple[ActionRow, datetime | None]]
    exempt_until: datetime | None = None

    @property
    def outcome(self) -> str | None:
        """What to tell the customer, once decided."""
        row = self.row
        if row.state == "denied":
            return f"Your appeal {row.id} was reviewed and denied: {row.decision_reason}"
        if row.state != "upheld":
            return None
        lifted = sum(1 for _, at in self.actions if at is not None)
        text = (
            f"Your appeal {row.id} was upheld: {row.decision_reason}. "
            f"{lifted} restriction(s) on {row.subject_kind}:{row.subject_value} were lifted"
        )
        if self.exempt_until is not None:
            text += f", and it is exempt until {self.exempt_until.isoformat()}"
        return text + "."


@dataclass
class _Matched:
    lift: list[ActionRow]
    covering: list[ActionRow]
    """Blocks of wider ranges that hold an exempt IP or CIDR: carved out, not lifted."""


class Remedy:
    """Lifts, exemptions and appeals, for the API, the CLI and the jobs."""

    def __init__(self, enforcer: Enforcer, providers: Providers) -> None:
        self._enforcer = enforcer
        self._providers = providers

    # -- lifts by hand ---------------------------------------------------------------------

    async def lift(
        self, session: AsyncSession, action_id: str, actor: str, reason: str
    ) -> ActionRow:
        """Lift one active action: it leaves the desired state, connectors drop it."""
        now = utcnow()
        row, lifted = await actions_repo.lift(session, action_id, now)
        if row is None:
            raise NotFound(f"no action {action_id!r}")
        if not lifted:
            raise Conflict(f"action {action_id} is {row.state}, not active: nothing to lift")
        # A suspension's key revocations end with it.
        lifted_rows = [row, *await actions_repo.lift_children(session, row.id, now)]
        await self._record_lifts(session, lifted_rows, "lifted", actor, reason, now)
        await record_changes(session, [r.model_dump() for r in lifted_rows], "lifted", now)
        after_commit(session, self._enforcer.wake)
        return row

    # -- exemptions ------------------------------------------------------------------------

    async def add_exemption(
        self, session: AsyncSession, draft: ExemptionDraft, actor: str
    ) -> ExemptionOutcome:
        """Exempt a subject, and lift at once what is enforced on it; an IP or CIDR is
        carved out of wider blocked ranges where the gateway can."""
        now = utcnow()
        with tracer().start_as_current_span(
            SPAN_EXEMPT,
            attributes={
                "tollgate.provider": draft.provider,
                "tollgate.subject": draft.subject.kind,
            },
        ) as span:
            trace_id, span_id = _ids(span)
            row = await self._insert_exemption(session, draft, actor, now, trace_id)
            matched = await self._matching(session, draft.provider, draft.subject)
            lifted = await self._lift_all(
                session,
                matched.lift,
                "exempted",
                actor,
                f"exemption {row.id}: {draft.reason}",
                now,
                trace_id=trace_id,
                span_id=span_id,
            )
            await self._allow(session, row, "exempted", now, trace_id, span_id)
        after_commit(session, self._enforcer.wake)
        return ExemptionOutcome(
            row=row,
            lifted=[a.id for a in lifted],
            covering=[a.id for a in matched.covering],
            carve_out=self._carve_out(draft.provider, draft.subject),
        )

    async def remove_exemption(
        self, session: AsyncSession, exemption_id: str, actor: str, reason: str
    ) -> ExemptionRow:
        now = utcnow()
        row = await repository.get_exemption(session, exemption_id, for_update=True)
        if row is None:
            raise NotFound(f"no exemption {exemption_id!r}")
        if row.ended_at is not None:
            raise Conflict(f"exemption {exemption_id} ended at {row.ended_at.isoformat()}")
        await repository.end_exemptions(session, [row.id], actor, now)
        await audit.record(session, [_exemption_event(row, "removed", actor, now, reason)])
        await self._allow(session, row, "lifted", now)
        row.ended_at, row.ended_by = now, actor
        after_commit(session, self._enforcer.wake)
        return row

    async def expire_exemptions(self, session: AsyncSession, limit: int = 1000) -> int:
        """End exemptions past their expiry (each an audit event); their carve-outs go."""
        now = utcnow()
        due = await repository.due_exemptions(session, now, limit)
        if not due:
            return 0
        await repository.end_exemptions(session, [e.id for e in due], "tollgate", now)
        await audit.record(session, [_exemption_event(e, "expired", "tollgate", now) for e in due])
        await record_changes(
            session, [_allow_change(e) for e in due if _network(e)], "expired", now
        )
        after_commit(session, self._enforcer.wake)
        return len(due)

    # -- appeals ---------------------------------------------------------------------------

    async def file_appeal(
        self, session: AsyncSession, draft: AppealDraft, actor: str
    ) -> AppealView:
        """Record an appeal in state `open`, with the actions it covers."""
        now = utcnow()
        appeal_id = new_id("apl")
        with tracer().start_as_current_span(
            SPAN_FILE,
            attributes={"tollgate.appeal_id": appeal_id, "tollgate.provider": draft.provider},
        ) as span:
            trace_id, span_id = _ids(span)
            covered = await self._covered_at_filing(session, draft)
            row: dict[str, Any] = {
                "id": appeal_id,
                "provider": draft.provider,
                "subject_kind": draft.subject.kind,
                "subject_value": draft.subject.value,
                "reference": draft.reference,
                "statement": draft.statement,
                "contact": draft.contact,
                "state": "open",
                "filed_by": actor,
                "filed_at": now,
                "trace_id": trace_id,
                "span_id": span_id,
            }
            await repository.insert_appeal(session, row)
            await repository.cover(session, appeal_id, [a.id for a in covered], None)
            await audit.record(
                session,
                [
                    _appeal_event(
                        AppealRow(**row),
                        "filed",
                        actor,
                        now,
                        {
                            "reference": draft.reference,
                            "action_ids": [a.id for a in covered],
                        },
                    )
                ],
            )
        return await self.appeal(session, appeal_id)

    async def uphold(
        self,
        session: AsyncSession,
        appeal_id: str,
        actor: str,
        reason: str,
        exempt_for: timedelta | None,
    ) -> AppealView:
        """Lift every action the appeal covers (and, for an account or org, every active
        action on it), exempt the subject for `exempt_for`, record the outcome."""
        now = utcnow()
        appeal = await self._to_decide(session, appeal_id, actor)
        with _continuing(appeal, SPAN_UPHOLD) as span:
            trace_id, span_id = _ids(span)
            subject = Subject(appeal.subject_kind, appeal.subject_value)
            covered = await actions_repo.actions_by_id(
                session, await repository.covered_ids(session, appeal.id)
            )
            matched = await self._matching(session, appeal.provider, subject)
            wider = {a.id for a in matched.covering}
            candidates = {a.id: a for a in [*covered, *matched.lift, *matched.covering]}
            to_lift = [
                a for a in candidates.values() if a.id not in wider and not _wider_than(a, subject)
            ]
            await audit.record(
                session,
                [_appeal_event(appeal, "upheld", actor, now, {"reason": reason}, trace_id)],
            )
            lifted = await self._lift_all(
                session,
                to_lift,
                "upheld",
                actor,
                f"appeal {appeal.id} upheld: {reason}",
                now,
                appeal_id=appeal.id,
                trace_id=trace_id,
                span_id=span_id,
            )
            exemption: ExemptionRow | None = None
            if exempt_for is not None:
                draft = ExemptionDraft(
                    provider=appeal.provider,
                    subject=subject,
                    owner=actor,
                    reason=f"appeal {appeal.id} upheld: {reason}",
                    expires_at=now + exempt_for,
                )
                exemption = await self._insert_exemption(
                    session, draft, actor, now, trace_id, appeal_id=appeal.id
                )
            span.set_attribute("tollgate.lifted", len(lifted))
            await repository.cover(session, appeal.id, list(candidates), None)
            await repository.mark_lifted(session, appeal.id, [a.id for a in lifted], now)
            await repository.decide_appeal(
                session,
                appeal.id,
                {
                    "state": "upheld",
                    "decided_by": actor,
                    "decided_at": now,
                    "decision_reason": reason,
                    "exemption_id": exemption.id if exemption else None,
                },
            )
            await audit.record(
                session,
                [
                    _appeal_event(
                        appeal,
                        "outcome",
                        actor,
                        now,
                        {
                            "state": "upheld",
                            "lifted": [a.id for a in lifted],
                            "carved_out": sorted(wider),
                            "exemption_id": exemption.id if exemption else None,
                            "exempt_until": _iso(exemption.expires_at) if exemption else None,
                            "contact": appeal.contact,
                        },
                        trace_id,
                    )
                ],
            )
            await record_changes(
                session, _changes(lifted, trace_id, span_id), "upheld", now, span_id
            )
            if exemption is not None:
                await self._allow(session, exemption, "exempted", now, trace_id, span_id)
        after_commit(session, self._enforcer.wake)
        return await self.appeal(session, appeal_id)

    async def deny(
        self, session: AsyncSession, appeal_id: str, actor: str, reason: str
    ) -> AppealView:
        """Close the appeal as denied: nothing changes at any gateway."""
        now = utcnow()
        appeal = await self._to_decide(session, appeal_id, actor)
        with _continuing(appeal, SPAN_DENY) as span:
            trace_id, _ = _ids(span)
            await repository.decide_appeal(
                session,
                appeal.id,
                {
                    "state": "denied",
                    "decided_by": actor,
                    "decided_at": now,
                    "decision_reason": reason,
                },
            )
            await audit.record(
                session,
                [
                    _appeal_event(appeal, "denied", actor, now, {"reason": reason}, trace_id),
                    _appeal_event(
                        appeal,
                        "outcome",
                        actor,
                        now,
                        {"state": "denied", "contact": appeal.contact},
                        trace_id,
                    ),
                ],
            )
        return await self.appeal(session, appeal_id)

    async def exemptions(
        self, session: AsyncSession, provider: str | None, live: bool, limit: int
    ) -> list[ExemptionRow]:
        """The newest exemptions, of one provider or all, only those holding now or all."""
        return await repository.list_exemptions(
            session, provider, utcnow() if live else None, limit
        )

    async def exemption(self, session: AsyncSession, exemption_id: str) -> ExemptionRow:
        """One exemption that holds now (an ended one is NotFound: its record stays in
        the list and the audit trail)."""
        row = await repository.get_exemption(session, exemption_id)
        if row is None:
            raise NotFound(f"no exemption {exemption_id!r}")
        if row.ended_at is not None:
            raise NotFound(
                f"exemption {exemption_id} ended at {row.ended_at.isoformat()}: its record "
                "is listed by GET /v1/exemptions"
            )
        return row

    async def appeal(self, session: AsyncSession, appeal_id: str) -> AppealView:
        row = await repository.get_appeal(session, appeal_id)
        if row is None:
            raise NotFound(f"no appeal {appeal_id!r}")
        return (await self._views(session, [row]))[0]

    async def appeals(
        self, session: AsyncSession, where: AppealFilter, cursor: str | None, limit: int
    ) -> list[AppealView]:
        rows = await repository.list_appeals(session, where, cursor, limit)
        return await self._views(session, rows)

    # -- internals -------------------------------------------------------------------------

    async def _views(self, session: AsyncSession, rows: Sequence[AppealRow]) -> list[AppealView]:
        covered = await repository.covered(session, [r.id for r in rows])
        actions = {
            a.id: a
            for a in await actions_repo.actions_by_id(
                session, [i for pairs in covered.values() for i, _ in pairs]
            )
        }
        views = []
        for row in rows:
            until = None
            if row.exemption_id:
                exemption = await repository.get_exemption(session, row.exemption_id)
                until = exemption.expires_at if exemption else None
            pairs = covered.get(row.id, [])
            views.append(
                AppealView(row, [(actions[i], at) for i, at in pairs if i in actions], until)
            )
        return views

    async def _to_decide(self, session: AsyncSession, appeal_id: str, actor: str) -> AppealRow:
        appeal = await repository.get_appeal(session, appeal_id, for_update=True)
        if appeal is None:
            raise NotFound(f"no appeal {appeal_id!r}")
        if appeal.filed_by == actor:
            raise Forbidden(
                f"{actor} filed appeal {appeal_id}, so may not decide it: another reviewer must"
            )
        if appeal.state != "open":
            raise Conflict(
                f"appeal {appeal_id} was {appeal.state} by {appeal.decided_by} at "
                f"{_iso(appeal.decided_at)}: it cannot be decided again"
            )
        return appeal

    async def _covered_at_filing(
        self, session: AsyncSession, draft: AppealDraft
    ) -> list[ActionRow]:
        covered: dict[str, ActionRow] = {}
        for i, action_id in enumerate(draft.action_ids):
            row = await actions_repo.get_action(session, action_id)
            if row is None or row.provider != draft.provider:
                raise InvalidInput(
                    f"action_ids[{i}]: no action {action_id!r} of provider {draft.provider}",
                    details=[{"field": f"action_ids[{i}]", "message": "no such action"}],
                )
            covered[row.id] = row
        if draft.reference:
            found = await actions_repo.actions_by_reference(
                session, draft.reference, draft.provider
            )
            if not found:
                raise InvalidInput(
                    f"reference: {draft.reference} names no action of provider "
                    f"{draft.provider}; check it against what the refusal showed",
                    details=[{"field": "reference", "message": "unknown reference"}],
                )
            active = [a for a in found if a.state in ACTIVE and not a.shadow]
            covered.update({a.id: a for a in (active or found[:1])})
        if not covered:
            matched = await self._matching(session, draft.provider, draft.subject)
            covered.update({a.id: a for a in [*matched.lift, *matched.covering]})
        return list(covered.values())

    async def _matching(self, session: AsyncSession, provider: str, subject: Subject) -> _Matched:
        """What is enforced on a subject now: to lift (its own actions; for an account,
        key or org also what its verdicts planned, except shared ranges), and the wider
        blocked ranges that hold an IP or CIDR (carved out, not lifted)."""
        kind, value = subject.kind, subject.value
        if kind not in NETWORK_KINDS:
            own = await actions_repo.active_on_target(
                session, provider, kind, value, for_update=True
            )
            verdicts = verdicts_repo.ids_naming(provider, kind, value)
            planned = (
                await actions_repo.active_of_decisions(
                    session, decisions_repo.ids_of_verdicts(verdicts), for_update=True
                )
                if verdicts is not None
                else []
            )
            found = {a.id: a for a in [*own, *planned] if a.target_kind != "cidr"}
            wider = [a for a in planned if a.target_kind == "cidr"]
            return _Matched(list(found.values()), list({a.id: a for a in wider}.values()))
        exempt = ipaddress.ip_network(value, strict=False)
        lift: list[ActionRow] = []
        covering: list[ActionRow] = []
        for action in await actions_repo.active_network_blocks(session, provider, for_update=True):
            try:
                target = ipaddress.ip_network(action.target_value, strict=False)
            except ValueError:
                continue
            if target.version != exempt.version:
                continue
            if target.subnet_of(exempt):  # type: ignore[arg-type]
                lift.append(action)
            elif exempt.subnet_of(target):  # type: ignore[arg-type]
                covering.append(action)
        return _Matched(lift, covering)

    async def _lift_all(
        self,
        session: AsyncSession,
        actions: Sequence[ActionRow],
        cause: str,
        actor: str,
        reason: str,
        now: datetime,
        *,
        appeal_id: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
    ) -> list[ActionRow]:
        """Mark the active ones lifted, with their audit events and lift rows, and log the
        changes (after the events). Returns those lifted."""
        active = [a for a in actions if a.state in ACTIVE and not a.shadow]
        if not active:
            return []
        await actions_repo.set_action_states(
            session, {a.id: ActionState.LIFTED.value for a in active}, now
        )
        for a in active:
            a.state = ActionState.LIFTED.value
        # A suspension's key revocations end with it.
        for a in list(active):
            active += await actions_repo.lift_children(session, a.id, now)
        await self._record_lifts(
            session, active, cause, actor, reason, now, appeal_id=appeal_id, trace_id=trace_id
        )
        if cause != "upheld":  # an uphold logs its changes after its last event
            await record_changes(session, _changes(active, trace_id, span_id), cause, now, span_id)
        return active

    async def _record_lifts(
        self,
        session: AsyncSession,
        actions: Sequence[ActionRow],
        cause: str,
        actor: str,
        reason: str,
        now: datetime,
        *,
        appeal_id: str | None = None,
        trace_id: str | None = None,
    ) -> None:
        scores = await verdicts_repo.scores_of(session, [a.verdict_id for a in actions])
        await repository.insert_lifts(
            session,
            [
                {
                    "id": new_id("lft"),
                    "action_id": a.id,
                    "provider": a.provider,
                    "type": a.type,
                    "target_kind": a.target_kind,
                    "target_value": a.target_value,
                    "rule": a.rule,
                    "score": scores.get(a.verdict_id, 1.0),
                    "cause": cause,
                    "appeal_id": appeal_id,
                    "actor": actor,
                    "reason": reason,
                    "at": now,
                }
                for a in actions
            ],
        )
        await audit.record(
            session,
            [
                EventDraft(
                    type="action.lifted",
                    actor=actor,
                    at=now,
                    provider=a.provider,
                    verdict_id=a.verdict_id,
                    decision_id=a.decision_id,
                    action_id=a.id,
                    trace_id=trace_id or a.trace_id,
                    payload={
                        "reason": reason,
                        "cause": cause,
                        "appeal_id": appeal_id,
                        "type": a.type,
                        "target": {"kind": a.target_kind, "value": a.target_value},
                    },
                )
                for a in actions
            ],
        )

    async def _insert_exemption(
        self,
        session: AsyncSession,
        draft: ExemptionDraft,
        actor: str,
        now: datetime,
        trace_id: str | None,
        *,
        appeal_id: str | None = None,
    ) -> ExemptionRow:
        row: dict[str, Any] = {
            "id": new_id("exm"),
            "provider": draft.provider,
            "subject_kind": draft.subject.kind,
            "subject_value": draft.subject.value,
            "owner": draft.owner,
            "reason": draft.reason,
            "expires_at": draft.expires_at,
            "created_at": now,
            "appeal_id": appeal_id,
        }
        await repository.insert_exemption(session, row)
        exemption = ExemptionRow(**row)
        await audit.record(
            session, [_exemption_event(exemption, "added", actor, now, trace_id=trace_id)]
        )
        return exemption

    async def _allow(
        self,
        session: AsyncSession,
        exemption: ExemptionRow,
        cause: str,
        now: datetime,
        trace_id: str | None = None,
        span_id: str | None = None,
    ) -> None:
        """An IP or CIDR exemption's carve-out enters (or leaves) the change log."""
        if _network(exemption):
            change = {**_allow_change(exemption), "trace_id": trace_id}
            await record_changes(session, [change], cause, now, span_id)

    def _carve_out(self, provider: str, subject: Subject) -> list[tuple[str, bool, str]]:
        if subject.kind not in NETWORK_KINDS:
            return []
        found = []
        for name, types in self._enforcer.serving(provider):
            if EntryType.ALLOW.value in types:
                found.append((name, True, "served before the block list"))
            else:
                found.append(
                    (name, False, "this gateway cannot serve an address inside a blocked range")
                )
        return found


# -- helpers -------------------------------------------------------------------------------


def _network(exemption: ExemptionRow) -> bool:
    return exemption.subject_kind in NETWORK_KINDS


def _allow_change(exemption: ExemptionRow) -> dict[str, Any]:
    return {
        "id": None,
        "provider": exemption.provider,
        "type": EntryType.ALLOW.value,
        "target_kind": exemption.subject_kind,
        "target_value": exemption.subject_value,
    }


def _changes(
    actions: Sequence[ActionRow], trace_id: str | None, span_id: str | None
) -> list[dict[str, Any]]:
    rows = []
    for a in actions:
        row = a.model_dump()
        if trace_id:
            row["trace_id"], row["span_id"] = trace_id, span_id
        rows.append(row)
    return rows


def _wider_than(action: ActionRow, subject: Subject) -> bool:
    """A blocked range wider than an IP or CIDR subject covers others: carved out for
    the subject, never lifted for everyone."""
    if subject.kind not in NETWORK_KINDS or action.target_kind != "cidr":
        return False
    try:
        target = ipaddress.ip_network(action.target_value, strict=False)
        own = ipaddress.ip_network(subject.value, strict=False)
    except ValueError:
        return False
    return target.version == own.version and target != own and own.subnet_of(target)  # type: ignore[arg-type]


def _ids(span: trace.Span) -> tuple[str | None, str | None]:
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None, None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


@contextmanager
def _continuing(appeal: AppealRow, name: str) -> Iterator[trace.Span]:
    """A span in the appeal's trace (under the span that filed it)."""
    parent = None
    if appeal.trace_id and appeal.span_id:
        ctx = SpanContext(
            int(appeal.trace_id, 16),
            int(appeal.span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
        parent = trace.set_span_in_context(NonRecordingSpan(ctx))
    attributes = {"tollgate.appeal_id": appeal.id, "tollgate.provider": appeal.provider}
    with tracer().start_as_current_span(name, context=parent, attributes=attributes) as span:
        yield span


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _appeal_event(
    appeal: AppealRow,
    what: str,
    actor: str,
    at: datetime,
    extra: dict[str, Any],
    trace_id: str | None = None,
) -> EventDraft:
    return EventDraft(
        type=f"appeal.{what}",
        actor=actor,
        at=at,
        provider=appeal.provider,
        trace_id=trace_id or appeal.trace_id,
        payload={
            "appeal_id": appeal.id,
            "subject": {"kind": appeal.subject_kind, "value": appeal.subject_value},
            **extra,
        },
    )


def _exemption_event(
    exemption: ExemptionRow,
    what: str,
    actor: str,
    at: datetime,
    reason: str | None = None,
    trace_id: str | None = None,
) -> EventDraft:
    return EventDraft(
        type=f"exemption.{what}",
        actor=actor,
        at=at,
        provider=exemption.provider,
        trace_id=trace_id,
        payload={
            "id": exemption.id,
            "subject": {"kind": exemption.subject_kind, "value": exemption.subject_value},
            "reason": reason or exemption.reason,
            "expires_at": _iso(exemption.expires_at),
            "appeal_id": exemption.appeal_id,
        },
    )
