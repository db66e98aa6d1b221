"""intel exchange: indicator kinds, markings, provenance; TAXII objects; peer state

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import controlplane.store.types

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("indicator") as batch:
        batch.add_column(
            sa.Column(
                "pap",
                sqlmodel.sql.sqltypes.AutoString(length=10),
                nullable=False,
                server_default="green",
            )
        )
        batch.add_column(sa.Column("detail", controlplane.store.types.JSONDocument, nullable=True))
        batch.add_column(
            sa.Column("first_seen", controlplane.store.types.UTCDateTime(), nullable=True)
        )
        batch.add_column(
            sa.Column("last_seen", controlplane.store.types.UTCDateTime(), nullable=True)
        )
        batch.add_column(sa.Column("decay_days", sa.Float(), nullable=True))
        batch.add_column(
            sa.Column(
                "origin",
                sqlmodel.sql.sqltypes.AutoString(length=63),
                nullable=False,
                server_default="local",
            )
        )
        batch.add_column(
            sa.Column("stix_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True)
        )
        batch.add_column(
            sa.Column("modified", controlplane.store.types.UTCDateTime(), nullable=True)
        )
        batch.add_column(
            sa.Column("revoked", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("revoked_reason", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True)
        )
    op.create_index("ix_indicator_stix_id", "indicator", ["stix_id"])
    op.create_index("ix_indicator_modified", "indicator", ["modified"])
    op.create_table(
        "intel_object",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("collection", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("stix_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("version", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("date_added", controlplane.store.types.UTCDateTime(), nullable=False),
        sa.Column("latest", sa.Boolean(), nullable=False),
        sa.Column("body", controlplane.store.types.JSONDocument, nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_intel_object_added", "intel_object", ["collection", "date_added"])
    op.create_index("ix_intel_object_stix", "intel_object", ["collection", "stix_id"])
    op.create_table(
        "intel_peer",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("cursor", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("last_pull_at", controlplane.store.types.UTCDateTime(), nullable=True),
        sa.Column("last_success_at", controlplane.store.types.UTCDateTime(), nullable=True),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("retractions", sa.Integer(), nullable=False),
        sa.Column("lifted", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("intel_peer")
    op.drop_index("ix_intel_object_stix", "intel_object")
    op.drop_index("ix_intel_object_added", "intel_object")
    op.drop_table("intel_object")
    op.drop_index("ix_indicator_modified", "indicator")
    op.drop_index("ix_indicator_stix_id", "indicator")
    with op.batch_alter_table("indicator") as batch:
        for column in (
            "revoked_reason",
            "revoked",
            "modified",
            "stix_id",
            "origin",
            "decay_days",
            "last_seen",
            "first_seen",
            "detail",
            "pap",
        ):
            batch.drop_column(column)
