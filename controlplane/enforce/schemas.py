"""Connector API schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class ConnectorOut(BaseModel):
    name: str
    type: str
    providers: list[str]
    state: Literal["healthy", "degraded", "down"] = Field(
        description="`down`: the gateway cannot be reached or applies nothing; `degraded`: "
        "it works but holds failures (see `failed`, `rejected`, `last_error`)."
    )
    healthy: bool
    gateway: str = Field(description="What the connector talks to.")
    detail: str
    last_reconcile_at: datetime | None
    last_success_at: datetime | None
    desired: int = Field(description="Entries the gateway should hold (last reconcile).")
    applied: int = Field(description="Of those, entries it held after the last reconcile.")
    failed: int = Field(description="Entries that failed for now, retried with backoff.")
    rejected: int = Field(
        description="Entries the gateway can never hold (permanent failures, not retried)."
    )
    drift_repaired: int = Field(description="Entries re-applied after they vanished.")
    cursor: int = Field(description="The last change of the change log applied here.")
    pending_changes: int = Field(description="Changes logged and not yet applied here.")
    lag_seconds: float = Field(description="Age of the oldest change not yet applied.")
    last_error: str | None


class ReconcileOut(BaseModel):
    connector: str
    ok: bool
    desired: int
    applied: int
    added: int
    removed: int
    changed: int
    failed: int
    rejected: int
    drift_repaired: int
    error: str | None
    failures: list[str]
