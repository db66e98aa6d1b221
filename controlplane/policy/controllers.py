"""`/v1/policies`: which revision decides, and every one before it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.api.dependencies import provide
from controlplane.auth.guards import principal_of, requires
from controlplane.auth.roles import READERS, Role
from controlplane.domain.action import parse_duration
from controlplane.engine.bundle import PolicyBundle, content_revision, short_revision
from controlplane.engine.embedded import EmbeddedEngine
from controlplane.engine.sandbox import refuse_denied
from controlplane.errors import InvalidInput, NotFound, PolicyError
from controlplane.policy import service
from controlplane.policy.impact import markdown, replay
from controlplane.policy.schemas import (
    ActivationOut,
    ImpactRequest,
    PoliciesOut,
    RevisionOut,
    RollbackOut,
    RollbackRequest,
    SyncOut,
    SyncRequest,
)
from controlplane.policy.service import Converge, PolicyService, bundle_of
from controlplane.settings import Settings


class PolicyController(Controller):
    path = "/v1/policies"
    tags = ["policies"]
    guards = [requires(*READERS)]

    @get("/", operation_id="listPolicyRevisions", summary="List policy revisions")
    async def list_revisions(self, session: NamedDependency[AsyncSession]) -> PoliciesOut:
        """The active revision, every revision seen (passed or rejected, with why),
        and every activation and rollback with who, when and why."""
        revisions, activations = await service.history(session)
        active = activations[0].revision if activations else None
        return PoliciesOut(
            active=active,
            revisions=[
                RevisionOut(
                    id=r.id,
                    short_id=short_revision(r.id),
                    source=r.source,
                    status=r.status,
                    active=r.id == active,
                    created_at=r.created_at,
                    problems=r.problems,
                    tests=r.tests,
                    shadow_rules=list(bundle_of(r).shadow.shown),
                )
                for r in revisions
            ],
            activations=[
                ActivationOut(
                    revision=a.revision, kind=a.kind, actor=a.actor, reason=a.reason, at=a.at
                )
                for a in activations
            ],
        )

    @post(
        "/sync",
        operation_id="syncPolicies",
        summary="Sync from the policy source",
        status_code=HTTP_200_OK,
        guards=[requires(Role.ENGINEER)],
    )
    async def sync(
        self,
        request: Request[Any, Any, Any],
        policies: NamedDependency[PolicyService],
        converge: NamedDependency[Converge],
        data: JSONBody[SyncRequest],
    ) -> SyncOut:
        """Fetch this server's policy source now; check, test and activate its revision
        if it is new (a rejected one is recorded with why, and never activated). This
        server decides with it at once, the other replicas within seconds. The token's
        name is recorded as who did it."""
        # The sync commits its own transactions: the engine converges on what committed,
        # and a sync that raised converges nothing.
        result = await policies.sync(principal_of(request).name, data.reason)
        await converge()
        return SyncOut(
            revision=result.revision,
            outcome=result.outcome,
            problems=result.problems,
            tests=result.tests,
        )

    @post(
        "/rollback",
        operation_id="rollbackPolicy",
        summary="Roll back to an earlier revision",
        status_code=HTTP_200_OK,
        guards=[requires(Role.ENGINEER)],
    )
    async def rollback(
        self,
        request: Request[Any, Any, Any],
        policies: NamedDependency[PolicyService],
        converge: NamedDependency[Converge],
        data: JSONBody[RollbackRequest],
    ) -> RollbackOut:
        """Reactivate an earlier revision that passed its gate (by default the one active
        before the current one). This server decides with it at once, the other
        replicas within seconds; the next sync activates only a newer commit."""
        done = await policies.rollback(data.revision, principal_of(request).name, data.reason)
        await converge()  # as for a sync: only once the rollback has committed
        return RollbackOut(revision=done)

    @post(
        "/impact",
        operation_id="policyImpact",
        summary="Impact of a policy change",
        status_code=HTTP_200_OK,
        guards=[requires(Role.ENGINEER)],
    )
    async def impact(
        self,
        data: JSONBody[ImpactRequest],
        read_session: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> dict[str, Any]:
        """Replay stored verdicts (each with the history and context it had) against a
        base and a head revision; report the decisions that change, by action type and
        rule, the subjects newly revoked, blocked, rate-limited or released, and a
        sample of changed decisions."""
        try:
            window = parse_duration(data.since) if data.since else None
        except ValueError as exc:
            raise InvalidInput(f"since: {exc}") from None
        # A replay only reads, and long: a read session, though the method is POST.
        base = await (
            service.recorded(read_session, data.base) if data.base else service.active(read_session)
        )
        if base is None:
            raise NotFound(f"no recorded revision {data.base!r}: see GET /v1/policies")
        if data.head_modules is not None:
            uploaded = [(p, d) for p, d in data.head_data]
            head = PolicyBundle(
                root=Path("upload"),
                revision=content_revision(data.head_modules, uploaded),
                modules=data.head_modules,
                data=uploaded,
            )
        else:
            found = await service.recorded(read_session, data.head or "")
            if found is None:
                raise NotFound(f"no recorded revision {data.head!r}: see GET /v1/policies")
            head = found
        # Replaying runs both policies here: one that leaves the process is refused, as
        # `tollgate policy check` refuses it (an uploaded head has not been checked).
        for bundle in (base, head):
            try:
                await asyncio.to_thread(refuse_denied, bundle.modules)
            except PolicyError as exc:
                where = "head_modules: " if data.head_modules is not None and bundle is head else ""
                raise InvalidInput(f"{where}{exc.message}", details=exc.details) from None
        engines: list[EmbeddedEngine] = []
        try:
            for bundle in (base, head):
                engines.append(
                    await asyncio.to_thread(
                        EmbeddedEngine, bundle, settings.entrypoint, settings.engine_workers
                    )
                )
        except PolicyError as exc:
            for engine in engines:
                engine.close()
            if data.head_modules is not None and bundle is head:
                # An uploaded policy that does not compile is the caller's to fix: a 422.
                raise InvalidInput(f"head_modules: {exc.message}") from None
            raise
        try:
            report = await replay(read_session, engines[0], engines[1], window)
        finally:
            for engine in engines:
                engine.close()
        return {**report.to_dict(), "markdown": markdown(report)}


DEPENDENCIES = {
    "policies": provide(lambda runtime: runtime.policies),
    "converge": provide(lambda runtime: runtime.converge),
}
ROUTES = [PolicyController]
