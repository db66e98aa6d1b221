"""ASGI middleware of the API: counting server errors, and a true `Allow` header."""

from __future__ import annotations

from typing import Any

from litestar.datastructures import MutableScopeHeaders
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from controlplane.telemetry import metrics


def count_server_errors(app: ASGIApp) -> ASGIApp:
    """Count every answer with a 5xx status, whatever produced it."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 500:
                metrics.HTTP_SERVER_ERRORS.labels(str(message["status"])).inc()
            await send(message)

        await app(scope, receive, counting)

    return middleware


def true_allow(app: ASGIApp) -> ASGIApp:
    """litestar answers OPTIONS itself, but its `Allow` names the methods of one of the
    routes sharing a path only (GET and POST of one path are often two): name them all."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != "OPTIONS":
            await app(scope, receive, send)
            return
        allowed = _allowed(scope)

        async def allowing(message: Message) -> None:
            if message["type"] == "http.response.start" and allowed:
                MutableScopeHeaders.from_message(message)["allow"] = allowed
            await send(message)

        await app(scope, receive, allowing)

    return middleware


def _allowed(scope: Scope) -> str:
    paths: set[str] = set(getattr(scope.get("route_handler"), "paths", ()))
    methods: set[Any] = set()
    for route in scope["app"].routes:
        if isinstance(route, HTTPRoute) and route.path in paths:
            methods |= set(route.methods)
    return ", ".join(sorted(methods))
