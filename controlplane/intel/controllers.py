"""`/v1/intel/indicators`: shared attribution intel."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter

from controlplane.audit import service as audit
from controlplane.audit.chain import EventDraft
from controlplane.auth.guards import principal_of, requires
from controlplane.auth.roles import READERS, Role
from controlplane.intel import repository
from controlplane.intel.schemas import IndicatorBatch, IndicatorOut
from controlplane.runtime import Runtime
from controlplane.store.models import new_id
from controlplane.store.types import utcnow


class IndicatorController(Controller):
    path = "/v1/intel/indicators"
    tags = ["intel"]
    guards = [requires(*READERS)]

    @post(
        "/",
        operation_id="addIndicators",
        summary="Add indicators",
        guards=[requires(Role.ENGINEER)],
    )
    async def add(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[IndicatorBatch],
        runtime: NamedDependency[Runtime],
    ) -> list[IndicatorOut]:
        """Add shared indicators; verdicts decided from now on see their matches."""
        data.check_floor(runtime.providers.loosest_floor())
        now = utcnow()
        rows = [{"id": new_id("ind"), **i.model_dump(), "created_at": now} for i in data.indicators]
        async with runtime.db.write() as session, session.begin():
            await repository.insert_indicators(session, rows)
            await audit.record(
                session,
                [
                    EventDraft(
                        type="indicator.added",
                        actor=principal_of(request).name,
                        at=now,
                        payload={
                            k: r[k] for k in ("id", "kind", "value", "source", "confidence", "tlp")
                        },
                    )
                    for r in rows
                ],
            )
        return [IndicatorOut(**r) for r in rows]

    @get("/", operation_id="listIndicators", summary="List indicators")
    async def list_all(
        self,
        runtime: NamedDependency[Runtime],
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> list[IndicatorOut]:
        """The newest indicators."""
        async with runtime.db.read() as session:
            rows = await repository.list_indicators(session, limit)
        return [IndicatorOut(**r.model_dump()) for r in rows]
