"""`/v1/tokens`: bearer tokens, issued, listed and revoked by an admin."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.api.dependencies import provide
from controlplane.auth.guards import principal_of, requires
from controlplane.auth.schemas import CreatedTokenOut, TokenIn, TokenOut
from controlplane.auth.service import TokenService
from controlplane.domain.action import parse_duration
from controlplane.errors import InvalidInput
from controlplane.store.types import utcnow


class TokenController(Controller):
    path = "/v1/tokens"
    tags = ["tokens"]
    guards = [requires()]  # admin only

    @post("/", operation_id="createToken", summary="Create a token", status_code=HTTP_201_CREATED)
    async def create(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[TokenIn],
        tokens: NamedDependency[TokenService],
        session: NamedDependency[AsyncSession],
    ) -> CreatedTokenOut:
        """Issue a token with a role. The token is in this answer and nowhere else: only
        its SHA-256 is stored. Store it in a secret manager."""
        try:
            expires_at = utcnow() + parse_duration(data.expires) if data.expires else None
        except ValueError as exc:
            raise InvalidInput(
                f"expires: {exc}", details=[{"field": "expires", "message": str(exc)}]
            ) from None
        token, row = await tokens.create(
            session, data.name, data.role, actor=principal_of(request).name, expires_at=expires_at
        )
        return CreatedTokenOut(**TokenOut.from_row(row).model_dump(), token=token)

    @get("/", operation_id="listTokens", summary="List tokens")
    async def list_all(
        self, tokens: NamedDependency[TokenService], session: NamedDependency[AsyncSession]
    ) -> list[TokenOut]:
        """Every token by id, name, role and dates (never the token itself)."""
        return [TokenOut.from_row(r) for r in await tokens.list(session)]

    @delete(
        "/{token_id:str}",
        operation_id="revokeToken",
        summary="Revoke a token",
        status_code=HTTP_200_OK,
    )
    async def revoke(
        self,
        request: Request[Any, Any, Any],
        token_id: FromPath[str],
        tokens: NamedDependency[TokenService],
        session: NamedDependency[AsyncSession],
    ) -> TokenOut:
        """Revoke an active token: every replica refuses it within seconds. Its record
        stays listed, with when it was revoked."""
        row = await tokens.revoke(session, token_id, actor=principal_of(request).name)
        return TokenOut.from_row(row)


DEPENDENCIES = {"tokens": provide(lambda runtime: runtime.tokens.service)}
ROUTES = [TokenController]
