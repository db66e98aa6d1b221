"""`/v1/actions`: the enforcement the policies asked for."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.api.dependencies import provide
from controlplane.auth.guards import requires
from controlplane.auth.roles import READERS
from controlplane.domain.vocabulary import ActionState, ActionType, SubjectKind
from controlplane.plan.read_service import ActionFilter, ActionReader
from controlplane.plan.schemas import ActionOut, ActionPage


class ActionController(Controller):
    path = "/v1/actions"
    tags = ["actions"]
    guards = [requires(*READERS)]

    @get("/", operation_id="listActions", summary="List actions")
    async def list_actions(
        self,
        actions: NamedDependency[ActionReader],
        session: NamedDependency[AsyncSession],
        action_state: Annotated[ActionState | None, QueryParameter(name="state")] = None,
        action_type: Annotated[ActionType | None, QueryParameter(name="type")] = None,
        target_kind: FromQuery[SubjectKind | None] = None,
        target_value: Annotated[str | None, QueryParameter(max_length=200)] = None,
        provider: Annotated[str | None, QueryParameter(max_length=63)] = None,
        shadow: Annotated[
            bool | None,
            QueryParameter(description="true: only what shadow-mode rules would have done."),
        ] = None,
        cursor: Annotated[
            str | None, QueryParameter(description="`next_cursor` of the previous page.")
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> ActionPage:
        """Actions newest first, filtered by state, type, target, provider and shadow mode.

        `shadow=true` lists what shadow-mode rules would have done: recorded, never enforced."""
        where = ActionFilter(
            state=action_state.value if action_state else None,
            type=action_type.value if action_type else None,
            target_kind=target_kind.value if target_kind else None,
            target_value=target_value,
            provider=provider,
            shadow=shadow,
        )
        rows = await actions.page(session, where, cursor, limit + 1)
        items = [ActionOut.from_row(r.model_dump()) for r in rows[:limit]]
        return ActionPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    @get("/{action_id:str}", operation_id="getAction", summary="Get an action")
    async def get_action(
        self,
        action_id: FromPath[str],
        actions: NamedDependency[ActionReader],
        session: NamedDependency[AsyncSession],
    ) -> ActionOut:
        """One action: its target, parameters, rule, reason, state and trace id."""
        return ActionOut.from_row((await actions.get(session, action_id)).model_dump())


DEPENDENCIES = {"actions": provide(lambda runtime: ActionReader())}
ROUTES = [ActionController]
