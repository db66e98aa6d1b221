"""`/taxii2/`: the TAXII 2.1 server peers pull from (and post to, where they are writers)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.api.dependencies import provide
from controlplane.api.schemas import ErrorBody
from controlplane.auth.guards import principal_of, requires
from controlplane.auth.roles import TAXII_READERS
from controlplane.intel.config import API_ROOT, Collection
from controlplane.intel.taxii.schemas import (
    MAX_CONTENT_LENGTH,
    MEDIA_TYPE,
    STIX_MEDIA_TYPE,
    AddEnvelope,
    ApiRoot,
    CollectionOut,
    Collections,
    Discovery,
    Envelope,
    Manifest,
    ManifestRecord,
    Status,
    Versions,
)
from controlplane.intel.taxii.service import (
    NEXT_PATTERN,
    SPEC_VERSION_PATTERN,
    TaxiiService,
    envelope,
    filters,
    status_body,
    taxii_time,
)

_ERRORS = {
    401: ResponseSpec(ErrorBody, description="No bearer token, or an unknown one."),
    403: ResponseSpec(ErrorBody, description="The token may not read this collection."),
}
_NOT_FOUND = {404: ResponseSpec(ErrorBody, description="No such collection or object.")}
_BAD_FILTER = {422: ResponseSpec(ErrorBody, description="A filter or `next` is malformed (named).")}
Limit = Annotated[
    int | None, QueryParameter(ge=1, le=100_000, description="Most objects per page.")
]
AddedAfter = Annotated[
    str | None,
    QueryParameter(
        description="Only objects this server added strictly after this time (RFC 3339).",
        schema_extra={"format": "date-time"},
    ),
]
Next = Annotated[
    str | None,
    QueryParameter(name="next", pattern=NEXT_PATTERN, description="The previous page's `next`."),
]
MatchId = Annotated[
    str | None, QueryParameter(name="match[id]", description="STIX ids, comma-separated.")
]
MatchType = Annotated[
    str | None, QueryParameter(name="match[type]", description="STIX types, comma-separated.")
]
MatchVersion = Annotated[
    str | None,
    QueryParameter(name="match[version]", description="`last` (default), `first`, `all` or times."),
]
MatchSpec = Annotated[
    str | None,
    QueryParameter(
        name="match[spec_version]",
        pattern=SPEC_VERSION_PATTERN,
        description="Spec versions, comma-separated; one must be `2.1` (the only one held).",
    ),
]


def _taxii(body: Any, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(body, media_type=MEDIA_TYPE, headers=headers or {})


def _collection_out(c: Collection, can_write: bool) -> CollectionOut:
    description = (
        f"An inbox: signed STIX 2.1 objects posted by {', '.join(c.writers)}"
        if c.writers
        else f"Signed STIX 2.1 indicators and retractions marked TLP {', '.join(c.tlp)}"
    )
    return CollectionOut(
        id=c.id,
        title=c.title,
        description=description,
        can_read=True,
        can_write=can_write,
        media_types=[STIX_MEDIA_TYPE],
    )


class TaxiiController(Controller):
    path = "/taxii2"
    tags = ["taxii"]
    guards = [requires(*TAXII_READERS)]

    @get(
        "/",
        operation_id="taxiiDiscovery",
        summary="TAXII discovery",
        media_type=MEDIA_TYPE,
        responses=_ERRORS,
    )
    async def discovery(self, request: Request[Any, Any, Any]) -> Response[Discovery]:
        """The TAXII server's API roots."""
        root = str(request.base_url).rstrip("/") + f"/taxii2/{API_ROOT}/"
        return _taxii(
            Discovery(
                title="Tollgate",
                description="Shared attribution intel and detection signatures",
                default=root,
                api_roots=[root],
            )
        )

    @get(
        f"/{API_ROOT}/",
        operation_id="taxiiApiRoot",
        summary="TAXII API root",
        media_type=MEDIA_TYPE,
        responses=_ERRORS,
    )
    async def api_root(self) -> Response[ApiRoot]:
        """What the API root serves."""
        return _taxii(
            ApiRoot(
                title="Tollgate intel",
                description="Collections of signed STIX 2.1 objects",
                versions=[MEDIA_TYPE],
                max_content_length=MAX_CONTENT_LENGTH,
            )
        )

    @get(
        f"/{API_ROOT}/collections/",
        operation_id="taxiiCollections",
        summary="TAXII collections",
        media_type=MEDIA_TYPE,
        responses=_ERRORS,
    )
    async def collections(
        self, request: Request[Any, Any, Any], taxii: NamedDependency[TaxiiService]
    ) -> Response[Collections]:
        """The collections this token may read."""
        principal = principal_of(request)
        readable = taxii.readable(principal)
        return _taxii(
            Collections(
                collections=[_collection_out(c, taxii.writable(principal, c)) for c in readable]
            )
        )

    @get(
        f"/{API_ROOT}/collections/{{collection_id:str}}/",
        operation_id="taxiiCollection",
        summary="A TAXII collection",
        media_type=MEDIA_TYPE,
        responses={**_ERRORS, **_NOT_FOUND},
    )
    async def collection(
        self,
        request: Request[Any, Any, Any],
        taxii: NamedDependency[TaxiiService],
        collection_id: FromPath[str],
    ) -> Response[CollectionOut]:
        """One collection."""
        principal = principal_of(request)
        found = taxii.collection(principal, collection_id)
        return _taxii(_collection_out(found, taxii.writable(principal, found)))

    @get(
        f"/{API_ROOT}/collections/{{collection_id:str}}/objects/",
        operation_id="taxiiObjects",
        summary="A collection's objects",
        media_type=MEDIA_TYPE,
        responses={**_ERRORS, **_NOT_FOUND, **_BAD_FILTER},
    )
    async def objects(
        self,
        request: Request[Any, Any, Any],
        taxii: NamedDependency[TaxiiService],
        session: NamedDependency[AsyncSession],
        collection_id: FromPath[str],
        added_after: AddedAfter = None,
        limit: Limit = None,
        next_: Next = None,
        match_id: MatchId = None,
        match_type: MatchType = None,
        match_version: MatchVersion = None,
        match_spec_version: MatchSpec = None,
    ) -> Response[Envelope]:
        """Objects in the order this server added them; page with `next` or with
        `added_after` set to the `X-TAXII-Date-Added-Last` header."""
        f = filters(
            added_after, next_, match_id, match_type, match_version, match_spec_version, limit
        )
        page = await taxii.objects(session, principal_of(request), collection_id, f)
        return _taxii(envelope(page), page.headers())

    @post(
        f"/{API_ROOT}/collections/{{collection_id:str}}/objects/",
        operation_id="taxiiAddObjects",
        summary="Add objects to an inbox collection",
        media_type=MEDIA_TYPE,
        status_code=202,
        request_max_body_size=MAX_CONTENT_LENGTH,
        responses={
            **_ERRORS,
            **_NOT_FOUND,
            403: ResponseSpec(
                ErrorBody, description="The token may not add objects to this collection."
            ),
            413: ResponseSpec(ErrorBody, description="The body is over `max_content_length`."),
            422: ResponseSpec(
                ErrorBody, description="The body is not a TAXII envelope (the field named)."
            ),
        },
    )
    async def add_objects(
        self,
        request: Request[Any, Any, Any],
        taxii: NamedDependency[TaxiiService],
        session: NamedDependency[AsyncSession],
        collection_id: FromPath[str],
        data: JSONBody[AddEnvelope],
    ) -> Response[Status]:
        """Objects a peer listed under the collection's `writers` adds: every one is
        verified against the peers' keys and taken as intel pulled from that peer
        (refused ones are failures, with the reason). Answers the status, complete."""
        row = await taxii.add_objects(session, principal_of(request), collection_id, data.objects)
        answer = _taxii(status_body(row))
        answer.status_code = 202
        return answer

    @get(
        f"/{API_ROOT}/status/{{status_id:str}}/",
        operation_id="taxiiStatus",
        summary="The status of objects added",
        media_type=MEDIA_TYPE,
        responses={
            **_ERRORS,
            404: ResponseSpec(ErrorBody, description="No such status for this token."),
        },
    )
    async def status(
        self,
        request: Request[Any, Any, Any],
        taxii: NamedDependency[TaxiiService],
        session: NamedDependency[AsyncSession],
        status_id: FromPath[str],
    ) -> Response[Status]:
        """What became of each object of one add request (TAXII 2.1 status resource)."""
        row = await taxii.status(session, principal_of(request), status_id)
        return _taxii(status_body(row))

    @get(
        f"/{API_ROOT}/collections/{{collection_id:str}}/manifest/",
        operation_id="taxiiManifest",
        summary="A collection's manifest",
        media_type=MEDIA_TYPE,
        responses={**_ERRORS, **_NOT_FOUND, **_BAD_FILTER},
    )
    async def manifest(
        self,
        request: Request[Any, Any, Any],
        taxii: NamedDependency[TaxiiService],
        session: NamedDependency[AsyncSession],
        collection_id: FromPath[str],
        added_after: AddedAfter = None,
        limit: Limit = None,
        next_: Next = None,
        match_id: MatchId = None,
        match_type: MatchType = None,
        match_version: MatchVersion = None,
        match_spec_version: MatchSpec = None,
    ) -> Response[Manifest]:
        """Ids, versions and when each was added, without the objects."""
        f = filters(
            added_after, next_, match_id, match_type, match_version, match_spec_version, limit
        )
        page = await taxii.objects(session, principal_of(request), collection_id, f)
        body = Manifest(
            more=page.more,
            next=page.next,
            objects=[
                ManifestRecord(
                    id=r.stix_id,
                    date_added=taxii_time(r.date_added),
                    version=r.version,
                    media_type=STIX_MEDIA_TYPE,
                )
                for r in page.rows
            ],
        )
        return _taxii(body.model_dump(exclude_none=True), page.headers())

    @get(
        f"/{API_ROOT}/collections/{{collection_id:str}}/objects/{{object_id:str}}/",
        operation_id="taxiiObject",
        summary="One object's versions",
        media_type=MEDIA_TYPE,
        responses={**_ERRORS, **_NOT_FOUND, **_BAD_FILTER},
    )
    async def object(
        self,
        request: Request[Any, Any, Any],
        taxii: NamedDependency[TaxiiService],
        session: NamedDependency[AsyncSession],
        collection_id: FromPath[str],
        object_id: FromPath[str],
        match_version: MatchVersion = None,
    ) -> Response[Envelope]:
        """The object (its newest version unless `match[version]` says otherwise)."""
        rows = await taxii.versions(session, principal_of(request), collection_id, object_id)
        version = (match_version or "last").strip()
        if version == "last":
            rows = rows[-1:]
        elif version == "first":
            rows = rows[:1]
        elif version != "all":
            f = filters(None, None, None, None, version, None, None)
            rows = [r for r in rows if r.version in f.version.split(",")]
        headers = {}
        if rows:
            headers = {
                "X-TAXII-Date-Added-First": taxii_time(rows[0].date_added),
                "X-TAXII-Date-Added-Last": taxii_time(rows[-1].date_added),
            }
        return _taxii({"more": False, "objects": [r.body for r in rows]}, headers)

    @get(
        f"/{API_ROOT}/collections/{{collection_id:str}}/objects/{{object_id:str}}/versions/",
        operation_id="taxiiObjectVersions",
        summary="One object's version list",
        media_type=MEDIA_TYPE,
        responses={**_ERRORS, **_NOT_FOUND},
    )
    async def versions(
        self,
        request: Request[Any, Any, Any],
        taxii: NamedDependency[TaxiiService],
        session: NamedDependency[AsyncSession],
        collection_id: FromPath[str],
        object_id: FromPath[str],
    ) -> Response[Versions]:
        """Every version of the object this collection holds, oldest first."""
        rows = await taxii.versions(session, principal_of(request), collection_id, object_id)
        return _taxii(
            Versions(more=False, versions=[r.version for r in rows]),
            {
                "X-TAXII-Date-Added-First": taxii_time(rows[0].date_added),
                "X-TAXII-Date-Added-Last": taxii_time(rows[-1].date_added),
            },
        )


DEPENDENCIES = {"taxii": provide(lambda runtime: runtime.taxii)}
ROUTES = [TaxiiController]
