"""What enforcement reads and writes of the `action` table. The plan step owns that
table and its queries (`controlplane.plan.repository` is the implementation): a later
stage never imports an earlier one, so the runtime hands it in."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from controlplane.store.models import ActionRow


class Actions(Protocol):
    ACTIVE: list[str]
    """The states of an action still in force (pending, applied, failed)."""

    async def desired_for_targets(
        self,
        session: AsyncSession,
        providers: Sequence[str] | None,
        types: Sequence[str],
        targets: Sequence[tuple[str, str]],
        now: datetime,
        kinds: Sequence[str] | None = None,
    ) -> list[Any]:
        """Active, non-shadow, unexpired actions of these types on these targets:
        (id, provider, type, target kind, target value, params, created_at) rows."""
        ...

    async def desired_page(
        self,
        session: AsyncSession,
        providers: Sequence[str] | None,
        types: Sequence[str],
        after: tuple[str, str] | None,
        limit: int,
        now: datetime,
        kinds: Sequence[str] | None = None,
    ) -> tuple[list[Any], tuple[str, str] | None]:
        """One keyset page of the desired state, and where the next one starts."""
        ...

    # The followers record what they applied on sync sessions, in a thread: a short
    # write transaction with no event loop round trip per statement.

    def actions_by_id_blocking(self, session: Session, ids: Sequence[str]) -> list[ActionRow]: ...

    def action_states(
        self, session: Session, action_ids: Sequence[str]
    ) -> list[tuple[str, str, str, str, str]]:
        """(id, state, provider, type, target kind) of these actions, locked until the
        caller's transaction ends: what a follower then writes of them cannot undo a
        lift or an expiry committed meanwhile."""
        ...

    def active_among(self, session: Session, action_ids: Sequence[str]) -> set[str]: ...

    def set_action_states_blocking(
        self, session: Session, changes: dict[str, str], now: datetime
    ) -> None: ...

    async def set_action_states(
        self, session: AsyncSession, changes: dict[str, str], now: datetime
    ) -> None: ...

    async def due_to_expire(
        self, session: AsyncSession, now: datetime, limit: int
    ) -> list[ActionRow]:
        """Active actions past their expiry, locked for the caller's transaction and
        skipping rows another transaction holds (`FOR UPDATE SKIP LOCKED`), so every
        replica may expire at once."""
        ...
