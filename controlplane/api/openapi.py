"""The OpenAPI document as the API really behaves, and the docs page served from here.

litestar documents what it can see in a handler's signature: a 400 with its own error
shape for invalid parameters, no security, none of the statuses our errors carry. The
API answers otherwise (one error shape, `api.errors`), so every rendering of the
document passes through `true_document`, which states for each operation the bearer
scheme its guards demand and every status it can answer, all with the real shape.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, get_args

from litestar import Litestar, Request
from litestar.datastructures import CacheControlHeader
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.router import Router
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from pydantic import BaseModel

from controlplane import __version__
from controlplane.api.body import MAX_BODY
from controlplane.api.schemas import ErrorBody
from controlplane.domain.jsonsafe import MAX_DEPTH

SCHEME = "bearer"
ERROR_BODY = "#/components/schemas/ErrorBody"
ASSETS = "/assets"
"""Where the docs page's scripts and styles are served, under the schema path."""

EXTRA_STATUSES: dict[str, set[int]] = {
    "submitVerdicts": {409},
    "liftAction": {404, 409},
    "reconcileConnector": {404},
    "policyImpact": {404},
    "rollbackPolicy": {404, 409},
    "subjectHistory": {404},
    "signAuditCheckpoint": {409},
}
"""Statuses an operation answers besides those its shape implies (see `_statuses`)."""
BODIES: dict[str, list[str]] = {
    "exportAudit": ["application/x-ndjson", "text/csv"],
    "remediationReport": ["application/json", "text/csv", "text/markdown"],
}
"""Operations whose 200 body is not (only) JSON, with the media types they answer; a
JSON body keeps the schema its handler declares, the others are text."""
WITHOUT_DATABASE = {"healthz", "metrics"}
"""Operations that answer without the database (/metrics reports it down as a gauge)."""

_MEANING = {
    401: "No bearer token, or one that is unknown, revoked or expired.",
    403: "The token's role may not do this.",
    404: "Nothing with that id or name.",
    409: "The request conflicts with the current state; nothing was changed.",
    413: f"The body is over {MAX_BODY // 1024 // 1024} MiB.",
    415: "The body is not labelled `application/json`.",
    422: (
        "Invalid input: `details` names each bad field (e.g. `verdicts[0].signals.x`); "
        "nothing was stored. Refused anywhere in a body: NaN, infinities and numbers "
        "too large for a double, lone surrogates, NUL characters, and nesting deeper "
        f"than {MAX_DEPTH} levels."
    ),
    503: "The database or the policy engine is unavailable: retry after `Retry-After` s.",
}


def config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Tollgate",
        version=__version__,
        description=(
            "Policy-as-code enforcement against adversarial distillation: detectors "
            "submit verdicts, OPA policies decide, actions are planned for the gateways."
        ),
        path="/schema",
        render_plugins=[TrueJson(), LocalSwagger()],
    )


class TrueJson(JsonRenderPlugin):
    """`/schema/openapi.json`."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, true_document(request.app, openapi_schema))


class LocalSwagger(SwaggerRenderPlugin):
    """`/schema/swagger` with Swagger UI's files from the `swagger-ui-py` package: the
    page works without the internet (litestar's default loads them from a CDN)."""

    def __init__(self) -> None:
        base = f"/schema{ASSETS}"
        super().__init__(
            js_url=f"{base}/swagger-ui-bundle.js",
            css_url=f"{base}/swagger-ui.css",
            standalone_preset_js_url=f"{base}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{base}/favicon-32x32.png'>",
            path="/swagger",
        )

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, true_document(request.app, openapi_schema))

    def receive_router(self, router: Router) -> None:
        super().receive_router(router)
        router.register(
            create_static_files_router(
                path=ASSETS,
                directories=[swagger_ui_dist()],
                include_in_schema=False,
                cache_control=CacheControlHeader(max_age=3600),
            )
        )


