"""`/v1/decisions/stream` and `GET /v1/decisions`: CrowdSec's bouncer API (LAPI 1.x), so
any existing CrowdSec bouncer enforces Tollgate's blocks. Bouncers authenticate with a
`bouncer` token in `X-Api-Key`."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import Parameter, QueryParameter
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.api.dependencies import provide
from controlplane.api.schemas import ErrorBody
from controlplane.auth.guards import principal_of, requires_api_key
from controlplane.auth.roles import Role
from controlplane.bouncers.schemas import CrowdSecDecision, DecisionStreamOut
from controlplane.bouncers.service import DecisionStream, Filters, answer
from controlplane.errors import ServiceUnavailable
from controlplane.store.db import Database


def _filter(description: str) -> Any:
    """A comma-separated filter of CrowdSec's: names, never syntax."""
    return Parameter(
        default=None, max_length=1000, pattern=r"^[A-Za-z0-9 ,._:/-]*$", description=description
    )


_ERRORS = {
    401: ResponseSpec(ErrorBody, description="No token in `X-Api-Key`, or an unknown one."),
    403: ResponseSpec(ErrorBody, description="The token's role is not `bouncer` (or admin)."),
    422: ResponseSpec(ErrorBody, description="A parameter is invalid; it is named."),
    503: ResponseSpec(ErrorBody, description="The database cannot be reached; retry."),
}


class BouncerController(Controller):
    path = "/v1/decisions"
    tags = ["crowdsec"]
    guards = [requires_api_key(Role.BOUNCER)]

    @get(
        "/stream",
        operation_id="streamDecisions",
        summary="CrowdSec decision stream",
        media_type="application/json",
        responses={
            200: ResponseSpec(
                DecisionStreamOut,
                description="Decisions to add and remove.",
                generate_examples=False,
            ),
            **_ERRORS,
        },
    )
    async def stream(
        self,
        request: Request[Any, Any, Any],
        bouncers: NamedDependency[DecisionStream],
        db: NamedDependency[Database],
        startup: bool = Parameter(
            default=False,
            description="true: every decision now (a bouncer starting); false: what "
            "changed since this bouncer's last complete answer.",
        ),
        scopes: str | None = _filter("Comma-separated scopes; default `ip,range`."),
        origins: str | None = _filter("Comma-separated origins to keep."),
        scenarios_containing: str | None = _filter("Keep decisions whose scenario contains one."),
        scenarios_not_containing: str | None = _filter(
            "Drop decisions whose scenario contains one."
        ),
    ) -> Stream:
        """Tollgate's active blocks (IPs and CIDRs of the served providers) as CrowdSec
        decisions. This bouncer's place in the change log is kept here and moves only
        when an answer was sent whole, so each change reaches it once; startup answers
        are streamed page by page."""
        filters = Filters.parse(scopes, origins, scenarios_containing, scenarios_not_containing)
        body = answer(db, bouncers, principal_of(request).token_id, startup, filters)
        return Stream(body, media_type="application/json")

    @get(
        "/",
        operation_id="liveDecisions",
        summary="CrowdSec live-mode lookup",
        responses=_ERRORS,
    )
    async def live(
        self,
        bouncers: NamedDependency[DecisionStream],
        session: NamedDependency[AsyncSession],
        ip: str | None = Parameter(
            default=None, max_length=45, description="An address: decisions covering it."
        ),
        range_: Annotated[
            str | None,
            QueryParameter(
                name="range", max_length=49, description="A network: decisions covering it."
            ),
        ] = None,
        type_: Annotated[
            str | None,
            QueryParameter(name="type", max_length=20, description="Only `ban` exists here."),
        ] = None,
        scopes: str | None = _filter("As for the stream."),
        origins: str | None = _filter("As for the stream."),
        scenarios_containing: str | None = _filter("As for the stream."),
        scenarios_not_containing: str | None = _filter("As for the stream."),
    ) -> list[CrowdSecDecision]:
        """The decisions covering one address or network now (a bouncer in live mode
        asks per request): the target itself and every network that contains it."""
        filters = Filters.parse(scopes, origins, scenarios_containing, scenarios_not_containing)
        found = await bouncers.live(session, ip, range_, type_, filters)
        return [CrowdSecDecision(**d) for d in found]


def _running(stream: DecisionStream | None) -> DecisionStream:
    if stream is None:
        raise ServiceUnavailable("the decision stream is not running; is the server starting?")
    return stream


DEPENDENCIES = {"bouncers": provide(lambda runtime: _running(runtime.bouncers))}
ROUTES = [BouncerController]
