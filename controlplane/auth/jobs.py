"""Tokens outside a request: the CLI's local paths, the demo, whoever holds the
runtime. Each call is a unit of work of its own around the token service; a request
hands the service its own session instead (`controllers.py`, the guards)."""

from __future__ import annotations

from datetime import datetime

from controlplane.auth.roles import Role
from controlplane.auth.service import Principal, TokenService
from controlplane.store.db import Database
from controlplane.store.models import ApiTokenRow


class Tokens:
    def __init__(self, db: Database, service: TokenService | None = None) -> None:
        self._db = db
        self.service = service or TokenService()
        """The service the requests use (one lookup cache for both)."""

    async def create(
        self, name: str, role: Role, actor: str, expires_at: datetime | None = None
    ) -> tuple[str, ApiTokenRow]:
        """A new token (returned once, never stored) and its record."""
        async with self._db.transaction() as session:
            return await self.service.create(session, name, role, actor, expires_at)

    async def revoke(self, token_id: str, actor: str) -> ApiTokenRow:
        async with self._db.transaction() as session:
            return await self.service.revoke(session, token_id, actor)

    async def list(self) -> list[ApiTokenRow]:
        async with self._db.read() as session:
            return await self.service.list(session)

    async def authenticate(self, token: str) -> Principal | None:
        """The principal a token stands for, or None; a cached answer opens no session
        (every authenticated request asks)."""
        known, principal = self.service.cached(token)
        if known:
            return principal
        async with self._db.read() as session:
            return await self.service.authenticate(session, token)
