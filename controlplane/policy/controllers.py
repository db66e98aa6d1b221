"""`/v1/policies`: which revision decides, and every one before it."""

from __future__ import annotations

from litestar import Controller, get

from controlplane.policy import repository
from controlplane.policy.schemas import ActivationOut, PoliciesOut, RevisionOut
from controlplane.policy.service import bundle_of
from controlplane.runtime import Runtime


class PolicyController(Controller):
    path = "/v1/policies"
    tags = ["policies"]

    @get("/", operation_id="listPolicyRevisions", summary="List policy revisions")
    async def list_revisions(self, runtime: Runtime) -> PoliciesOut:
        """The active revision, every revision seen (passed or rejected, with why),
        and every activation and rollback with who, when and why."""
        async with runtime.db.read() as session:
            revisions = await repository.revisions(session)
            activations = await repository.activations(session)
        active = activations[0].revision if activations else None
        return PoliciesOut(
            active=active,
            revisions=[
                RevisionOut(
                    id=r.id,
                    source=r.source,
                    status=r.status,
                    active=r.id == active,
                    created_at=r.created_at,
                    problems=r.problems,
                    tests=r.tests,
                    shadow_rules=sorted(bundle_of(r).shadow.rules),
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
