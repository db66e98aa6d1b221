"""audit_event: the subjects an event concerns, as its writer knew them

The subject index was derived in Python, row by row, from the verdict and the action
each event names: tens of thousands of index rows every ten seconds behind a busy
ingest, on the same interpreter as the decide path. The decide path knows each of its
events' subjects when it writes them; with them on the event (not hashed), the index
takes them in one SQL statement per chunk. Events written before, or by writers that
do not list them, are indexed as before.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import controlplane.store.types

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("subjects", controlplane.store.types.JSONDocument, nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_column("subjects")
