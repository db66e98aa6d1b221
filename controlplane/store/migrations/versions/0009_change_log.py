"""enforcement change log, connector cursors, permanent failures

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import controlplane.store.types

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enforcement_change",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("target_kind", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("target_value", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("cause", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("action_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("trace_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("span_id", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("at", controlplane.store.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_change_kind_seq", "enforcement_change", ["target_kind", "seq"])
    op.create_table(
        "change_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO change_head (id, seq) VALUES (1, 0)")
    op.create_table(
        "connector_cursor",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("updated_at", controlplane.store.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("action_enforcement") as batch:
        batch.add_column(
            sa.Column("retryable", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    with op.batch_alter_table("connector_status") as batch:
        batch.add_column(sa.Column("rejected", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_action_expires", "action", ["expires_at"])
    op.create_index("ix_enforcement_connector_state", "action_enforcement", ["connector", "state"])
    op.create_index("ix_indicator_created", "indicator", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_indicator_created", table_name="indicator")
    op.drop_index("ix_enforcement_connector_state", table_name="action_enforcement")
    op.drop_index("ix_action_expires", table_name="action")
    with op.batch_alter_table("connector_status") as batch:
        batch.drop_column("rejected")
    with op.batch_alter_table("action_enforcement") as batch:
        batch.drop_column("retryable")
    op.drop_table("connector_cursor")
    op.drop_table("change_head")
    op.drop_index("ix_change_kind_seq", table_name="enforcement_change")
    op.drop_table("enforcement_change")
