"""`/v1/appeals`, `/v1/exemptions`, `/v1/actions/{id}/lift`, `/v1/reports/remediation`:
people undoing mistakes, and the figures of how often they had to."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.api.dependencies import provide
from controlplane.api.schemas import ErrorBody
from controlplane.auth.guards import principal_of, requires
from controlplane.auth.roles import READERS, Role
from controlplane.domain.action import parse_duration
from controlplane.errors import InvalidInput
from controlplane.plan.schemas import ActionOut
from controlplane.remedy import report
from controlplane.remedy.schemas import (
    DURATION,
    AppealIn,
    AppealOut,
    AppealPage,
    AppealState,
    CarveOut,
    CoveredAction,
    DenyIn,
    ExemptionIn,
    ExemptionOut,
    LiftIn,
    RemediationReport,
    SubjectRef,
    UpholdIn,
    check_floor,
    duration_text,
)
from controlplane.remedy.service import (
    AppealDraft,
    AppealFilter,
    AppealView,
    ExemptionDraft,
    ExemptionOutcome,
    Remedy,
    Subject,
)
from controlplane.settings import Providers
from controlplane.store.models import ExemptionRow
from controlplane.store.types import utcnow

_WHY = {
    401: "No bearer token, or one that is unknown, revoked or expired.",
    403: "The token's role may not do this.",
    404: "No such record.",
    409: "The record is not in a state that allows this.",
    422: "Invalid input; each bad field is named; nothing was changed.",
    503: "The database cannot be reached now; nothing was changed: retry later.",
}


def _errors(*codes: int, **overrides: str) -> dict[int, ResponseSpec]:
    """The error answers of a handler, each with the shape every error has."""
    return {
        code: ResponseSpec(ErrorBody, description=overrides.get(f"e{code}", _WHY[code]))
        for code in (*codes, 503)
    }


def _subject(row: Any, prefix: str = "subject") -> SubjectRef:
    return SubjectRef(kind=getattr(row, f"{prefix}_kind"), value=getattr(row, f"{prefix}_value"))


def exemption_out(row: ExemptionRow, outcome: ExemptionOutcome | None = None) -> ExemptionOut:
    return ExemptionOut(
        id=row.id,
        provider=row.provider,
        subject=_subject(row),
        owner=row.owner,
        reason=row.reason,
        expires_at=row.expires_at,
        created_at=row.created_at,
        ended_at=row.ended_at,
        ended_by=row.ended_by,
        appeal_id=row.appeal_id,
        lifted=outcome.lifted if outcome else [],
        covering=outcome.covering if outcome else [],
        carve_out=[
            CarveOut(connector=n, carved_out=ok, detail=d)
            for n, ok, d in (outcome.carve_out if outcome else [])
        ],
    )


def appeal_out(view: AppealView) -> AppealOut:
    row = view.row
    return AppealOut(
        id=row.id,
        provider=row.provider,
        subject=_subject(row),
        reference=row.reference,
        statement=row.statement,
        contact=row.contact,
        state=row.state,
        filed_by=row.filed_by,
        filed_at=row.filed_at,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        decision_reason=row.decision_reason,
        exemption_id=row.exemption_id,
        exempt_until=view.exempt_until,
        trace_id=row.trace_id,
        outcome=view.outcome,
        actions=[
            CoveredAction(action=ActionOut.from_row(a.model_dump()), lifted_at=at)
            for a, at in view.actions
        ],
    )


SUBJECT_FILTER = r"^(account|api_key|ip|cidr|org):[\s\S]+$"
"""A `subject` filter, `kind:value` (the value as stored; any text matches or not)."""


def _older_than(age: str) -> datetime:
    try:
        return utcnow() - parse_duration(age)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)  # older than anything: nothing is that old
    except ValueError as exc:
        raise InvalidInput(f"age: {exc}", details=[{"field": "age", "message": str(exc)}]) from None


def _moment(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{name} is not a date-time: write it like 2026-11-26T12:00:00Z",
            details=[{"field": name, "message": "not an RFC 3339 date-time"}],
        ) from None


class ExemptionController(Controller):
    path = "/v1/exemptions"
    tags = ["exemptions"]
    guards = [requires(*READERS)]

    @post(
        "/",
        operation_id="addExemption",
        summary="Add an exemption",
        guards=[requires(Role.REVIEWER)],
        status_code=HTTP_201_CREATED,
        responses=_errors(401, 403, 422),
    )
    async def add(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ExemptionIn],
        remedy: NamedDependency[Remedy],
        session: NamedDependency[AsyncSession],
        providers: NamedDependency[Providers],
    ) -> ExemptionOut:
        """Exempt a subject in one provider, with an owner and a reason. What is enforced
        on it now is lifted at once (`lifted`); an IP or CIDR inside a wider blocked range
        is carved out of it at each gateway that can (`carve_out`), the range staying
        blocked for everyone else (`covering`)."""
        check_floor(data.subject, providers.of(data.provider).min_prefix)
        draft = ExemptionDraft(
            provider=data.provider,
            subject=Subject(data.subject.kind.value, data.subject.value),
            owner=data.owner,
            reason=data.reason,
            expires_at=data.expires_at,
        )
        outcome = await remedy.add_exemption(session, draft, principal_of(request).name)
        return exemption_out(outcome.row, outcome)

    @get(
        "/",
        operation_id="listExemptions",
        summary="List exemptions",
        responses=_errors(401, 403, 422),
    )
    async def list_all(
        self,
        remedy: NamedDependency[Remedy],
        session: NamedDependency[AsyncSession],
        provider: Annotated[str | None, QueryParameter(max_length=63)] = None,
        live: Annotated[
            bool, QueryParameter(description="true: only those holding now (not ended or expired).")
        ] = False,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> list[ExemptionOut]:
        """The newest exemptions, optionally of one provider, optionally only live ones."""
        return [exemption_out(r) for r in await remedy.exemptions(session, provider, live, limit)]

    @get(
        "/{exemption_id:str}",
        operation_id="getExemption",
        summary="Get an exemption",
        responses=_errors(401, 403, 404, e404="No such exemption, or it has ended."),
    )
    async def get_one(
        self,
        exemption_id: FromPath[str],
        remedy: NamedDependency[Remedy],
        session: NamedDependency[AsyncSession],
    ) -> ExemptionOut:
        """One exemption that holds now. An ended one (removed or expired) is no longer
        here: its record stays in `GET /v1/exemptions` and in the audit trail."""
        return exemption_out(await remedy.exemption(session, exemption_id))

    @delete(
        "/{exemption_id:str}",
        operation_id="removeExemption",
        summary="Remove an exemption",
        guards=[requires(Role.REVIEWER)],
        status_code=HTTP_200_OK,
        responses=_errors(401, 403, 404, 409, 422, e409="The exemption has ended already."),
    )
    async def remove(
        self,
        request: Request[Any, Any, Any],
        exemption_id: FromPath[str],
        remedy: NamedDependency[Remedy],
        session: NamedDependency[AsyncSession],
        reason: Annotated[
            str, QueryParameter(min_length=3, max_length=2000, description="Why, for the record.")
        ],
    ) -> ExemptionOut:
        """End an exemption now: verdicts decided from now on are enforced again, and an
        IP or CIDR carve-out leaves the gateways. Nothing lifted is put back. The answer
        is the ended record, which stays listed by `GET /v1/exemptions` (and in the
        audit trail); `GET /v1/exemptions/{id}` answers 404 from now on."""
        row = await remedy.remove_exemption(
            session, exemption_id, principal_of(request).name, reason
        )
        return exemption_out(row)


class LiftController(Controller):
    path = "/v1/actions"
    tags = ["actions"]
    guards = [requires(Role.REVIEWER)]

    @post(
        "/{action_id:str}/lift",
        operation_id="liftAction",
        summary="Lift an action",
        status_code=HTTP_200_OK,
        responses=_errors(401, 403, 404, 409, 422, e409="The action is not active."),
    )
    async def lift(
        self,
        request: Request[Any, Any, Any],
        action_id: FromPath[str],
        data: JSONBody[LiftIn],
        remedy: NamedDependency[Remedy],
        session: NamedDependency[AsyncSession],
    ) -> ActionOut:
        """Lift an active action by hand: it leaves the desired state, connectors remove
        it from the gateways at once, the actor and reason are recorded, and the same
        rule is held back on the same subject for the provider's cool-down."""
        row = await remedy.lift(session, action_id, principal_of(request).name, data.reason)
        return ActionOut.from_row(row.model_dump())


