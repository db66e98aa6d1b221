"""`/v1/decisions`: what the policy decided, and with what input."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.api.dependencies import provide
from controlplane.auth.guards import requires
from controlplane.auth.roles import READERS
from controlplane.evaluate.explain import explain
from controlplane.evaluate.read_service import DecisionReader
from controlplane.evaluate.schemas import DecisionOut, ExplanationOut, FiredRuleOut
from controlplane.plan.schemas import ActionOut


class DecisionController(Controller):
    path = "/v1/decisions"
    tags = ["decisions"]
    guards = [requires(*READERS)]

    @get("/{decision_id:str}", operation_id="getDecision", summary="Get a decision")
    async def get_decision(
        self,
        decision_id: FromPath[str],
        decisions: NamedDependency[DecisionReader],
        session: NamedDependency[AsyncSession],
    ) -> DecisionOut:
        """One decision: the policy revision and entrypoint, the exact input and
        output, the engine, its duration, the trace id and the actions it planned."""
        row, actions = await decisions.get(session, decision_id)
        fields = row.model_dump()
        return DecisionOut(**fields, actions=[ActionOut.from_row(a.model_dump()) for a in actions])

    @get(
        "/{decision_id:str}/explain",
        operation_id="explainDecision",
        summary="Explain a decision",
    )
    async def explain_decision(
        self, decision_id: FromPath[str], session: NamedDependency[AsyncSession]
    ) -> ExplanationOut:
        """Re-evaluate the stored input at the stored revision with the engine's trace:
        the rules that fired with their METADATA and bindings, and whether the re-run
        matches the stored result."""
        e = await explain(session, decision_id)
        return ExplanationOut(
            decision_id=e.decision_id,
            verdict_id=e.verdict_id,
            policy_revision=e.policy_revision,
            entrypoint=e.entrypoint,
            stored_status=e.stored_status,
            matches=e.matches,
            stored_result=e.stored_result,
            rerun_result=e.rerun_result,
            rerun_error=e.rerun_error,
            actions=e.actions,
            fired=[FiredRuleOut(**vars(f)) for f in e.fired],
        )


DEPENDENCIES = {"decisions": provide(lambda runtime: DecisionReader())}
ROUTES = [DecisionController]
