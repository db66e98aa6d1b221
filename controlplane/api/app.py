"""The litestar app: each area exports its controllers; errors map to HTTP here, once."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

from controlplane.api import dependencies, errors, health, metrics, middleware, openapi
from controlplane.api.body import MAX_BODY, JSONRequest, StrictPydantic
from controlplane.audit import controllers as audit_routes
from controlplane.auth import controllers as token_routes
from controlplane.bouncers import controllers as bouncer_routes
from controlplane.customers import controllers as customer_routes
from controlplane.enforce import controllers as connector_routes
from controlplane.evaluate import controllers as decision_routes
from controlplane.ingest import controllers as verdict_routes
from controlplane.intel import controllers as indicator_routes
from controlplane.intel.taxii import controllers as taxii_routes
from controlplane.plan import controllers as action_routes
from controlplane.policy import controllers as policy_routes
from controlplane.remedy import controllers as remedy_routes
from controlplane.remedy import reviews_controllers as review_routes
from controlplane.runtime import Runtime
from controlplane.settings import Settings, get_settings
from controlplane.telemetry.tracing import configure
from controlplane.ui import controllers as console
from controlplane.ui import traces_controllers as trace_routes

AREAS: list[Any] = [
    console,
    health,
    verdict_routes,
    bouncer_routes,
    decision_routes,
    action_routes,
    customer_routes,
    review_routes,
    remedy_routes,
    indicator_routes,
    taxii_routes,
    policy_routes,
    connector_routes,
    audit_routes,
    trace_routes,
    token_routes,
    metrics,
]
"""Each area's controllers module: its `ROUTES` and, when it has any, its `DEPENDENCIES`."""

ROUTES = [r for area in AREAS for r in area.ROUTES]


def _dependencies() -> dict[str, Provide]:
    """The areas' providers, then `db`, `settings` and the request's `session`; one
    name, one provider. No handler is given the runtime itself: the app keeps it in its
    state for the providers, and runs its start and stop."""
    found: dict[str, Provide] = {}
    for area in AREAS:
        for name, provider in getattr(area, "DEPENDENCIES", {}).items():
            if name in found:
                raise RuntimeError(f"two areas provide the dependency {name!r}")
            found[name] = provider
    return {**found, **dependencies.common()}


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Litestar:
    """The API over a `Runtime` (made from `settings` when not given)."""
    settings = settings or get_settings()
    runtime = runtime or Runtime.create(settings)
    provider = configure(settings.otlp_endpoint)
    return Litestar(
        route_handlers=ROUTES,
        template_config=console.template_config(),
        state=State({"runtime": runtime}),
        dependencies=_dependencies(),
        on_startup=[runtime.start],
        on_shutdown=[runtime.stop],
        exception_handlers=errors.HANDLERS,
        middleware=[middleware.count_server_errors, middleware.true_allow],
        request_class=JSONRequest,
        # One limit, checked while the body streams in (413), for every endpoint.
        request_max_body_size=MAX_BODY,
        plugins=[
            StrictPydantic(),
            # One server span per request: the ASGI middleware's own spans for each
            # message received and sent tell an operator nothing, and cost three spans
            # of work per request (made, exported, stored).
            OpenTelemetryPlugin(
                OpenTelemetryConfig(tracer_provider=provider, exclude_spans=["receive", "send"])
            ),
        ],
        openapi_config=openapi.config(),
        # Logging is the entry point's business (`tollgate serve` configures it).
        logging_config=None,
    )
