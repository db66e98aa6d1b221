"""`/v1/intel`: indicators, retractions, peers."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.api.dependencies import provide
from controlplane.api.schemas import ErrorBody
from controlplane.auth.guards import principal_of, requires
from controlplane.auth.roles import READERS, Role
from controlplane.intel.jobs import Puller
from controlplane.intel.schemas import (
    IndicatorBatch,
    IndicatorOut,
    Kind,
    PeerOut,
    PullOut,
    RetractIn,
    Retraction,
)
from controlplane.intel.service import IntelService

_AUTH = {
    401: ResponseSpec(ErrorBody, description="No bearer token, or an unknown one."),
    403: ResponseSpec(ErrorBody, description="The token's role may not do this."),
}


class IndicatorController(Controller):
    path = "/v1/intel"
    tags = ["intel"]
    guards = [requires(*READERS)]

    @post(
        "/indicators",
        operation_id="addIndicators",
        summary="Add indicators",
        guards=[requires(Role.ENGINEER)],
        responses={
            **_AUTH,
            422: ResponseSpec(
                ErrorBody, description="A bad field (named with its index); nothing stored."
            ),
        },
    )
    async def add(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[IndicatorBatch],
        intel: NamedDependency[IntelService],
        session: NamedDependency[AsyncSession],
    ) -> list[IndicatorOut]:
        """Add indicators (identifiers are hashed before they are stored) and publish
        what the share policy allows; verdicts decided from now on see their matches."""
        rows, _ = await intel.add(
            session, principal_of(request).name, [i.model_dump() for i in data.indicators]
        )
        return [IndicatorOut(**r) for r in rows]

    @get(
        "/indicators",
        operation_id="listIndicators",
        summary="List indicators",
        responses={**_AUTH, 422: ResponseSpec(ErrorBody, description="A bad parameter.")},
    )
    async def list_all(
        self,
        intel: NamedDependency[IntelService],
        session: NamedDependency[AsyncSession],
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        kind: FromQuery[Kind | None] = None,
        source: Annotated[str | None, QueryParameter(max_length=100)] = None,
    ) -> list[IndicatorOut]:
        """The newest indicators, local and pulled."""
        rows = await intel.list(session, limit, kind, source)
        return [IndicatorOut(**r.model_dump()) for r in rows]

    @post(
        "/indicators/{indicator_id:str}/retract",
        operation_id="retractIndicator",
        summary="Mark an indicator a false positive",
        guards=[requires(Role.ENGINEER, Role.REVIEWER)],
        status_code=200,
        responses={
            **_AUTH,
            404: ResponseSpec(ErrorBody, description="No such indicator."),
            409: ResponseSpec(ErrorBody, description="Already retracted."),
            422: ResponseSpec(ErrorBody, description="No reason given."),
        },
    )
    async def retract(
        self,
        request: Request[Any, Any, Any],
        indicator_id: FromPath[str],
        data: JSONBody[RetractIn],
        intel: NamedDependency[IntelService],
        session: NamedDependency[AsyncSession],
    ) -> Retraction:
        """Revoke it, tell peers (signed revoked version and opinion) and lift the
        actions whose only basis it was."""
        result = await intel.mark_false_positive(
            session, indicator_id, principal_of(request).name, data.reason
        )
        return Retraction(**result)

    @get("/peers", operation_id="listPeers", summary="Peers", responses=_AUTH)
    async def peers(
        self, intel: NamedDependency[IntelService], session: NamedDependency[AsyncSession]
    ) -> list[PeerOut]:
        """Configured peers, the health of their last pull and what each contributed."""
        return [PeerOut(**p) for p in await intel.peers(session)]

    @post(
        "/peers/{name:str}/pull",
        operation_id="pullPeer",
        summary="Pull a peer now",
        guards=[requires(Role.ENGINEER)],
        status_code=200,
        responses={**_AUTH, 404: ResponseSpec(ErrorBody, description="No such peer.")},
    )
    async def pull(
        self,
        name: FromPath[str],
        intel: NamedDependency[IntelService],
        puller: NamedDependency[Puller],
    ) -> PullOut:
        """Pull one peer's collection now (the scheduled pull does this for all)."""
        report = await puller.pull(intel.peer(name))
        return PullOut(
            peer=report.peer,
            pages=report.pages,
            accepted=report.accepted,
            rejected=report.rejected,
            duplicates=report.duplicates,
            retractions=report.retractions,
            lifted=report.lifted,
            error=report.error,
        )


class BundleController(Controller):
    path = "/v1/intel/bundle"
    tags = ["intel"]
    guards = [requires(Role.ENGINEER, Role.ADMIN, Role.PEER)]

    @get(
        "/",
        operation_id="exportBundle",
        summary="The active revision as a signed OPA bundle",
        media_type="application/gzip",
        responses={
            **_AUTH,
            403: ResponseSpec(
                ErrorBody,
                description="A peer token not among intel.bundle.readers, or a package not "
                "shared with peers.",
            ),
            409: ResponseSpec(ErrorBody, description="This lab has no intel signing key."),
            422: ResponseSpec(ErrorBody, description="No package of the revision is named."),
        },
    )
    async def export(
        self,
        request: Request[Any, Any, Any],
        intel: NamedDependency[IntelService],
        package: Annotated[
            list[str] | None,
            QueryParameter(
                description="Rego packages to export (with what is under them); peers get "
                "intel.bundle.packages when none is named, engineers the whole revision."
            ),
        ] = None,
    ) -> Response[bytes]:
        """A gzipped OPA bundle: the packages' `.rego` files and `data.json`, a
        `.manifest` and a `.signatures.json` signed with this lab's intel key (EdDSA),
        ready for `tollgate intel bundle import` at a peer or for an OPA server."""
        principal = principal_of(request)
        peer = principal.name if principal.role is Role.PEER else None
        archive = await asyncio.to_thread(intel.signed_bundle, package or [], peer)
        return Response(
            archive,
            media_type="application/gzip",
            headers={"Content-Disposition": 'attachment; filename="bundle.tar.gz"'},
        )


DEPENDENCIES = {
    "intel": provide(lambda runtime: runtime.intel),
    "puller": provide(lambda runtime: runtime.puller),
}
ROUTES = [IndicatorController, BundleController]
