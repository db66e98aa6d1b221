"""API token schemas: a token is shown once, at creation; never again."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from controlplane.auth.roles import Role
from controlplane.store.models import ApiTokenRow


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")] = Field(
        description="Who or what holds it; recorded as the actor of what it does."
    )
    role: Role = Field(description="What it may do.")
    expires: Annotated[str, Field(min_length=2, max_length=20)] | None = Field(
        default=None, description="Lifetime such as `90d` or `12h`; default: none."
    )


class TokenOut(BaseModel):
    id: str
    name: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: ApiTokenRow) -> TokenOut:
        return cls(
            id=row.id,
            name=row.name,
            role=row.role,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )


class CreatedTokenOut(TokenOut):
    token: str = Field(description="The token itself: shown only in this answer, stored hashed.")
