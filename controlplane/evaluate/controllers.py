"""`/v1/decisions`: what the policy decided, and with what input."""

from __future__ import annotations

from litestar import Controller, get

from controlplane.errors import NotFound
from controlplane.evaluate import repository
from controlplane.ingest.schemas import DecisionOut
from controlplane.plan import repository as actions_repo
from controlplane.plan.schemas import ActionOut
from controlplane.runtime import Runtime


class DecisionController(Controller):
    path = "/v1/decisions"
    tags = ["decisions"]

    @get("/{decision_id:str}", operation_id="getDecision", summary="Get a decision")
    async def get_decision(self, decision_id: str, runtime: Runtime) -> DecisionOut:
        """One decision: the policy revision and entrypoint, the exact input and
        output, the engine, its duration, the trace id and the actions it planned."""
        async with runtime.db.read() as session:
            row = await repository.get_decision(session, decision_id)
            if row is None:
                raise NotFound(f"no decision {decision_id!r}")
            actions = (await actions_repo.actions_of_decisions(session, [row.id]))[row.id]
        fields = row.model_dump()
        return DecisionOut(**fields, actions=[ActionOut.from_row(a.model_dump()) for a in actions])
