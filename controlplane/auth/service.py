"""Issuing and checking tokens. A token is shown once, at creation; only its SHA-256
is stored, and a lookup is cached for a few seconds so ingest pays no query per
request (a revocation takes effect within `CACHE_SECONDS`)."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from controlplane.audit import service as audit
from controlplane.audit.chain import EventDraft
from controlplane.auth import repository
from controlplane.auth.roles import Role
from controlplane.errors import NotFound
from controlplane.store.db import Database
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
    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def create(
        self, name: str, role: Role, actor: str, expires_at: datetime | None = None
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
        async with self._db.write() as session, session.begin():
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

    async def revoke(self, token_id: str, actor: str) -> ApiTokenRow:
        """Revoke an active token; its record, revoked."""
        now = utcnow()
        async with self._db.write() as session, session.begin():
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
        self._cache.clear()
        assert row is not None
        return row

    async def list(self) -> list[ApiTokenRow]:
        async with self._db.read() as session:
            return await repository.list_tokens(session)

    async def authenticate(self, token: str) -> Principal | None:
        """The principal a token stands for, or None (unknown, revoked, expired)."""
        key = hash_token(token)
        cached = self._cache.get(key)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        async with self._db.read() as session:
            row = await repository.by_hash(session, key)
        principal = None
        if row and row.revoked_at is None and (row.expires_at is None or row.expires_at > utcnow()):
            principal = Principal(row.id, row.name, Role(row.role))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (time.monotonic() + CACHE_SECONDS, principal)
        return principal


async def token_by_id(db: Database, token_id: str) -> ApiTokenRow | None:
    """A token's record by its id (the console's session names its token by id)."""
    async with db.read() as session:
        return await repository.get_token(session, token_id)
