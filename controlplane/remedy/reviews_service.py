"""The review queue: hard actions a policy withheld from a verified customer wait here.

Confirming plans the withheld actions (through the change log, recorded with the
reviewer, a suspension with its keys); dismissing keeps them withheld, with a reason.
Either way the review's `flag_review` ends, so a later verdict can open a new one.
Each method works in the session it is given (the request's transaction)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.audit import service as audit
from controlplane.audit.chain import EventDraft
from controlplane.domain.vocabulary import ActionState
from controlplane.enforce.service import record_changes
from controlplane.errors import Conflict, NotFound
from controlplane.plan import repository as actions_repo
from controlplane.plan import service as plan
from controlplane.remedy import reviews_repository as repository
from controlplane.store.db import after_commit
from controlplane.store.models import ReviewRow
from controlplane.store.types import utcnow


@dataclass(frozen=True)
class Confirmed:
    review: ReviewRow
    actions: list[dict[str, Any]]


class ReviewService:
    def __init__(self, wake: Callable[[], None] = lambda: None) -> None:
        self._wake = wake
        """Tells enforcement a change was logged (its followers look at once): run once
        the confirming transaction commits."""

    async def page(
        self, session: AsyncSession, state: str | None, after: str | None, limit: int
    ) -> tuple[list[ReviewRow], str | None]:
        rows = await repository.list_reviews(session, state, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].id if more and rows else None)

    async def get(self, session: AsyncSession, review_id: str) -> ReviewRow:
        row = await repository.get_review(session, review_id)
        if row is None:
            raise NotFound(f"no review {review_id!r}")
        return row

    async def confirm(
        self, session: AsyncSession, review_id: str, actor: str, note: str
    ) -> Confirmed:
        now = utcnow()
        review = await self._open(session, review_id)
        rows, planned = await session.run_sync(
            plan.record_confirmed, review.model_dump(), actor, note, now
        )
        self._resolve(review, "confirmed", actor, note, now)
        review.applied = [r["id"] for r in rows]
        await actions_repo.set_action_states(
            session, {review.action_id: ActionState.LIFTED.value}, now
        )
        await audit.record(
            session,
            [self._event(review, "review.confirmed", actor, now, {"note": note}), *planned],
        )
        await record_changes(session, rows, "planned", now)
        after_commit(session, self._wake)
        return Confirmed(review, rows)

    async def dismiss(
        self, session: AsyncSession, review_id: str, actor: str, reason: str
    ) -> ReviewRow:
        now = utcnow()
        review = await self._open(session, review_id)
        self._resolve(review, "dismissed", actor, reason, now)
        await actions_repo.set_action_states(
            session, {review.action_id: ActionState.LIFTED.value}, now
        )
        await audit.record(
            session, [self._event(review, "review.dismissed", actor, now, {"reason": reason})]
        )
        return review

    @staticmethod
    async def _open(session: AsyncSession, review_id: str) -> ReviewRow:
        review = await repository.get_review(session, review_id, for_update=True)
        if review is None:
            raise NotFound(f"no review {review_id!r}")
        if review.state != repository.OPEN:
            raise Conflict(
                f"review {review_id} was {review.state} by {review.resolved_by} at "
                f"{review.resolved_at:%Y-%m-%d %H:%M:%S}Z: nothing left to decide"
                if review.resolved_at
                else f"review {review_id} is {review.state}"
            )
        return review

    @staticmethod
    def _resolve(review: ReviewRow, state: str, actor: str, text: str, now: datetime) -> None:
        review.state = state
        review.resolved_at = now
        review.resolved_by = actor
        review.resolution = text or None

    @staticmethod
    def _event(
        review: ReviewRow, kind: str, actor: str, now: datetime, extra: dict[str, Any]
    ) -> EventDraft:
        return EventDraft(
            type=kind,
            actor=actor,
            at=now,
            provider=review.provider,
            verdict_id=review.verdict_id,
            decision_id=review.decision_id,
            action_id=review.action_id,
            trace_id=review.trace_id,
            payload={
                "review_id": review.id,
                "subject": {"kind": review.subject_kind, "value": review.subject_value},
                "withheld": len(review.withheld),
                **extra,
            },
        )
