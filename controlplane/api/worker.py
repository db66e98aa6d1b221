"""The connector worker's HTTP side: liveness and readiness for its probes, nothing else."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Litestar, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from controlplane.enforce.service import Enforcer
from controlplane.runtime import WorkerRuntime
from controlplane.store.db import Database


class WorkerHealthController(Controller):
    tags = ["health"]

    @get("/healthz", operation_id="workerHealthz", summary="Liveness")
    async def healthz(self, enforcer: NamedDependency[Enforcer]) -> Response[dict[str, str]]:
        """Alive while the followers' thread runs."""
        alive = enforcer.alive
        return Response(
            {"status": "ok" if alive else "followers stopped"},
            status_code=HTTP_200_OK if alive else HTTP_503_SERVICE_UNAVAILABLE,
        )

    @get("/readyz", operation_id="workerReadyz", summary="Readiness")
    async def readyz(
        self, db: NamedDependency[Database], enforcer: NamedDependency[Enforcer]
    ) -> Response[dict[str, Any]]:
        """Ready when the database answers and the followers run; says per connector
        whether this worker applies it or stands by."""
        checks: dict[str, Any] = {}
        try:
            await db.ping()
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        checks["connectors"] = {
            name: "applying" if active else "standing by"
            for name, active in enforcer.applying().items()
        }
        ready = checks["database"] == "ok" and enforcer.alive
        return Response(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=HTTP_200_OK if ready else HTTP_503_SERVICE_UNAVAILABLE,
        )


def create_worker_app(worker: WorkerRuntime) -> Litestar:
    """Probes only; the worker is started before and stopped after serving them."""
    return Litestar(
        route_handlers=[WorkerHealthController],
        state=State({"worker": worker}),
        dependencies={
            "db": Provide(lambda: worker.db, use_cache=True, sync_to_thread=False),
            "enforcer": Provide(lambda: worker.enforcer, use_cache=True, sync_to_thread=False),
        },
        openapi_config=None,
        logging_config=None,
    )
