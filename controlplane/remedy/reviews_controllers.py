"""`/v1/reviews`: hard actions withheld from verified customers, for reviewers to decide."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.api.dependencies import provide
from controlplane.api.schemas import ErrorBody
from controlplane.auth.guards import principal_of, requires
from controlplane.auth.roles import READERS, Role
from controlplane.plan.schemas import ActionOut
from controlplane.remedy.reviews_schemas import (
    ConfirmedOut,
    ConfirmIn,
    DismissIn,
    ReviewOut,
    ReviewPage,
    ReviewState,
)
from controlplane.remedy.reviews_service import ReviewService
from controlplane.store.models import ReviewRow
from controlplane.store.types import utcnow

_AUTH = {
    401: ResponseSpec(ErrorBody, description="No bearer token, or an unknown one."),
    403: ResponseSpec(ErrorBody, description="The token's role may not do this."),
    503: ResponseSpec(ErrorBody, description="The database cannot be reached; retry later."),
}
_ONE = {
    404: ResponseSpec(ErrorBody, description="No such review."),
    409: ResponseSpec(ErrorBody, description="The review was already confirmed or dismissed."),
    415: ResponseSpec(ErrorBody, description="The body is not JSON."),
    422: ResponseSpec(ErrorBody, description="A bad field, named."),
}


def review_out(row: ReviewRow) -> ReviewOut:
    end = row.resolved_at or utcnow()
    return ReviewOut(
        id=row.id,
        provider=row.provider,
        state=ReviewState(row.state),
        subject={"kind": row.subject_kind, "value": row.subject_value},
        rule=row.rule,
        reason=row.reason,
        withheld=row.withheld,
        verdict_id=row.verdict_id,
        decision_id=row.decision_id,
        policy_revision=row.policy_revision,
        trace_id=row.trace_id,
        created_at=row.created_at,
        age_seconds=max(0.0, (end - row.created_at).total_seconds()),
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        resolution=row.resolution,
        applied=row.applied,
    )


class ReviewController(Controller):
    path = "/v1/reviews"
    tags = ["reviews"]
    guards = [requires(*READERS)]

    @get("/", operation_id="listReviews", summary="List reviews", responses=_AUTH)
    async def list_reviews(
        self,
        reviews: NamedDependency[ReviewService],
        session: NamedDependency[AsyncSession],
        review_state: Annotated[
            ReviewState | None,
            QueryParameter(name="state", description="Only reviews in this state."),
        ] = ReviewState.OPEN,
        cursor: Annotated[str | None, QueryParameter(max_length=40)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> ReviewPage:
        """Reviews oldest first (open ones by default); `next_cursor` pages on."""
        wanted = review_state.value if review_state else None
        rows, after = await reviews.page(session, wanted, cursor, limit)
        return ReviewPage(reviews=[review_out(r) for r in rows], next_cursor=after)

    @get(
        "/{review_id:str}",
        operation_id="getReview",
        summary="Get a review",
        responses={**_AUTH, 404: _ONE[404]},
    )
    async def get_review(
        self,
        review_id: FromPath[str],
        reviews: NamedDependency[ReviewService],
        session: NamedDependency[AsyncSession],
    ) -> ReviewOut:
        """One review, with what it withheld and how it was resolved."""
        return review_out(await reviews.get(session, review_id))

    @post(
        "/{review_id:str}/confirm",
        operation_id="confirmReview",
        summary="Confirm a review: apply the withheld actions",
        guards=[requires(Role.REVIEWER)],
        status_code=HTTP_200_OK,
        responses={**_AUTH, **_ONE},
    )
    async def confirm(
        self,
        request: Request[Any, Any, Any],
        review_id: FromPath[str],
        reviews: NamedDependency[ReviewService],
        session: NamedDependency[AsyncSession],
        data: JSONBody[ConfirmIn | None] = None,
    ) -> ConfirmedOut:
        """Plan the withheld actions now (TTLs run from now), recorded with the reviewer;
        the gateways take them as any planned action."""
        note = data.note if data else ""
        done = await reviews.confirm(session, review_id, principal_of(request).name, note)
        return ConfirmedOut(
            review=review_out(done.review),
            actions=[ActionOut.from_row(a) for a in done.actions],
        )

    @post(
        "/{review_id:str}/dismiss",
        operation_id="dismissReview",
        summary="Dismiss a review, with a reason",
        guards=[requires(Role.REVIEWER)],
        status_code=HTTP_200_OK,
        responses={**_AUTH, **_ONE},
    )
    async def dismiss(
        self,
        request: Request[Any, Any, Any],
        review_id: FromPath[str],
        data: JSONBody[DismissIn],
        reviews: NamedDependency[ReviewService],
        session: NamedDependency[AsyncSession],
    ) -> ReviewOut:
        """Keep the actions withheld; the reason is recorded with the reviewer."""
        row = await reviews.dismiss(session, review_id, principal_of(request).name, data.reason)
        return review_out(row)


DEPENDENCIES = {"reviews": provide(lambda runtime: runtime.reviews)}
ROUTES = [ReviewController]
