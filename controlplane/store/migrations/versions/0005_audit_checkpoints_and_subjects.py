"""audit checkpoints and the audit subject index

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

`audit_checkpoint`: signed (seq, hash) statements about the chain. `audit_subject`:
which subjects each audit event concerns (derived, rebuilt from the chain at will),
with `audit_subject_head` recording how far it has got. Indexes for time-range
queries of the audit trail and for the /metrics action gauge.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import controlplane.store.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoint",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("at", controlplane.store.types.UTCDateTime(), nullable=False),
        sa.Column("key_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("signature", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_checkpoint_seq", "audit_checkpoint", ["seq"], unique=False)
    op.create_table(
        "audit_subject",
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("value", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("kind", "value", "seq"),
    )
    op.create_table(
        "audit_subject_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # Like audit_head (0003): the row exists before any indexer runs, so two first
    # runs cannot race on creating it.
    op.execute("INSERT INTO audit_subject_head (id, seq) VALUES (1, 0)")
    op.create_index("ix_audit_at", "audit_event", ["at"], unique=False)
    op.create_index("ix_action_type_state", "action", ["type", "state"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_action_type_state", table_name="action")
    op.drop_index("ix_audit_at", table_name="audit_event")
    op.drop_table("audit_subject_head")
    op.drop_table("audit_subject")
    op.drop_index("ix_audit_checkpoint_seq", table_name="audit_checkpoint")
    op.drop_table("audit_checkpoint")
