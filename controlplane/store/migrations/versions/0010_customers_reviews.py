"""customers, key and network sightings, reviews, suspension children

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import controlplane.store.types

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString
_T = controlplane.store.types.UTCDateTime
_J = controlplane.store.types.JSONDocument  # an instance, not a class


def upgrade() -> None:
    op.create_table(
        "customer",
        sa.Column("account_id", _S(length=200), nullable=False),
        sa.Column("org_id", _S(length=200), nullable=True),
        sa.Column("tier", _S(length=40), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("keys", _J, nullable=False),
        sa.Column("contract", _S(length=200), nullable=True),
        sa.Column("owner", _S(length=200), nullable=True),
        sa.Column("created_at", _T(), nullable=False),
        sa.Column("updated_at", _T(), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_index("ix_customer_org", "customer", ["org_id"])
    op.create_table(
        "sighting",
        sa.Column("provider", _S(length=63), nullable=False),
        sa.Column("scope", _S(length=10), nullable=False),
        sa.Column("scope_id", _S(length=200), nullable=False),
        sa.Column("kind", _S(length=10), nullable=False),
        sa.Column("value", _S(length=200), nullable=False),
        sa.Column("first_seen", _T(), nullable=False),
        sa.Column("last_seen", _T(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "scope", "scope_id", "kind", "value"),
    )
    op.create_index("ix_sighting_value", "sighting", ["provider", "kind", "value"])
    op.create_table(
        "review",
        sa.Column("id", _S(length=40), nullable=False),
        sa.Column("provider", _S(length=63), nullable=False),
        sa.Column("verdict_id", _S(length=200), nullable=False),
        sa.Column("decision_id", _S(length=40), nullable=False),
        sa.Column("action_id", _S(length=40), nullable=False),
        sa.Column("subject_kind", _S(length=10), nullable=False),
        sa.Column("subject_value", _S(length=200), nullable=False),
        sa.Column("rule", _S(length=200), nullable=False),
        sa.Column("reason", _S(), nullable=False),
        sa.Column("withheld", _J, nullable=False),
        sa.Column("policy_revision", _S(length=80), nullable=False),
        sa.Column("trace_id", _S(length=32), nullable=True),
        sa.Column("state", _S(length=16), nullable=False),
        sa.Column("created_at", _T(), nullable=False),
        sa.Column("resolved_at", _T(), nullable=True),
        sa.Column("resolved_by", _S(length=200), nullable=True),
        sa.Column("resolution", _S(), nullable=True),
        sa.Column("applied", _J, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_review_state_created", "review", ["state", "created_at"])
    op.create_index("ix_review_action_id", "review", ["action_id"])
    with op.batch_alter_table("action") as batch:
        batch.add_column(sa.Column("parent_id", _S(length=40), nullable=True))
    op.create_index("ix_action_parent", "action", ["parent_id"])


def downgrade() -> None:
    op.drop_index("ix_action_parent", table_name="action")
    with op.batch_alter_table("action") as batch:
        batch.drop_column("parent_id")
    op.drop_table("review")
    op.drop_table("sighting")
    op.drop_table("customer")
