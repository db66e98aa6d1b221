"""appeals, lifts, exemption ends, action references

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import controlplane.store.types

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_text = sqlmodel.sql.sqltypes.AutoString
_utc = controlplane.store.types.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "appeal",
        sa.Column("id", _text(length=40), nullable=False),
        sa.Column("provider", _text(length=63), nullable=False),
        sa.Column("subject_kind", _text(length=10), nullable=False),
        sa.Column("subject_value", _text(length=200), nullable=False),
        sa.Column("reference", _text(length=16), nullable=True),
        sa.Column("statement", _text(), nullable=False),
        sa.Column("contact", _text(length=200), nullable=False),
        sa.Column("state", _text(length=16), nullable=False),
        sa.Column("filed_by", _text(length=200), nullable=False),
        sa.Column("filed_at", _utc(), nullable=False),
        sa.Column("decided_by", _text(length=200), nullable=True),
        sa.Column("decided_at", _utc(), nullable=True),
        sa.Column("decision_reason", _text(), nullable=True),
        sa.Column("exemption_id", _text(length=40), nullable=True),
        sa.Column("trace_id", _text(length=32), nullable=True),
        sa.Column("span_id", _text(length=16), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_appeal_subject", "appeal", ["provider", "subject_kind", "subject_value"])
    op.create_index("ix_appeal_state_filed", "appeal", ["state", "filed_at"])
    op.create_table(
        "appeal_action",
        sa.Column("appeal_id", _text(length=40), nullable=False),
        sa.Column("action_id", _text(length=40), nullable=False),
        sa.Column("lifted_at", _utc(), nullable=True),
        sa.ForeignKeyConstraint(["appeal_id"], ["appeal.id"]),
        sa.ForeignKeyConstraint(["action_id"], ["action.id"]),
        sa.PrimaryKeyConstraint("appeal_id", "action_id"),
    )
    op.create_index("ix_appeal_action_action_id", "appeal_action", ["action_id"])
    op.create_table(
        "lift",
        sa.Column("id", _text(length=40), nullable=False),
        sa.Column("action_id", _text(length=40), nullable=False),
        sa.Column("provider", _text(length=63), nullable=False),
        sa.Column("type", _text(length=20), nullable=False),
        sa.Column("target_kind", _text(length=10), nullable=False),
        sa.Column("target_value", _text(length=200), nullable=False),
        sa.Column("rule", _text(length=200), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("cause", _text(length=16), nullable=False),
        sa.Column("appeal_id", _text(length=40), nullable=True),
        sa.Column("actor", _text(length=200), nullable=False),
        sa.Column("reason", _text(), nullable=False),
        sa.Column("at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(["action_id"], ["action.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_lift_target", "lift", ["provider", "target_kind", "target_value"])
    op.create_index("ix_lift_action_id", "lift", ["action_id"])
    op.create_index("ix_lift_at", "lift", ["at"])
    with op.batch_alter_table("exemption") as batch:
        batch.add_column(sa.Column("ended_at", _utc(), nullable=True))
        batch.add_column(sa.Column("ended_by", _text(length=200), nullable=True))
        batch.add_column(sa.Column("appeal_id", _text(length=40), nullable=True))
    op.create_index("ix_exemption_expires", "exemption", ["expires_at"])
    with op.batch_alter_table("action") as batch:
        batch.add_column(sa.Column("reference", _text(length=16), nullable=True))
    op.create_index("ix_action_reference", "action", ["reference"])
    # An upheld appeal about an org lifts what its verdicts planned: found by index.
    op.create_index("ix_verdict_provider_org", "verdict", ["provider", "org_id"])
    op.create_index("ix_action_created", "action", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_action_created", table_name="action")
    op.drop_index("ix_verdict_provider_org", table_name="verdict")
    op.drop_index("ix_action_reference", table_name="action")
    with op.batch_alter_table("action") as batch:
        batch.drop_column("reference")
    op.drop_index("ix_exemption_expires", table_name="exemption")
    with op.batch_alter_table("exemption") as batch:
        batch.drop_column("appeal_id")
        batch.drop_column("ended_by")
        batch.drop_column("ended_at")
    op.drop_index("ix_lift_at", table_name="lift")
    op.drop_index("ix_lift_action_id", table_name="lift")
    op.drop_index("ix_lift_target", table_name="lift")
    op.drop_table("lift")
    op.drop_index("ix_appeal_action_action_id", table_name="appeal_action")
    op.drop_table("appeal_action")
    op.drop_index("ix_appeal_state_filed", table_name="appeal")
    op.drop_index("ix_appeal_subject", table_name="appeal")
    op.drop_table("appeal")
