"""Customer API schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controlplane.domain.verdict import Identifier

MAX_BATCH = 10_000
MAX_KEYS = 1000


class CustomerIn(BaseModel):
    """One account as the lab records it. `verified` defaults to true: a lab records the
    customers it has verified."""

    model_config = ConfigDict(extra="forbid")

    account_id: Identifier
    org_id: Identifier | None = None
    tier: Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z0-9][a-z0-9_-]*$")] = (
        Field(default="standard", description="e.g. `enterprise`, `research`, `standard`.")
    )
    verified: bool = True
    keys: Annotated[list[Identifier], Field(max_length=MAX_KEYS)] = Field(
        default_factory=list,
        description="The account's API key ids (the lab's ids or SHA-256 fingerprints).",
    )
    contract: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    owner: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="Who at the lab answers for the account."
    )


class CustomerBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customers: Annotated[list[CustomerIn], Field(min_length=1, max_length=MAX_BATCH)]

    @model_validator(mode="after")
    def _one_record_per_account(self) -> CustomerBatch:
        seen: dict[str, int] = {}
        for i, customer in enumerate(self.customers):
            if customer.account_id in seen:
                raise ValueError(
                    f"customers[{i}].account_id: {customer.account_id!r} is also "
                    f"customers[{seen[customer.account_id]}]; send one record per account"
                )
            seen[customer.account_id] = i
        return self


class CustomerOut(BaseModel):
    account_id: str
    org_id: str | None
    tier: str
    verified: bool
    keys: list[str]
    contract: str | None
    owner: str | None
    created_at: datetime
    updated_at: datetime


class CustomerPage(BaseModel):
    customers: list[CustomerOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class ImportResult(BaseModel):
    created: int
    updated: int
