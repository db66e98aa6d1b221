"""TAXII rules: who may read which collection, filters, paging; in the request's
session."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.auth.roles import Role
from controlplane.auth.service import Principal
from controlplane.errors import Forbidden, InvalidInput, NotFound
from controlplane.intel import repository
from controlplane.intel.config import API_ROOT, Collection, IntelConfig
from controlplane.intel.pull import Intake
from controlplane.store.models import IntelObjectRow, IntelStatusRow
from controlplane.store.types import utcnow

NEXT_PATTERN = r"^[0-9]+$"
"""A `next` as this server gives it (a position in the collection)."""
SPEC_VERSION_PATTERN = r"^(|([^,]*,)*2\.1(,[^,]*)*)$"
"""`match[spec_version]` naming 2.1 among its values (or empty: any)."""
MAX_PAGE = 10_000
"""The most objects one page holds (a larger `limit` is lowered to it)."""


def taxii_time(moment: datetime) -> str:
    """A TAXII timestamp: UTC, microseconds (so `added_after` splits no two objects)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_taxii_time(name: str, text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(name, f"{text!r} is not an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise _bad(name, "the timestamp needs a time zone (e.g. Z)")
    return moment.astimezone(UTC)


def _bad(name: str, message: str) -> InvalidInput:
    return InvalidInput(f"{name}: {message}", details=[{"field": name, "message": message}])


@dataclass(frozen=True)
class Filters:
    added_after: datetime | None
    after_seq: int | None
    ids: list[str]
    types: list[str]
    version: str
    limit: int


def filters(
    added_after: str | None,
    next_token: str | None,
    match_id: str | None,
    match_type: str | None,
    match_version: str | None,
    match_spec_version: str | None,
    limit: int | None,
) -> Filters:
    after_seq = None
    if next_token is not None:
        if not re.fullmatch(NEXT_PATTERN, next_token):
            raise _bad("next", "pass back the `next` of the previous page unchanged")
        after_seq = int(next_token)
    if not re.fullmatch(SPEC_VERSION_PATTERN, match_spec_version or ""):
        raise _bad("match[spec_version]", "this server holds STIX 2.1 objects only")
    version = (match_version or "last").strip()
    if version not in ("last", "first", "all"):
        for v in version.split(","):
            parse_taxii_time("match[version]", v)
    return Filters(
        parse_taxii_time("added_after", added_after) if added_after is not None else None,
        after_seq,
        [i for i in (match_id or "").split(",") if i],
        [t for t in (match_type or "").split(",") if t],
        version,
        min(limit or MAX_PAGE, MAX_PAGE),
    )


@dataclass(frozen=True)
class Page:
    rows: list[IntelObjectRow]
    more: bool

    @property
    def next(self) -> str | None:
        return str(self.rows[-1].seq) if self.more and self.rows else None

    def headers(self) -> dict[str, str]:
        if not self.rows:
            return {}
        return {
            "X-TAXII-Date-Added-First": taxii_time(self.rows[0].date_added),
            "X-TAXII-Date-Added-Last": taxii_time(self.rows[-1].date_added),
        }


class TaxiiService:
    def __init__(self, config: IntelConfig, intake: Intake | None = None) -> None:
        self._config = config
        self._intake = intake

    def readable(self, principal: Principal) -> list[Collection]:
        if principal.role is Role.PEER:
            return [c for c in self._config.collections if principal.name in c.readers]
        return list(self._config.collections)

    def collection(self, principal: Principal, collection_id: str) -> Collection:
        found = self._config.collection(collection_id)
        if found is None:
            raise NotFound(f"no collection {collection_id!r}; GET the collections to list them")
        if found not in self.readable(principal):
            raise Forbidden(
                f"token {principal.name!r} is not among the readers of collection "
                f"{collection_id}; ask its lab to add it under intel.collections[].readers"
            )
        return found

    def writable(self, principal: Principal, collection: Collection) -> bool:
        return principal.role is Role.PEER and principal.name in collection.writers

    async def add_objects(
        self, session: AsyncSession, principal: Principal, collection_id: str, objects: list[Any]
    ) -> IntelStatusRow:
        """Objects a peer posts to an inbox collection: each verified against the peers'
        keys and taken as pulled intel from that peer; the verified ones are kept in the
        collection. Answers the TAXII status (complete: nothing is left pending)."""
        found = self._config.collection(collection_id)
        if found is None:
            raise NotFound(f"no collection {collection_id!r}; GET the collections to list them")
        if not self.writable(principal, found):
            raise Forbidden(
                f"token {principal.name!r} may not add objects to collection {collection_id}; "
                "its lab lists the peers that may under intel.collections[].writers"
            )
        peer = self._config.peer(principal.name)
        if peer is None or self._intake is None:
            raise Forbidden(f"{principal.name!r} is not a configured peer of this lab")
        requested = utcnow()

        async def keep(session: AsyncSession, verified: list[Any]) -> None:
            await repository.append_objects(session, found.id, verified, utcnow())

        report = await self._intake.receive(session, peer, objects, keep)
        outcomes = report.outcomes or []
        successes = [o.detail() for o in outcomes if o.ok]
        failures = [o.detail() for o in outcomes if not o.ok]
        row = IntelStatusRow(
            id=str(uuid.uuid4()),
            collection=found.id,
            writer=principal.name,
            request_timestamp=requested,
            status="complete",
            total_count=len(objects),
            success_count=len(successes),
            failure_count=len(failures),
            pending_count=0,
            details={"successes": successes, "failures": failures, "pendings": []},
        )
        await repository.insert_status(session, row)
        return row

    async def status(
        self, session: AsyncSession, principal: Principal, status_id: str
    ) -> IntelStatusRow:
        """A status: for the peer that posted, and for readers of the enforcement record."""
        row = await repository.get_status(session, status_id)
        if row is None or (principal.role is Role.PEER and row.writer != principal.name):
            raise NotFound(f"no status {status_id!r} for this token")
        return row

    async def objects(
        self, session: AsyncSession, principal: Principal, collection_id: str, f: Filters
    ) -> Page:
        collection = self.collection(principal, collection_id)
        rows, more = await repository.object_page(
            session,
            collection.id,
            added_after=f.added_after,
            after_seq=f.after_seq,
            ids=f.ids,
            types=f.types,
            version=f.version,
            limit=f.limit,
        )
        return Page(rows, more)

    async def versions(
        self, session: AsyncSession, principal: Principal, collection_id: str, object_id: str
    ) -> list[IntelObjectRow]:
        collection = self.collection(principal, collection_id)
        rows = await repository.object_versions(session, collection.id, object_id)
        if not rows:
            raise NotFound(f"no object {object_id!r} in collection {collection_id}")
        return rows

    @staticmethod
    def root_name() -> str:
        return API_ROOT


def status_body(row: IntelStatusRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status,
        "request_timestamp": taxii_time(row.request_timestamp),
        "total_count": row.total_count,
        "success_count": row.success_count,
        "successes": row.details.get("successes", []),
        "failure_count": row.failure_count,
        "failures": row.details.get("failures", []),
        "pending_count": row.pending_count,
        "pendings": row.details.get("pendings", []),
    }


def envelope(page: Page) -> dict[str, Any]:
    body: dict[str, Any] = {"more": page.more, "objects": [r.body for r in page.rows]}
    if page.next:
        body["next"] = page.next
    return body
