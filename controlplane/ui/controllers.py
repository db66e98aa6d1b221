"""`/console`: the auditor's web console, rendered on the server (Jinja2, no script).

Pages: the enforcement timeline (filterable), a subject's story, an action from
verdict to decision to gateway with its trace, policy revisions and what each
changed, the appeal queue and each appeal, connector status, and the audit chain's
verification. Every page needs a
console session of a reader; a request without one is sent to sign in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import CacheControlHeader, Cookie
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ControllerRouterHandler
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane import __version__
from controlplane.audit import subjects
from controlplane.auth.guards import principal_of
from controlplane.auth.service import TokenService
from controlplane.enforce.service import Enforcer
from controlplane.errors import TollgateError
from controlplane.intel.service import IntelService
from controlplane.remedy.reviews_service import ReviewService
from controlplane.remedy.service import Remedy
from controlplane.settings import Settings
from controlplane.store.db import Database
from controlplane.ui import remedy as appeal_pages
from controlplane.ui import service, sessions
from controlplane.ui.display import short
from controlplane.ui.sessions import COOKIE, SIGN_IN, SignInRequired

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

HEADERS = {
    # No script at all, styles from here only (the waterfall's bars are placed by inline
    # style attributes), nothing framed, forms post only here.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Pages show the enforcement record: keep them out of shared caches and history.
    "Cache-Control": "no-store",
}


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """The app's template engine: autoescaping, and a mistake in a template (an unknown
    name) is an error rather than an empty string."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals["version"] = __version__
    # Every revision shown on a page goes through one short form (`display.short`).
    environment.filters["short"] = short
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


def _page(
    request: Request[Any, Any, Any], name: str, status_code: int = 200, **context: Any
) -> Template:
    principal = principal_of(request)
    csrf, cookies = sessions.page_csrf(request)
    return Template(
        template_name=name,
        context={"principal": principal, "path": request.url.path, "csrf": csrf, **context},
        status_code=status_code,
        headers=HEADERS,
        cookies=cookies,
    )


def _secure(request: Request[Any, Any, Any]) -> bool:
    return request.url.scheme == "https"


def _sign_in_page(
    request: Request[Any, Any, Any], target: str, error: str | None, status_code: int = 200
) -> Template:
    csrf, cookies = sessions.page_csrf(request)
    return Template(
        template_name="sign_in.html",
        context={"next": target, "error": error, "csrf": csrf},
        status_code=status_code,
        headers=HEADERS,
        cookies=cookies,
    )


def _to_sign_in(_: Request[Any, Any, Any], exc: SignInRequired) -> Response[Any]:
    return Redirect(f"{SIGN_IN}?{urlencode({'next': exc.next_path})}", status_code=303)


def _error_page(request: Request[Any, Any, Any], exc: TollgateError) -> Response[Any]:
    return _page(request, "error.html", exc.status_code, title="Not shown", message=exc.message)


class SignInController(Controller):
    """Sign-in and sign-out: the only console routes open without a session."""

    path = "/console"
    include_in_schema = False

    @get("/sign-in", name="console-sign-in")
    async def sign_in_form(
        self,
        request: Request[Any, Any, Any],
        next_path: Annotated[str, QueryParameter(name="next")] = "",
    ) -> Response[Any]:
        """The sign-in form, or straight on when a session is already open."""
        if await sessions.current(request) is not None:
            return Redirect(sessions.safe_next(next_path), status_code=303)
        return _sign_in_page(request, sessions.safe_next(next_path), None)

    @post("/sign-in", status_code=303)
    async def sign_in(
        self,
        request: Request[Any, Any, Any],
        settings: NamedDependency[Settings],
        tokens: NamedDependency[TokenService],
        read_session: NamedDependency[AsyncSession],
    ) -> Response[Any]:
        """Check the token once and open a session: a signed cookie naming the token's
        id (never the token), HttpOnly, SameSite=Strict, Secure over https."""
        form = await request.form()
        target = sessions.safe_next(str(form.get("next", "")))
        forged = sessions.form_problem(request, settings, str(form.get("csrf", "")))
        if forged:
            return _sign_in_page(request, target, forged, status_code=403)
        token = str(form.get("token", "")).strip()
        principal = await tokens.authenticate(read_session, token) if token else None
        error = None
        if principal is None:
            error = "That token is unknown, revoked or expired."
        elif principal.role not in sessions.ALLOWED:
            error = (
                f"A {principal.role.value} token cannot open the console: it shows the whole "
                "enforcement record, so it needs an engineer, reviewer, auditor or admin token."
            )
        if error is not None or principal is None:
            return _sign_in_page(request, target, error, 401 if principal is None else 403)
        value, lifetime = sessions.issue(settings, principal)
        return Redirect(
            target,
            status_code=303,
            cookies=[
                Cookie(
                    key=COOKIE,
                    value=value,
                    max_age=lifetime,
                    path="/console",
                    httponly=True,
                    samesite="strict",
                    secure=_secure(request),
                )
            ],
        )

    @post("/sign-out", status_code=303)
    async def sign_out(
        self, request: Request[Any, Any, Any], settings: NamedDependency[Settings]
    ) -> Response[Any]:
        """Forget the session cookie here (revoke the token to end it everywhere)."""
        form = await request.form()
        forged = sessions.form_problem(request, settings, str(form.get("csrf", "")))
        if forged:
            return Response(forged, status_code=403, media_type="text/plain", headers=HEADERS)
        response = Redirect(SIGN_IN, status_code=303)
        response.delete_cookie(COOKIE, path="/console")
        return response


