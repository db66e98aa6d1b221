"""What the API reads of the plan step's actions (apart from the decide path, which
writes them): pages of actions, one action; read in the request's session."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.errors import NotFound
from controlplane.plan import repository
from controlplane.plan.repository import ActionFilter
from controlplane.store.models import ActionRow

__all__ = ["ActionFilter", "ActionReader"]


class ActionReader:
    async def page(
        self, session: AsyncSession, where: ActionFilter, after: str | None, limit: int
    ) -> list[ActionRow]:
        """Actions newest first; `after` is the id of the last one of the previous page."""
        return await repository.list_actions(session, where, after, limit)

    async def get(self, session: AsyncSession, action_id: str) -> ActionRow:
        row = await repository.get_action(session, action_id)
        if row is None:
            raise NotFound(f"no action {action_id!r}")
        return row
