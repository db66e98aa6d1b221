"""Issuing and checking tokens. A token is shown once, at creation; only its SHA-256
is stored, and a lookup is cached for a few seconds so ingest pays no query per
request (a revocation takes effect within `CACHE_SECONDS`). Everything here works in
the session its caller holds: the request's, or a job's (`auth/jobs.py`)."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.audit import service as audit
from controlplane.audit.chain import EventDraft
from controlplane.auth import repository
from controlplane.auth.roles import Role
from controlplane.errors import NotFound
from controlplane.store.db import after_commit
from controlplane.store.models import ApiTokenRow, new_id
from controlplane.store.types import utcnow

PREFIX = "tg_"
CACHE_SECONDS = 10.0


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name (recorded as the actor) and role."""

    token_id: str
    name: str
    role: Role


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenService:
    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def create(
        self,
        session: AsyncSession,
        name: str,
        role: Role,
        actor: str,
        expires_at: datetime | None = None,
    ) -> tuple[str, ApiTokenRow]:
        """A new token (returned once, never stored) and its record."""
        token = PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        row = ApiTokenRow(
            id=new_id("tok"),
            name=name,
            role=role.value,
            token_hash=hash_token(token),
            created_at=now,
            expires_at=expires_at,
            revoked_at=None,
        )
        await repository.insert_token(session, row.model_dump())
        await audit.record(
            session,
            [
                EventDraft(
                    type="token.created",
                    actor=actor,
                    at=now,
                    payload={
                        "token_id": row.id,
                        "name": name,
                        "role": role.value,
                        "expires_at": expires_at.isoformat() if expires_at else None,
                    },
                )
            ],
        )
        return token, row

    async def revoke(self, session: AsyncSession, token_id: str, actor: str) -> ApiTokenRow:
        """Revoke an active token; its record, revoked."""
        now = utcnow()
        if not await repository.revoke(session, token_id, now):
            raise NotFound(f"no active token {token_id!r}: see `tollgate token list`")
        await audit.record(
            session,
            [
                EventDraft(
                    type="token.revoked",
                    actor=actor,
                    at=now,
                    payload={"token_id": token_id},
                )
            ],
        )
        row = await repository.get_token(session, token_id)
        # Once committed, so no lookup caches the token as valid again in between.
        after_commit(session, self._cache.clear)
        assert row is not None
        return row

    async def list(self, session: AsyncSession) -> list[ApiTokenRow]:
        return await repository.list_tokens(session)

    def cached(self, token: str) -> tuple[bool, Principal | None]:
        """(known, principal): what the cache says of a token, without a session."""
        cached = self._cache.get(hash_token(token))
        if cached and cached[0] > time.monotonic():
            return True, cached[1]
        return False, None

    async def authenticate(self, session: AsyncSession, token: str) -> Principal | None:
        """The principal a token stands for, or None (unknown, revoked, expired); the
        session is used only when the cache does not know the token."""
        known, principal = self.cached(token)
        if known:
            return principal
        key = hash_token(token)
        row = await repository.by_hash(session, key)
        principal = None
        if row and row.revoked_at is None and (row.expires_at is None or row.expires_at > utcnow()):
            principal = Principal(row.id, row.name, Role(row.role))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (time.monotonic() + CACHE_SECONDS, principal)
        return principal


async def token_by_id(session: AsyncSession, token_id: str) -> ApiTokenRow | None:
    """A token's record by its id (the console's session names its token by id)."""
    return await repository.get_token(session, token_id)
