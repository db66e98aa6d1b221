"""verdict: index only the verdicts left received

Every query on a verdict's status asks for those left `received` (a crash, a fault
while deciding): the recovery job, oldest first, and the count `/readyz` and the
metrics show. The index on `status` held every verdict ever stored, nearly all of them
`decided`, so each verdict stored cost an entry nothing reads. The partial index holds
only the `received` ones, in the order recovery takes them; a verdict stored decided
never enters it.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_verdict_status", "verdict")
    op.create_index(
        "ix_verdict_received",
        "verdict",
        ["received_at", "id"],
        sqlite_where=sa.text("status = 'received'"),
        postgresql_where=sa.text("status = 'received'"),
    )


def downgrade() -> None:
    op.drop_index("ix_verdict_received", "verdict")
    op.create_index("ix_verdict_status", "verdict", ["status"], unique=False)
