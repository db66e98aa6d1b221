"""Errors to HTTP, in one place: every error answer is `{"error", "message", "details"}`.

A 5xx is for a fault of the server only, and each one is logged with its traceback
here and counted in /metrics (`tollgate_http_server_errors_total`, by api.middleware):
detectors retry a 5xx, so one that a client could fix would block its batch forever. A database
that cannot be reached is a 503 with `Retry-After`, like every unavailable error, logged
as one WARNING line: an outage is not a bug, and a traceback per request would bury it.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from sqlalchemy import exc as sql

from controlplane.errors import StoreUnavailable, TollgateError
from controlplane.store.db import OUTAGES, outage_reason

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _where(request: Request[Any, Any, Any]) -> str:
    return f"{request.method} {request.url.path}"


def tollgate_error(request: Request[Any, Any, Any], exc: TollgateError) -> Response[Any]:
    if exc.status_code >= 500:
        log.error("%s: %s: %s", _where(request), exc.code, exc.message, exc_info=exc)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    body = {"error": exc.code, "message": exc.message, "details": exc.details}
    return Response(body, status_code=exc.status_code, headers=headers)


def database_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, OUTAGES):
        # Not a fault of the server: one line (no traceback per request, which would
        # bury the log during an outage), still counted in /metrics as a 503.
        log.warning(
            "%s: the database is unavailable (%s); answered 503",
            _where(request),
            outage_reason(exc),
        )
        unavailable = StoreUnavailable(
            "the database is unavailable; nothing was done: retry later "
            "(operators: see /readyz and the server log)"
        )
        body = {"error": unavailable.code, "message": unavailable.message, "details": []}
        return Response(
            body,
            status_code=unavailable.status_code,
            headers={"Retry-After": str(unavailable.retry_after)},
        )
    return internal_error(request, exc)


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("%s: unexpected %s", _where(request), type(exc).__name__, exc_info=exc)
    body = {
        "error": "internal_error",
        "message": "the server failed on this request; it is logged: report it if it repeats",
        "details": [],
    }
    return Response(body, status_code=500)


def validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """litestar's parameter and body validation, as our 422."""
    details = [
        {
            "field": _client_name(request, item.get("key", "?")),
            "message": item.get("message", ""),
            "source": item.get("source", ""),
        }
        for item in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(item, dict)
    ]
    named = ", ".join(sorted({d["field"] for d in details if d["field"]}))
    message = f"invalid request parameters: {named}" if named else "invalid request parameters"
    return Response(
        {"error": "invalid_input", "message": message, "details": details}, status_code=422
    )


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """litestar's own refusals (unknown route, method not allowed, too large...)."""
    if exc.status_code >= 500:
        return internal_error(request, exc)
    code = _HTTP_CODES.get(exc.status_code, "error")
    return Response(
        {"error": code, "message": exc.detail, "details": []},
        status_code=exc.status_code,
        headers=exc.headers,
    )


def _client_name(request: Request[Any, Any, Any], key: str) -> str:
    """The parameter name the client sent (`state`), not the handler's (`action_state`)."""
    field = request.route_handler.parsed_fn_signature.parameters.get(key)
    name = getattr(getattr(field, "kwarg_definition", None), "name", None)
    return name if isinstance(name, str) and name else key


HANDLERS: dict[Any, Any] = {
    TollgateError: tollgate_error,
    ValidationException: validation_error,
    HTTPException: http_error,
    sql.SQLAlchemyError: database_error,
    Exception: internal_error,
}
"""The app's exception handlers (areas may refine them, as the console does)."""
