"""Route guards: a bearer token (or the console's session) with one of the roles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from controlplane.auth.roles import Role
from controlplane.auth.service import Principal

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Any]


def requires(*roles: Role) -> Guard:
    """Allow callers whose token has one of `roles` (admin always may)."""
    allowed = frozenset(roles) | {Role.ADMIN}

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = await authenticate(connection)
        if principal.role not in allowed:
            raise PermissionDeniedException(
                f"role {principal.role.value} may not do this; it needs one of "
                f"{', '.join(sorted(r.value for r in allowed))}"
            )

    return guard


def requires_api_key(*roles: Role) -> Guard:
    """As `requires`, for clients that send their token in `X-Api-Key` (CrowdSec
    bouncers); a bearer token is taken too."""
    allowed = frozenset(roles) | {Role.ADMIN}

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = await authenticate(connection, api_key=True)
        if principal.role not in allowed:
            raise PermissionDeniedException(
                f"role {principal.role.value} may not do this; it needs one of "
                f"{', '.join(sorted(r.value for r in allowed))}"
            )

    return guard


async def authenticate(
    connection: ASGIConnection[Any, Any, Any, Any], *, api_key: bool = False
) -> Principal:
    cached = connection.scope.get("tollgate_principal")
    if isinstance(cached, Principal):
        return cached
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if api_key and connection.headers.get("x-api-key", "").strip():
        scheme, token = "bearer", connection.headers["x-api-key"]
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException(
            "send `X-Api-Key: <token>` (a bouncer token: `tollgate token create --role bouncer`)"
            if api_key
            else "send `Authorization: Bearer <token>`; create one with `tollgate token create`"
        )
    principal = await connection.app.state.runtime.tokens.authenticate(token.strip())
    if principal is None:
        raise NotAuthorizedException("the token is unknown, revoked or expired")
    connection.scope["tollgate_principal"] = principal  # type: ignore[typeddict-unknown-key]
    return principal  # type: ignore[no-any-return]


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The caller a guard already authenticated."""
    principal = connection.scope.get("tollgate_principal")
    if not isinstance(principal, Principal):
        raise NotAuthorizedException("not authenticated")
    return principal
