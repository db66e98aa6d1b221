"""`/v1/exemptions`: subjects no policy may enforce against (they get `flag_review` only)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter

from controlplane.audit import service as audit
from controlplane.audit.chain import EventDraft
from controlplane.auth.guards import principal_of, requires
from controlplane.auth.roles import READERS, Role
from controlplane.exemptions import repository
from controlplane.exemptions.schemas import ExemptionIn, ExemptionOut, SubjectRef
from controlplane.runtime import Runtime
from controlplane.store.models import new_id
from controlplane.store.types import utcnow


def _out(row: dict[str, Any]) -> ExemptionOut:
    return ExemptionOut(
        **{k: v for k, v in row.items() if k not in ("subject_kind", "subject_value")},
        subject=SubjectRef(kind=row["subject_kind"], value=row["subject_value"]),
    )


class ExemptionController(Controller):
    path = "/v1/exemptions"
    tags = ["exemptions"]
    guards = [requires(*READERS)]

    @post(
        "/",
        operation_id="addExemption",
        summary="Add an exemption",
        guards=[requires(Role.REVIEWER)],
    )
    async def add(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ExemptionIn],
        runtime: NamedDependency[Runtime],
    ) -> ExemptionOut:
        """Exempt a subject in one provider, with an owner and a reason."""
        data.check_floor(runtime.providers.of(data.provider).min_prefix)
        now = utcnow()
        row = {
            "id": new_id("exm"),
            "provider": data.provider,
            "subject_kind": data.subject.kind.value,
            "subject_value": data.subject.value,
            "owner": data.owner,
            "reason": data.reason,
            "expires_at": data.expires_at,
            "created_at": now,
        }
        async with runtime.db.write() as session, session.begin():
            await repository.insert_exemption(session, row)
            await audit.record(
                session,
                [
                    EventDraft(
                        type="exemption.added",
                        actor=principal_of(request).name,
                        at=now,
                        provider=data.provider,
                        payload={
                            "id": row["id"],
                            "subject": data.subject.model_dump(mode="json"),
                            "reason": data.reason,
                            "expires_at": data.expires_at.isoformat() if data.expires_at else None,
                        },
                    )
                ],
            )
        return _out(row)

    @get("/", operation_id="listExemptions", summary="List exemptions")
    async def list_all(
        self,
        runtime: NamedDependency[Runtime],
        provider: Annotated[str | None, QueryParameter(max_length=63)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> list[ExemptionOut]:
        """The newest exemptions, optionally of one provider."""
        async with runtime.db.read() as session:
            rows = await repository.list_exemptions(session, provider, limit)
        return [_out(r.model_dump()) for r in rows]
