"""The litestar app: each area exports its controllers; errors map to HTTP here, once."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

from controlplane import __version__
from controlplane.api.health import HealthController
from controlplane.api.metrics import MetricsController
from controlplane.audit.controllers import AuditController, SubjectController
from controlplane.enforce.controllers import ConnectorController, LiftController
from controlplane.errors import TollgateError
from controlplane.evaluate.controllers import DecisionController
from controlplane.exemptions.controllers import ExemptionController
from controlplane.ingest.controllers import VerdictController
from controlplane.intel.controllers import IndicatorController
from controlplane.intel.taxii.controllers import TaxiiController
from controlplane.plan.controllers import ActionController
from controlplane.policy.controllers import PolicyController
from controlplane.runtime import Runtime
from controlplane.settings import Settings, get_settings
from controlplane.telemetry.tracing import configure
from controlplane.ui import controllers as console
from controlplane.ui.traces import TraceController

log = logging.getLogger(__name__)

ROUTES = [
    *console.ROUTES,
    TraceController,
    HealthController,
    VerdictController,
    DecisionController,
    ActionController,
    ExemptionController,
    IndicatorController,
    TaxiiController,
    PolicyController,
    ConnectorController,
    LiftController,
    AuditController,
    SubjectController,
    MetricsController,
]


def _tollgate_error(_: Request[Any, Any, Any], exc: TollgateError) -> Response[dict[str, Any]]:
    if exc.status_code >= 500:
        log.error("%s: %s", exc.code, exc.message)
    return Response(exc.to_dict(), status_code=exc.status_code)


def _validation_error(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[dict[str, Any]]:
    details = [
        {
            "field": _client_name(request, item.get("key", "?")),
            "message": item.get("message", ""),
            "source": item.get("source", ""),
        }
        for item in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(item, dict)
    ]
    return Response(
        {"error": "invalid_input", "message": "invalid request parameters", "details": details},
        status_code=422,
    )


_HTTP_CODES = {401: "unauthorized", 403: "forbidden"}


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    code = _HTTP_CODES.get(exc.status_code, "error")
    return Response({"error": code, "message": exc.detail}, status_code=exc.status_code)


def _client_name(request: Request[Any, Any, Any], key: str) -> str:
    """The parameter name the client sent (`state`), not the handler's (`action_state`)."""
    field = request.route_handler.parsed_fn_signature.parameters.get(key)
    name = getattr(getattr(field, "kwarg_definition", None), "name", None)
    return name if isinstance(name, str) and name else key


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
        exception_handlers={
            TollgateError: _tollgate_error,
            ValidationException: _validation_error,
            NotAuthorizedException: _http_error,
            PermissionDeniedException: _http_error,
        },
        plugins=[OpenTelemetryPlugin(OpenTelemetryConfig(tracer_provider=provider))],
        openapi_config=OpenAPIConfig(
            title="Tollgate",
            version=__version__,
            description=(
                "Policy-as-code enforcement against adversarial distillation: detectors "
                "submit verdicts, OPA policies decide, actions are planned for the gateways."
            ),
            path="/schema",
            render_plugins=[SwaggerRenderPlugin()],
        ),
        # Logging is the entry point's business (`tollgate serve` configures it).
        logging_config=None,
    )
