"""`/v1/audit` and `/v1/subjects`: the record, its proof, its export, and one subject's story."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, Parameter, QueryParameter
from litestar.response import Stream
from litestar.status_codes import HTTP_200_OK
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.audit import service, subjects
from controlplane.audit.checkpoints import public_keys, sign_now
from controlplane.audit.export import FORMATS
from controlplane.audit.schemas import (
    AuditEventOut,
    AuditPage,
    CheckpointOut,
    ExportFormat,
    HistoryAction,
    HistoryDecision,
    HistoryVerdict,
    Order,
    ReindexOut,
    SubjectHistoryOut,
    SubjectOut,
    VerifyOut,
)
from controlplane.audit.service import AuditFilter
from controlplane.audit.subjects import normalise
from controlplane.audit.verify import verify_chain
from controlplane.auth.guards import principal_of, requires
from controlplane.auth.roles import READERS, Role
from controlplane.domain.vocabulary import ActionType, SubjectKind
from controlplane.errors import InvalidInput, NotFound
from controlplane.plan.schemas import ActionOut
from controlplane.settings import Settings
from controlplane.store.db import Database

log = logging.getLogger(__name__)

# Read as text and parsed here: litestar would also take a number as a Unix time,
# which the documented `date-time` format does not allow.
Since = Annotated[
    str | None,
    QueryParameter(
        description="Events at or after this instant (RFC 3339, with a zone).",
        schema_extra={"format": "date-time"},
    ),
]
Until = Annotated[
    str | None,
    QueryParameter(
        description="Events before this instant (RFC 3339, with a zone).",
        schema_extra={"format": "date-time"},
    ),
]


def _aware(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{name} is not a date-time: write it like 2026-11-26T12:00:00Z",
            details=[{"field": name, "message": "not an RFC 3339 date-time"}],
        ) from None
    if value.tzinfo is None:
        raise InvalidInput(
            f"{name} has no time zone: add `Z` or an offset, e.g. 2026-11-26T12:00:00Z",
            details=[{"field": name, "message": "needs a time zone"}],
        )
    return value


def _cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return int(cursor)
    except ValueError:
        raise InvalidInput(
            "cursor is not one this API gave: pass `next_cursor` of the previous page",
            details=[{"field": "cursor", "message": "not a cursor from this API"}],
        ) from None


class AuditController(Controller):
    path = "/v1/audit"
    tags = ["audit"]
    guards = [requires(*READERS)]

    @get("/", operation_id="listAuditEvents", summary="List audit events")
    async def list_events(
        self,
        db: NamedDependency[Database],
        session: NamedDependency[AsyncSession],
        subject_kind: Annotated[
            SubjectKind | None,
            QueryParameter(description="With `subject_value`: events about this subject."),
        ] = None,
        subject_value: Annotated[str | None, QueryParameter(max_length=200)] = None,
        provider: Annotated[str | None, QueryParameter(max_length=63)] = None,
        action_type: Annotated[
            ActionType | None, QueryParameter(description="Events about actions of this type.")
        ] = None,
        rule: Annotated[
            str | None,
            QueryParameter(max_length=200, description="Events about actions this rule asked for."),
        ] = None,
        policy_revision: Annotated[
            str | None,
            QueryParameter(
                max_length=80,
                description="Decisions and actions made at this revision, and its policy events.",
            ),
        ] = None,
        actor: Annotated[str | None, QueryParameter(max_length=200)] = None,
        event_type: Annotated[
            str | None,
            QueryParameter(name="type", max_length=40, description="e.g. `action.planned`."),
        ] = None,
        since: Since = None,
        until: Until = None,
        order: Annotated[
            Order, QueryParameter(description="`desc`: newest first; `asc`: oldest first.")
        ] = Order.DESC,
        cursor: Annotated[
            str | None,
            QueryParameter(
                description="`next_cursor` of the previous page.",
                pattern=r"^[0-9]{1,18}$",
            ),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> AuditPage:
        """Audit events by seq, every filter given must match. A subject matches events
        whose verdict is about it (account, api_key, org or one of its IPs), whose action
        targets it, or that name it (an exemption, a CIDR indicator)."""
        if (subject_kind is None) != (subject_value is None):
            missing = "subject_value" if subject_value is None else "subject_kind"
            raise InvalidInput(
                f"{missing} is missing: a subject filter needs subject_kind and subject_value",
                details=[{"field": missing, "message": "required with the other"}],
            )
        where = AuditFilter(
            subject_kind=subject_kind.value if subject_kind else None,
            subject_value=(
                normalise(subject_kind, subject_value) if subject_kind and subject_value else None
            ),
            provider=provider,
            action_type=action_type.value if action_type else None,
            rule=rule,
            policy_revision=policy_revision,
            actor=actor,
            type=event_type,
            since=_aware("since", since),
            until=_aware("until", until),
        )
        ascending = order is Order.ASC
        if where.subject_kind is not None:
            # The subject index follows the chain: up to date before it is read, so an
            # event committed before this request is never missing from the answer.
            await subjects.catch_up(db)
        rows = await service.list_events(session, where, _cursor(cursor), limit + 1, ascending)
        items = [AuditEventOut.from_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        return AuditPage(items=items, next_cursor=str(items[-1].seq) if more else None)

    @get("/verify", operation_id="verifyAudit", summary="Verify the audit chain")
    async def verify(
        self, session: NamedDependency[AsyncSession], settings: NamedDependency[Settings]
    ) -> VerifyOut:
        """Recompute every hash from genesis, check the head and every checkpoint; the
        signatures are checked with the public half of the server's signing key when one
        is configured. Takes about a second per 50,000 events. `tollgate audit verify`
        prints the same, and can check with keys of your own."""
        report = await verify_chain(session, public_keys([], settings))
        return VerifyOut.from_report(report)

    @get("/export", operation_id="exportAudit", summary="Export the audit trail")
    async def export(
        self,
        db: NamedDependency[Database],
        export_format: Annotated[
            ExportFormat, QueryParameter(name="format", description="jsonl or csv.")
        ] = ExportFormat.JSONL,
        since: Since = None,
        until: Until = None,
    ) -> Stream:
        """Stream the events of [since, until) with their chain fields and the signed
        checkpoints among them, as JSON lines or CSV; `tollgate audit verify --file`
        checks it offline. The range is the contiguous run of seqs from the first event
        at or after `since` to the last before `until` (docs/audit.md)."""
        fmt = FORMATS[export_format.value]
        chunks: AsyncIterator[str] = service.export(
            db, fmt, _aware("since", since), _aware("until", until)
        )
        return Stream(
            chunks,
            media_type=fmt.media_type,
            headers={"Content-Disposition": f'attachment; filename="tollgate-audit.{fmt.suffix}"'},
        )

    @post(
        "/checkpoint",
        operation_id="signAuditCheckpoint",
        summary="Sign a checkpoint now",
        status_code=HTTP_200_OK,
        guards=[requires(Role.AUDITOR)],
    )
    async def checkpoint(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[Database],
        settings: NamedDependency[Settings],
    ) -> CheckpointOut:
        """Sign the chain's head now with this server's key
        (`TOLLGATE_AUDIT_SIGNING_KEY_FILE`), after re-verifying the events since the
        previous checkpoint; what `tollgate audit checkpoint` does with TOLLGATE_URL set.
        409 when the server has no signing key, the chain is empty, or the chain is
        broken (nothing is signed then). Keep the answer where the database's admins
        cannot write. Auditors and admins only."""
        written = await sign_now(db, settings)
        log.info(
            "audit checkpoint at seq %d (%s) asked for by %s",
            written.checkpoint.seq,
            "signed" if written.new else "already signed",
            principal_of(request).name,
        )
        return CheckpointOut.from_checkpoint(written.checkpoint, written.new)

    @post(
        "/reindex",
        operation_id="reindexAuditSubjects",
        summary="Rebuild the subject index",
        status_code=HTTP_200_OK,
        guards=[requires(Role.AUDITOR)],
    )
    async def reindex(
        self, request: Request[Any, Any, Any], db: NamedDependency[Database]
    ) -> ReindexOut:
        """Drop the subject index (which subjects each event concerns) and rebuild it
        from the chain: it is derived data outside the hashes, so rebuild it after a
        restore or if it may have been edited. What `tollgate audit reindex` does with
        TOLLGATE_URL set. Auditors and admins only."""
        indexed = await subjects.rebuild(db)
        log.info(
            "audit subject index rebuilt (%d events) by %s", indexed, principal_of(request).name
        )
        return ReindexOut(indexed=indexed)


class SubjectController(Controller):
    path = "/v1/subjects"
    tags = ["audit"]
    guards = [requires(*READERS)]

    @get(
        "/{kind:str}/{rest:path}",
        operation_id="subjectHistory",
        summary="One subject's history",
    )
    async def history(
        self,
        kind: Annotated[str, Parameter(pattern=r"^(account|api_key|ip|cidr|org)$")],
        rest: FromPath[str],
        db: NamedDependency[Database],
        session: NamedDependency[AsyncSession],
        provider: Annotated[str | None, QueryParameter(max_length=63)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=5000)] = 500,
    ) -> SubjectHistoryOut:
        """`GET /v1/subjects/{kind}/{value}/history`: verdicts about the subject (or whose
        actions target it), their decisions, the actions with their state now, and the
        audit events, each oldest first. A CIDR's slash stays as it is:
        `/v1/subjects/cidr/203.0.113.0/24/history`."""
        try:
            subject_kind = SubjectKind(kind)
        except ValueError:
            raise InvalidInput(
                f"kind {kind!r} is not a subject kind: use one of "
                f"{', '.join(k.value for k in SubjectKind)}",
                details=[{"field": "kind", "message": "not a subject kind"}],
            ) from None
        path = rest.lstrip("/")
        if not path.endswith("/history") or path == "/history":
            raise NotFound(f"no resource here: use /v1/subjects/{kind}/{{value}}/history")
        value = normalise(subject_kind, path.removesuffix("/history"), field="value")
        await subjects.catch_up(db)  # as for a subject filter of the events
        story = await service.subject_history(session, subject_kind, value, provider, limit)
        return SubjectHistoryOut(
            subject=SubjectOut(kind=subject_kind, value=value),
            provider=provider,
            verdicts=[HistoryVerdict.from_row(v) for v in story.verdicts],
            decisions=[HistoryDecision.from_row(d) for d in story.decisions],
            actions=[
                HistoryAction(
                    **ActionOut.from_row(a.model_dump()).model_dump(),
                    targets_subject=a.id in story.direct,
                )
                for a in story.actions
            ],
            events=[AuditEventOut.from_row(e) for e in story.events],
            truncated=story.truncated,
        )


ROUTES = [AuditController, SubjectController]
