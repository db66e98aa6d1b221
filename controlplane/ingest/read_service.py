"""What the API reads of stored verdicts (apart from the decide path that stores
them): one verdict with its decision and the actions planned, read in the request's
session."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.errors import NotFound
from controlplane.evaluate import repository as decisions_repo
from controlplane.ingest import repository
from controlplane.plan import repository as actions_repo
from controlplane.store.models import ActionRow, DecisionRow, VerdictRow


class VerdictReader:
    async def get(
        self, session: AsyncSession, verdict_id: str
    ) -> tuple[VerdictRow, DecisionRow | None, list[ActionRow]]:
        """A stored verdict, its decision (None while undecided) and the actions planned."""
        row = await repository.get_verdict(session, verdict_id)
        if row is None:
            raise NotFound(f"no verdict {verdict_id!r}")
        decided = await decisions_repo.decisions_of_verdicts(session, [verdict_id])
        decision = decided.get(verdict_id)
        actions = (
            (await actions_repo.actions_of_decisions(session, [decision.id]))[decision.id]
            if decision
            else []
        )
        return row, decision, actions
