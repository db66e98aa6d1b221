"""sighting: which sightings are of verified customers, indexed apart

A verdict's input names the networks of its subject that a verified customer uses too
(a range block there would refuse that customer). That was read as every account and
org ever seen on each of the batch's networks, then filtered by their customer records:
a cost that grew with everyone who ever used a popular network (a cloud egress range,
a large NAT). The flag marks the sightings of verified customers' accounts, kept by
the decide path (new sightings) and by the customers API (a record written or
deleted); the partial index holds only those, so the lookup reads what it returns.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sighting", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("verified", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.drop_index("ix_sighting_value")
    op.execute(
        "UPDATE sighting SET verified = true WHERE scope = 'account' AND scope_id IN "
        "(SELECT account_id FROM customer WHERE verified)"
    )
    op.create_index(
        "ix_sighting_verified",
        "sighting",
        ["provider", "kind", "value"],
        sqlite_where=sa.text("verified"),
        postgresql_where=sa.text("verified"),
    )
    op.create_index(
        "ix_sighting_account",
        "sighting",
        ["scope_id"],
        sqlite_where=sa.text("scope = 'account'"),
        postgresql_where=sa.text("scope = 'account'"),
    )


def downgrade() -> None:
    op.drop_index("ix_sighting_account", "sighting")
    op.drop_index("ix_sighting_verified", "sighting")
    with op.batch_alter_table("sighting", schema=None) as batch_op:
        batch_op.drop_column("verified")
        batch_op.create_index("ix_sighting_value", ["provider", "kind", "value"], unique=False)
