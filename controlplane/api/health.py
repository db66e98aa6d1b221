"""Liveness and readiness: the database, the engine slot and the leadership of this
replica, as its providers give them."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from controlplane.api.dependencies import provide
from controlplane.engine.runtime import EngineSlot
from controlplane.leadership import Leadership
from controlplane.store.db import Database


class HealthController(Controller):
    tags = ["health"]

    @get("/healthz", operation_id="healthz", summary="Liveness")
    async def healthz(self) -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @get(
        "/readyz",
        operation_id="readyz",
        summary="Readiness",
        responses={
            503: ResponseSpec(
                dict[str, Any],
                description="Not ready: `checks` says what is missing.",
                generate_examples=False,
            )
        },
    )
    async def readyz(
        self,
        db: NamedDependency[Database],
        engines: NamedDependency[EngineSlot],
        leadership: NamedDependency[Leadership],
    ) -> Response[dict[str, Any]]:
        """Ready when the database answers and a policy revision is loaded. `checks` also
        says whether this replica leads the periodic jobs (`leading`), stands by, or
        holds the lead's lock and waits out the grace before it leads (`taking over`)."""
        checks: dict[str, Any] = {}
        try:
            await db.ping()
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        if engines.loaded:
            engine = engines.current
            checks["policy"] = {
                "revision": engine.revision,
                "engine": engine.name,
                "entrypoint": engine.entrypoint,
            }
        else:
            checks["policy"] = "not loaded"
        checks["periodic_jobs"] = leadership.role
        ready = checks["database"] == "ok" and engines.loaded
        return Response(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=HTTP_200_OK if ready else HTTP_503_SERVICE_UNAVAILABLE,
        )


DEPENDENCIES = {
    "engines": provide(lambda runtime: runtime.engines),
    "leadership": provide(lambda runtime: runtime.leadership),
}
ROUTES = [HealthController]
