"""`/v1/connectors`: the gateways."""

from __future__ import annotations

from dataclasses import asdict

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.api.dependencies import provide
from controlplane.auth.guards import requires
from controlplane.auth.roles import READERS, Role
from controlplane.enforce.schemas import ConnectorOut, ReconcileOut
from controlplane.enforce.service import Enforcer


class ConnectorController(Controller):
    path = "/v1/connectors"
    tags = ["connectors"]
    guards = [requires(*READERS)]

    @get("/", operation_id="listConnectors", summary="List connectors")
    async def list_connectors(
        self, enforcer: NamedDependency[Enforcer], session: NamedDependency[AsyncSession]
    ) -> list[ConnectorOut]:
        """Each connector's health now, its last reconcile, desired vs applied entries,
        failures (retryable and permanent), drift repaired, its place in the change log
        and lag."""
        statuses = await enforcer.statuses(session)
        positions = await enforcer.status(session)
        out = []
        for name in enforcer.names:
            config = enforcer.config(name)
            healthy, gateway, detail = await enforcer.health(session, name)
            s = statuses.get(name)
            cursor, head = positions[name]
            failing = bool(s and (s.failed or s.rejected or s.last_error))
            out.append(
                ConnectorOut(
                    name=name,
                    type=config.type,
                    providers=list(config.providers),
                    state="down"
                    if not healthy or (s is not None and not s.healthy)
                    else ("degraded" if failing else "healthy"),
                    healthy=healthy,
                    gateway=gateway,
                    detail=detail,
                    last_reconcile_at=s.last_reconcile_at if s else None,
                    last_success_at=s.last_success_at if s else None,
                    desired=s.desired if s else 0,
                    applied=s.applied if s else 0,
                    failed=s.failed if s else 0,
                    rejected=s.rejected if s else 0,
                    drift_repaired=s.drift_repaired if s else 0,
                    cursor=cursor,
                    pending_changes=max(0, head - cursor),
                    lag_seconds=s.lag_seconds if s else 0.0,
                    last_error=s.last_error if s else None,
                )
            )
        return out

    @post(
        "/{name:str}/reconcile",
        operation_id="reconcileConnector",
        summary="Reconcile a connector now",
        guards=[requires(Role.ENGINEER, Role.REVIEWER)],
        status_code=200,
    )
    async def reconcile(
        self, name: FromPath[str], enforcer: NamedDependency[Enforcer]
    ) -> ReconcileOut:
        """Observe the gateway, diff it against the desired state and apply the difference."""
        report = await enforcer.reconcile(name)
        return ReconcileOut(**asdict(report))


DEPENDENCIES = {"enforcer": provide(lambda runtime: runtime.enforcer)}
ROUTES = [ConnectorController]
