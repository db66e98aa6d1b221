"""`/v1/actions`: the enforcement the policies asked for."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter

from controlplane.auth.guards import requires
from controlplane.auth.roles import READERS
from controlplane.domain.vocabulary import ActionState, ActionType, SubjectKind
from controlplane.errors import NotFound
from controlplane.plan import repository
from controlplane.plan.schemas import ActionOut, ActionPage
from controlplane.runtime import Runtime


class ActionController(Controller):
    path = "/v1/actions"
    tags = ["actions"]
    guards = [requires(*READERS)]

    @get("/", operation_id="listActions", summary="List actions")
    async def list_actions(
        self,
        runtime: NamedDependency[Runtime],
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
        where = repository.ActionFilter(
            state=action_state.value if action_state else None,
            type=action_type.value if action_type else None,
            target_kind=target_kind.value if target_kind else None,
            target_value=target_value,
            provider=provider,
            shadow=shadow,
        )
        async with runtime.db.read() as session:
            rows = await repository.list_actions(session, where, cursor, limit + 1)
        items = [ActionOut.from_row(r.model_dump()) for r in rows[:limit]]
        return ActionPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    @get("/{action_id:str}", operation_id="getAction", summary="Get an action")
    async def get_action(
        self, action_id: FromPath[str], runtime: NamedDependency[Runtime]
    ) -> ActionOut:
        """One action: its target, parameters, rule, reason, state and trace id."""
        async with runtime.db.read() as session:
            row = await repository.get_action(session, action_id)
        if row is None:
            raise NotFound(f"no action {action_id!r}")
        return ActionOut.from_row(row.model_dump())