def swagger_ui_dist() -> Path:
    """Swagger UI's dist files as shipped in the `swagger-ui-py` wheel (not imported:
    its package init loads adapters for other frameworks)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed: reinstall Tollgate")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def true_document(app: Litestar, document: dict[str, Any]) -> dict[str, Any]:
    """`document` (litestar's, cached per app) corrected in place; idempotent."""
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from `tollgate token create`; its role decides what it may do.",
    }
    error = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = components.setdefault("schemas", {})
    schemas.update(error.pop("$defs", {}))
    schemas["ErrorBody"] = error
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        item = document.get("paths", {}).get(route.path_format or "/")
        if item is None:
            continue
        for method, (handler, _) in route.route_handler_map.items():
            operation = item.get(method.lower())
            if operation is not None and handler.resolve_include_in_schema():
                _correct(operation, route, handler)
                _validated_body(operation, handler, schemas)
        item["options"] = _options(item)
    return document


def _options(item: dict[str, Any]) -> dict[str, Any]:
    """litestar answers OPTIONS on every path itself (204 with `Allow`), behind the
    guards of the path's other operations."""
    siblings = [op for method, op in item.items() if method != "options"]
    options: dict[str, Any] = {
        "summary": "Allowed methods",
        "responses": {
            "204": {
                "description": "The methods this path allows, in `Allow`.",
                "headers": {"Allow": {"schema": {"type": "string"}}},
            }
        },
    }
    # Any value: litestar's answer does not validate the path's parameters.
    path_parameters = {
        p["name"]: {"name": p["name"], "in": "path", "required": True, "schema": {"type": "string"}}
        for op in siblings
        for p in op.get("parameters", [])
        if p.get("in") == "path"
    }
    if path_parameters:
        options["parameters"] = list(path_parameters.values())
        # A value holding `/` does not reach the route at all.
        options["responses"]["404"] = {
            "description": _MEANING[404],
            "content": {"application/json": {"schema": {"$ref": ERROR_BODY}}},
        }
    guarded = [op for op in siblings if op.get("security")]
    if guarded:
        options["security"] = guarded[0]["security"]
        for status in (401, 403):
            options["responses"][str(status)] = guarded[0]["responses"][str(status)]
    return options


def _validated_body(
    operation: dict[str, Any], handler: HTTPRouteHandler, schemas: dict[str, Any]
) -> None:
    """A `data` body documented by the pydantic model that validates it: litestar's own
    rendering of the model drops constraints (`extra="forbid"` among them)."""
    data = handler.parsed_fn_signature.parameters.get("data")
    # An optional body (`Model | None`) is validated by its model all the same.
    model = next(
        (t for t in get_args(getattr(data, "annotation", None)) if t is not type(None)),
        getattr(data, "annotation", None),
    )
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    content = operation.get("requestBody", {}).get("content", {})
    for media in content.values():
        media["schema"] = {"$ref": f"#/components/schemas/{model.__name__}"}


def _correct(operation: dict[str, Any], route: HTTPRoute, handler: HTTPRouteHandler) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("400", None)  # parameter errors are 422s in our shape (api.errors)
    media_types = BODIES.get(operation.get("operationId", ""))
    if media_types and "200" in responses:
        declared = responses["200"].get("content", {})
        responses["200"]["content"] = {
            m: declared.get(m, {"schema": {"type": "string"}}) for m in media_types
        }
    guarded = bool(handler.resolve_guards())
    if guarded:
        operation["security"] = [{SCHEME: []}]
    for status in sorted(_statuses(operation, route, handler, guarded)):
        declared = responses.get(str(status))
        response = declared or {"description": _MEANING[status]}
        if not declared or status != 503 or "content" not in declared:
            response["content"] = {"application/json": {"schema": {"$ref": ERROR_BODY}}}
        if status == 503 and not declared:
            response["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer"},
                }
            }
        responses[str(status)] = response


def _statuses(
    operation: dict[str, Any], route: HTTPRoute, handler: HTTPRouteHandler, guarded: bool
) -> set[int]:
    statuses = set(EXTRA_STATUSES.get(operation.get("operationId", ""), set()))
    if guarded:
        statuses |= {401, 403}
    if route.path_parameters:
        statuses |= {404, 422}
    if operation.get("parameters"):
        statuses.add(422)
    if "requestBody" in operation or "data" in handler.parsed_fn_signature.parameters:
        statuses |= {413, 415, 422}
    if operation.get("operationId") not in WITHOUT_DATABASE:
        statuses.add(503)
    return statuses
