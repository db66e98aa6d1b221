"""The litestar app: each area exports its controllers; errors map to HTTP here, once."""

from __future__ import annotations

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

from controlplane.api import errors, middleware, openapi
from controlplane.api.body import MAX_BODY, JSONRequest, StrictPydantic
from controlplane.api.health import HealthController
from controlplane.api.metrics import MetricsController
from controlplane.audit.controllers import AuditController, SubjectController
from controlplane.auth.controllers import TokenController
from controlplane.bouncers.controllers import BouncerController
from controlplane.customers.controllers import CustomerController
from controlplane.enforce.controllers import ConnectorController
from controlplane.evaluate.controllers import DecisionController
from controlplane.ingest.controllers import VerdictController
from controlplane.intel.controllers import IndicatorController
from controlplane.intel.taxii.controllers import TaxiiController
from controlplane.plan.controllers import ActionController
from controlplane.policy.controllers import PolicyController
from controlplane.remedy import controllers as remedy
from controlplane.remedy.reviews_controllers import ReviewController
from controlplane.runtime import Runtime
from controlplane.settings import Settings, get_settings
from controlplane.telemetry.tracing import configure
from controlplane.ui import controllers as console
from controlplane.ui.traces import TraceController

ROUTES = [
    *console.ROUTES,
    TraceController,
    HealthController,
    VerdictController,
    BouncerController,
    DecisionController,
    ActionController,
    CustomerController,
    ReviewController,
    *remedy.ROUTES,
    IndicatorController,
    TaxiiController,
    PolicyController,
    ConnectorController,
    AuditController,
    SubjectController,
    TokenController,
    MetricsController,
]


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Litestar:
    """The API over a `Runtime` (made from `settings` when not given)."""
    settings = settings or get_settings()
    runtime = runtime or Runtime.create(settings)
    provider = configure(settings.otlp_endpoint)
    return Litestar(
        route_handlers=ROUTES,
        template_config=console.template_config(),
        state=State({"runtime": runtime}),
        dependencies={"runtime": Provide(lambda: runtime, use_cache=True, sync_to_thread=False)},
        on_startup=[runtime.start],
        on_shutdown=[runtime.stop],
        exception_handlers=errors.HANDLERS,
        middleware=[middleware.count_server_errors, middleware.true_allow],
        request_class=JSONRequest,
        # One limit, checked while the body streams in (413), for every endpoint.
        request_max_body_size=MAX_BODY,
        plugins=[
            StrictPydantic(),
            OpenTelemetryPlugin(OpenTelemetryConfig(tracer_provider=provider)),
        ],
        openapi_config=openapi.config(),
        # Logging is the entry point's business (`tollgate serve` configures it).
        logging_config=None,
    )
