"""What the API reads of the evaluate step's decisions: one decision with the actions
it planned (the explanation of one is `explain.py`), read in the request's session."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.errors import NotFound
from controlplane.evaluate import repository
from controlplane.plan import repository as actions_repo
from controlplane.store.models import ActionRow, DecisionRow


class DecisionReader:
    async def get(
        self, session: AsyncSession, decision_id: str
    ) -> tuple[DecisionRow, list[ActionRow]]:
        """A decision and the actions it planned."""
        row = await repository.get_decision(session, decision_id)
        if row is None:
            raise NotFound(f"no decision {decision_id!r}")
        actions = (await actions_repo.actions_of_decisions(session, [row.id]))[row.id]
        return row, actions
