"""What the API reads of the plan step's actions (apart from the decide path, which
writes them): pages of actions, one action, the actions of a decision."""

from __future__ import annotations

from controlplane.errors import NotFound
from controlplane.plan import repository
from controlplane.plan.repository import ActionFilter
from controlplane.store.db import Database
from controlplane.store.models import ActionRow

__all__ = ["ActionFilter", "ActionReader"]


class ActionReader:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def page(self, where: ActionFilter, after: str | None, limit: int) -> list[ActionRow]:
        """Actions newest first; `after` is the id of the last one of the previous page."""
        async with self._db.read() as session:
            return await repository.list_actions(session, where, after, limit)

    async def get(self, action_id: str) -> ActionRow:
        async with self._db.read() as session:
            row = await repository.get_action(session, action_id)
        if row is None:
            raise NotFound(f"no action {action_id!r}")
        return row
