"""sighting: per-scope tallies and acted-on flags, so a busy org costs one row

A verdict's `history.account` and `history.org` count the keys, networks and accounts
its account and org were ever seen with, and how many of those keys are revoked and
accounts suspended now. They were counted from every sighting of the scope, read for
each batch, then every key's and account's active actions: a cost that grew with
everything a busy customer ever used. The tally keeps the counts (and the lowest 64
networks, the ones the input lists) as sightings are inserted; `acted_at` flags the
sightings of keys revoked and accounts suspended, read through a partial index, so only
those are checked against the active actions. `ix_sighting_target` finds who saw a key
or an account when it is acted on.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

import controlplane.store.types

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

FIRST_NETWORKS = 64
_J = controlplane.store.types.JSONDocument
_T = controlplane.store.types.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table("sighting", schema=None) as batch_op:
        batch_op.add_column(sa.Column("acted_at", _T(), nullable=True))
    op.create_index(
        "ix_sighting_target",
        "sighting",
        ["provider", "kind", "value"],
        sqlite_where=sa.text("kind <> 'network'"),
        postgresql_where=sa.text("kind <> 'network'"),
    )
    op.create_index(
        "ix_sighting_acted",
        "sighting",
        ["provider", "scope", "scope_id"],
        sqlite_where=sa.text("acted_at IS NOT NULL"),
        postgresql_where=sa.text("acted_at IS NOT NULL"),
    )
    tally = op.create_table(
        "sighting_tally",
        sa.Column("provider", sa.String(length=63), nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("scope_id", sa.String(length=200), nullable=False),
        sa.Column("keys", sa.Integer(), nullable=False),
        sa.Column("networks", sa.Integer(), nullable=False),
        sa.Column("accounts", sa.Integer(), nullable=False),
        sa.Column("first_networks", _J, nullable=False),
        sa.PrimaryKeyConstraint("provider", "scope", "scope_id"),
    )
    _backfill(tally)


def _backfill(tally: sa.Table) -> None:
    """Tallies from the sightings, in one pass in key order; flags on the sightings of
    keys and accounts with an active, unexpired revocation or suspension."""
    bind = op.get_bind()
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    result = bind.execute(
        sa.text(
            "SELECT provider, scope, scope_id, kind, value FROM sighting "
            "ORDER BY provider, scope, scope_id, kind, value"
        ).execution_options(stream_results=True)
    )
    for provider, scope, scope_id, kind, value in result:
        if current is None or (current["provider"], current["scope"], current["scope_id"]) != (
            provider,
            scope,
            scope_id,
        ):
            current = {
                "provider": provider,
                "scope": scope,
                "scope_id": scope_id,
                "keys": 0,
                "networks": 0,
                "accounts": 0,
                "first_networks": [],
            }
            rows.append(current)
        if kind == "api_key":
            current["keys"] += 1
        elif kind == "account":
            current["accounts"] += 1
        elif kind == "network":
            current["networks"] += 1
            if len(current["first_networks"]) < FIRST_NETWORKS:  # in order: the lowest
                current["first_networks"].append(value)
        if len(rows) >= 5000:
            op.bulk_insert(tally, rows[:-1])
            rows = rows[-1:]
    if rows:
        op.bulk_insert(tally, rows)
    bind.execute(
        sa.text(
            "UPDATE sighting SET acted_at = :now WHERE kind <> 'network' AND EXISTS ("
            "SELECT 1 FROM action WHERE action.provider = sighting.provider "
            "AND action.target_kind = sighting.kind AND action.target_value = sighting.value "
            "AND NOT action.shadow AND action.state IN ('pending', 'applied', 'failed') "
            "AND ((action.type = 'revoke_key' AND action.target_kind = 'api_key') "
            "OR (action.type = 'suspend' AND action.target_kind = 'account')))"
        ).bindparams(sa.bindparam("now", type_=_T())),
        {"now": now},
    )


def downgrade() -> None:
    op.drop_table("sighting_tally")
    op.drop_index("ix_sighting_acted", "sighting")
    op.drop_index("ix_sighting_target", "sighting")
    with op.batch_alter_table("sighting", schema=None) as batch_op:
        batch_op.drop_column("acted_at")
    bind = op.get_bind()
    if (
        bind.dialect.name == "sqlite"
        and bind.exec_driver_sql(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'sqlite_stat1'"
        ).first()
    ):
        for gone in ("ix_sighting_acted", "ix_sighting_target", "sighting_tally"):
            bind.exec_driver_sql("DELETE FROM sqlite_stat1 WHERE idx = ? OR tbl = ?", (gone, gone))