class AppealController(Controller):
    path = "/v1/appeals"
    tags = ["appeals"]
    guards = [requires(Role.SUPPORT, *READERS)]

    @post(
        "/",
        operation_id="fileAppeal",
        summary="File an appeal",
        guards=[requires(Role.SUPPORT)],
        status_code=HTTP_201_CREATED,
        responses=_errors(401, 403, 422),
    )
    async def file(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[AppealIn],
        remedy: NamedDependency[Remedy],
        session: NamedDependency[AsyncSession],
    ) -> AppealOut:
        """File a customer's appeal (state `open`). It covers the actions named in
        `action_ids`, those the `reference` quoted from a refusal names, or, with
        neither, every action active on the subject now."""
        draft = AppealDraft(
            provider=data.provider,
            subject=Subject(data.subject.kind.value, data.subject.value),
            statement=data.statement,
            contact=data.contact,
            action_ids=data.action_ids,
            reference=data.reference,
        )
        return appeal_out(await remedy.file_appeal(session, draft, principal_of(request).name))

    @get("/", operation_id="listAppeals", summary="List appeals", responses=_errors(401, 403, 422))
    async def list_appeals(
        self,
        remedy: NamedDependency[Remedy],
        session: NamedDependency[AsyncSession],
        appeal_state: Annotated[AppealState | None, QueryParameter(name="state")] = None,
        provider: Annotated[str | None, QueryParameter(max_length=63)] = None,
        subject: Annotated[
            str | None,
            QueryParameter(
                max_length=211,
                pattern=SUBJECT_FILTER,
                description="`kind:value`, e.g. `account:acct_9`, `ip:192.0.2.7`.",
            ),
        ] = None,
        age: Annotated[
            str | None,
            QueryParameter(
                max_length=20,
                pattern=DURATION,
                description="Only appeals older than this (`2d`, `12h`).",
            ),
        ] = None,
        cursor: Annotated[
            str | None,
            QueryParameter(max_length=40, description="`next_cursor` of the previous page."),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> AppealPage:
        """Appeals newest first, filtered by state, provider, subject and age."""
        kind = value = None
        if subject is not None:
            if not re.fullmatch(SUBJECT_FILTER, subject):
                raise InvalidInput(
                    "subject must be kind:value with kind account, api_key, ip, cidr or org",
                    details=[{"field": "subject", "message": "not kind:value"}],
                )
            kind, _, value = subject.partition(":")
        before = None if age is None else _older_than(age)
        where = AppealFilter(
            state=appeal_state,
            provider=provider,
            subject_kind=kind,
            subject_value=value,
            filed_before=before,
        )
        views = await remedy.appeals(session, where, cursor, limit + 1)
        items = [appeal_out(v) for v in views[:limit]]
        return AppealPage(items=items, next_cursor=items[-1].id if len(views) > limit else None)

    @get(
        "/{appeal_id:str}",
        operation_id="getAppeal",
        summary="Get an appeal",
        responses=_errors(401, 403, 404),
    )
    async def get_appeal(
        self,
        appeal_id: FromPath[str],
        remedy: NamedDependency[Remedy],
        session: NamedDependency[AsyncSession],
    ) -> AppealOut:
        """One appeal with every action it covers and each one's state now."""
        return appeal_out(await remedy.appeal(session, appeal_id))

    @post(
        "/{appeal_id:str}/uphold",
        operation_id="upholdAppeal",
        summary="Uphold an appeal",
        guards=[requires(Role.REVIEWER)],
        status_code=HTTP_200_OK,
        responses=_errors(
            401,
            403,
            404,
            409,
            422,
            e403="The role may not decide appeals, or the caller filed this one.",
            e409="The appeal was decided already.",
        ),
    )
    async def uphold(
        self,
        request: Request[Any, Any, Any],
        appeal_id: FromPath[str],
        data: JSONBody[UpholdIn],
        remedy: NamedDependency[Remedy],
        session: NamedDependency[AsyncSession],
    ) -> AppealOut:
        """Uphold: lift every action the appeal covers (for an account or org, every
        action active on it) at every gateway, exempt the subject for `exempt_for`, and
        record the outcome for the customer; each step is an audit event in the
        appeal's trace."""
        period: timedelta | None = duration_text(data.exempt_for) if data.exempt_for else None
        view = await remedy.uphold(
            session, appeal_id, principal_of(request).name, data.reason, period
        )
        return appeal_out(view)

    @post(
        "/{appeal_id:str}/deny",
        operation_id="denyAppeal",
        summary="Deny an appeal",
        guards=[requires(Role.REVIEWER)],
        status_code=HTTP_200_OK,
        responses=_errors(
            401,
            403,
            404,
            409,
            422,
            e403="The role may not decide appeals, or the caller filed this one.",
            e409="The appeal was decided already.",
        ),
    )
    async def deny(
        self,
        request: Request[Any, Any, Any],
        appeal_id: FromPath[str],
        data: JSONBody[DenyIn],
        remedy: NamedDependency[Remedy],
        session: NamedDependency[AsyncSession],
    ) -> AppealOut:
        """Deny: the appeal is closed with the reason; nothing changes at any gateway."""
        view = await remedy.deny(session, appeal_id, principal_of(request).name, data.reason)
        return appeal_out(view)


class ReportController(Controller):
    path = "/v1/reports"
    tags = ["reports"]
    guards = [requires(*READERS)]

    @get(
        "/remediation",
        operation_id="remediationReport",
        summary="Remediation report",
        responses={
            200: ResponseSpec(
                RemediationReport,
                description="The figures: JSON, or a CSV or Markdown table as `format` asks.",
                generate_examples=False,
            ),
            **_errors(401, 403, 422),
        },
        media_type="application/json",
    )
    async def remediation(
        self,
        session: NamedDependency[AsyncSession],
        # Strings, not datetimes: litestar would also take a number as seconds since
        # 1970, which the documented `date-time` format does not allow.
        since: Annotated[
            str | None,
            QueryParameter(
                description="Start, with a zone (default: 30 days ago).",
                schema_extra={"format": "date-time"},
            ),
        ] = None,
        until: Annotated[
            str | None,
            QueryParameter(
                description="End, with a zone (default: now).",
                schema_extra={"format": "date-time"},
            ),
        ] = None,
        report_format: Annotated[
            report.Format, QueryParameter(name="format", description="json, csv or markdown.")
        ] = "json",
    ) -> Response[Any]:
        """Per rule and per detector: actions taken, appeals filed, upheld, denied, the
        overturn rate, and the median times from action to appeal, appeal to decision
        and decision to lift; with the totals a complaint-handling report asks for
        (complaints received, decisions, median decision time, decisions reversed)."""
        start, end = report.window(_moment("since", since), _moment("until", until))
        figures = await report.remediation(session, start, end)
        if report_format == "csv":
            return Response(report.to_csv(figures), media_type="text/csv")
        if report_format == "markdown":
            return Response(report.to_markdown(figures), media_type="text/markdown")
        return Response(figures.model_dump(mode="json"), media_type="application/json")


DEPENDENCIES = {
    "remedy": provide(lambda runtime: runtime.remedy),
    "providers": provide(lambda runtime: runtime.providers),
}
ROUTES = [ExemptionController, LiftController, AppealController, ReportController]
