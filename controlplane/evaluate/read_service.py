"""What the API reads of the evaluate step's decisions: one decision with the actions
it planned (the explanation of one is `explain.py`)."""

from __future__ import annotations

from controlplane.errors import NotFound
from controlplane.evaluate import repository
from controlplane.plan import repository as actions_repo
from controlplane.store.db import Database
from controlplane.store.models import ActionRow, DecisionRow


class DecisionReader:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, decision_id: str) -> tuple[DecisionRow, list[ActionRow]]:
        """A decision and the actions it planned."""
        async with self._db.read() as session:
            row = await repository.get_decision(session, decision_id)
            if row is None:
                raise NotFound(f"no decision {decision_id!r}")
            actions = (await actions_repo.actions_of_decisions(session, [row.id]))[row.id]
        return row, actions