class ConsoleController(Controller):
    path = "/console"
    include_in_schema = False
    guards = [sessions.signed_in]
    exception_handlers = {SignInRequired: _to_sign_in, TollgateError: _error_page}

    @get("/", name="console-timeline")
    async def timeline(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[Database],
        session: NamedDependency[AsyncSession],
        subject_kind: FromQuery[str] = "",
        subject: FromQuery[str] = "",
        provider: FromQuery[str] = "",
        action_type: FromQuery[str] = "",
        rule: FromQuery[str] = "",
        revision: FromQuery[str] = "",
        actor: FromQuery[str] = "",
        event: FromQuery[str] = "",
        since: FromQuery[str] = "",
        until: FromQuery[str] = "",
        cursor: FromQuery[str] = "",
    ) -> Response[Any]:
        """The enforcement timeline: audit events newest first, with their actions."""
        filters = service.Filters(
            subject_kind, subject, provider, action_type, rule, revision, actor, event, since, until
        )
        after = int(cursor) if cursor.isdigit() else None
        if subject.strip():
            # The subject index follows the chain: brought up to date before this
            # request's session reads anything, so it sees every event committed.
            await subjects.catch_up(db)
        page = await service.timeline(session, filters, after)
        if page.redirect:
            return Redirect(page.redirect, status_code=303)
        return _page(
            request,
            "timeline.html",
            page=page,
            kinds=service.KINDS,
            action_types=service.ACTION_TYPES,
        )

    @get("/subject", name="console-subject")
    async def subject(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[Database],
        session: NamedDependency[AsyncSession],
        kind: FromQuery[str] = "",
        value: FromQuery[str] = "",
    ) -> Template:
        """One subject's story: exemptions, verdicts, decisions, actions and events."""
        await subjects.catch_up(db)  # as for the timeline's subject filter
        page = await service.subject_page(session, kind, value)
        return _page(request, "subject.html", page=page)

    @get("/actions/{action_id:str}", name="console-action")
    async def action(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        enforcer: NamedDependency[Enforcer],
        action_id: FromPath[str],
        everything: Annotated[str, QueryParameter(name="all")] = "",
    ) -> Template:
        """One action: verdict, decision with the rules that fired, applies, and trace."""
        page = await service.action_page(session, enforcer, action_id, show_all=everything == "1")
        return _page(request, "action.html", page=page)

    @get("/policies", name="console-policies")
    async def policies(
        self, request: Request[Any, Any, Any], session: NamedDependency[AsyncSession]
    ) -> Template:
        """Policy revisions, what each changed, and every activation and rollback."""
        return _page(request, "policies.html", page=await service.policies_page(session))

    @get("/policies/{revision:str}", name="console-revision")
    async def revision(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        revision: FromPath[str],
    ) -> Template:
        """One revision, diffed against the revision recorded before it."""
        view = await service.revision_page(session, revision)
        return _page(request, "revision.html", revision=view)

    @get("/appeals", name="console-appeals")
    async def appeals(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        remedy: NamedDependency[Remedy],
        appeal_state: Annotated[str, QueryParameter(name="state")] = "",
    ) -> Template:
        """The appeal queue, with the remediation figures of the last 30 days."""
        page = await appeal_pages.queue_page(session, remedy, appeal_state)
        return _page(
            request,
            "appeals.html",
            page=page,
            rate=appeal_pages.rate,
            duration=appeal_pages.duration,
        )

    @get("/appeals/{appeal_id:str}", name="console-appeal")
    async def appeal(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        remedy: NamedDependency[Remedy],
        appeal_id: FromPath[str],
    ) -> Template:
        """One appeal: the customer's case, the decision and what was told, every action
        it covers and its state now."""
        page = await appeal_pages.appeal_page(session, remedy, appeal_id)
        return _page(request, "appeal.html", page=page)

    @get("/reviews", name="console-reviews")
    async def reviews(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        reviews: NamedDependency[ReviewService],
        review_state: Annotated[str, QueryParameter(name="state")] = "open",
    ) -> Template:
        """Hard actions withheld from verified customers, waiting for a reviewer."""
        page = await service.reviews_page(session, reviews, review_state)
        return _page(request, "reviews.html", page=page)

    @get("/connectors", name="console-connectors")
    async def connectors(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        enforcer: NamedDependency[Enforcer],
    ) -> Template:
        """Each connector's health and last reconcile."""
        found = await service.connectors_page(session, enforcer)
        return _page(request, "connectors.html", connectors=found)

    @get("/peers", name="console-peers")
    async def peers(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        intel: NamedDependency[IntelService],
    ) -> Template:
        """Intel peers: the health of their last pull and what each contributed."""
        return _page(request, "peers.html", peers=await service.peers_page(session, intel))

    @get("/audit", name="console-audit")
    async def audit(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Template:
        """The audit chain recomputed now, and its signed checkpoints."""
        report = await service.verify_page(session, settings)
        return _page(request, "audit.html", report=report)


ROUTES: list[ControllerRouterHandler] = [
    SignInController,
    ConsoleController,
    create_static_files_router(
        path="/console/static",
        directories=[STATIC],
        name="console-static",
        include_in_schema=False,
        cache_control=CacheControlHeader(max_age=3600),
    ),
]
"""The console's routes, for the app's route list. The console draws on every area at
once: its handlers ask for the request's session and the services each page needs,
as the areas provide them."""
