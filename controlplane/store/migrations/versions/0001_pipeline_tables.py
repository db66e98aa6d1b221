"""pipeline tables

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

import controlplane.store.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", controlplane.store.types.UTCDateTime(), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=True),
        sa.Column("verdict_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("decision_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("action_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("trace_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("prev_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.create_index("ix_audit_action", ["action_id"], unique=False)
        batch_op.create_index("ix_audit_verdict", ["verdict_id"], unique=False)

    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "exemption",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("subject_kind", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("subject_value", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("expires_at", controlplane.store.types.UTCDateTime(), nullable=True),
        sa.Column("created_at", controlplane.store.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("exemption", schema=None) as batch_op:
        batch_op.create_index(
            "ix_exemption_subject", ["provider", "subject_kind", "subject_value"], unique=False
        )

    op.create_table(
        "indicator",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("value", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("tlp", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("expires_at", controlplane.store.types.UTCDateTime(), nullable=True),
        sa.Column("created_at", controlplane.store.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "verdict",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("detector_name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("detector_version", sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
        sa.Column("account_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("api_key_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("org_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("observed_at", controlplane.store.types.UTCDateTime(), nullable=False),
        sa.Column("received_at", controlplane.store.types.UTCDateTime(), nullable=False),
        sa.Column(
            "body",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("content_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("trace_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("verdict", schema=None) as batch_op:
        batch_op.create_index(
            "ix_verdict_provider_account", ["provider", "account_id"], unique=False
        )
        batch_op.create_index(
            "ix_verdict_provider_api_key", ["provider", "api_key_id"], unique=False
        )
        batch_op.create_index("ix_verdict_status", ["status"], unique=False)

    op.create_table(
        "decision",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("verdict_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("policy_revision", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("entrypoint", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("engine", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column(
            "input",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("trace_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("decided_at", controlplane.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["verdict_id"],
            ["verdict.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("verdict_id"),
    )
    op.create_table(
        "action",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("decision_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("verdict_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("target_kind", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("target_value", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column(
            "params",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("ttl_seconds", sa.Float(), nullable=True),
        sa.Column("expires_at", controlplane.store.types.UTCDateTime(), nullable=True),
        sa.Column("rule", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("policy_revision", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("trace_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("created_at", controlplane.store.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", controlplane.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["decision_id"],
            ["decision.id"],
        ),
        sa.ForeignKeyConstraint(
            ["verdict_id"],
            ["verdict.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("action", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_action_decision_id"), ["decision_id"], unique=False)
        batch_op.create_index("ix_action_state_provider", ["state", "provider"], unique=False)
        batch_op.create_index("ix_action_target", ["target_kind", "target_value"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("action", schema=None) as batch_op:
        batch_op.drop_index("ix_action_target")
        batch_op.drop_index("ix_action_state_provider")
        batch_op.drop_index(batch_op.f("ix_action_decision_id"))

    op.drop_table("action")
    op.drop_table("decision")
    with op.batch_alter_table("verdict", schema=None) as batch_op:
        batch_op.drop_index("ix_verdict_status")
        batch_op.drop_index("ix_verdict_provider_api_key")
        batch_op.drop_index("ix_verdict_provider_account")

    op.drop_table("verdict")
    op.drop_table("indicator")
    with op.batch_alter_table("exemption", schema=None) as batch_op:
        batch_op.drop_index("ix_exemption_subject")

    op.drop_table("exemption")
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_verdict")
        batch_op.drop_index("ix_audit_action")

    op.drop_table("audit_event")
