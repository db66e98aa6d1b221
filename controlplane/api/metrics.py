"""`/metrics`: Prometheus text, without a token (like /healthz: scrapers hold none).

It shows counts and timings only: no subject, verdict or token is ever a label."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.telemetry import metrics


class MetricsController(Controller):
    tags = ["health"]

    @get(
        "/metrics",
        operation_id="metrics",
        summary="Prometheus metrics",
        media_type=metrics.CONTENT_TYPE,
    )
    async def metrics(self, session: NamedDependency[AsyncSession]) -> Response[bytes]:
        """Verdicts received, decisions by status, evaluation latency, audit events by
        type (per process); actions by type and state, the undecided backlog, the audit
        head and newest checkpoint, and each connector's lag and entries (from the
        database at scrape time, in the request's read session)."""
        body = await metrics.scrape(session)
        return Response(body, media_type=metrics.CONTENT_TYPE)


ROUTES = [MetricsController]
