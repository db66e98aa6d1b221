"""verdict: the account and key indexes end with observed_at

A verdict's history is the verdicts about its account or key observed in the 30 days
before it. Indexed by (provider, account_id) alone, that lookup read every verdict
ever stored about the account and dropped the older ones, a cost that grew with a
subject's whole history; with observed_at last it is an index range.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_REPLACED = (
    ("ix_verdict_provider_account", ["provider", "account_id"]),
    ("ix_verdict_provider_api_key", ["provider", "api_key_id"]),
)


def upgrade() -> None:
    with op.batch_alter_table("verdict", schema=None) as batch_op:
        for name, columns in _REPLACED:
            batch_op.drop_index(name)
            batch_op.create_index(f"{name}_observed", [*columns, "observed_at"], unique=False)
    _forget_statistics([name for name, _ in _REPLACED])


def downgrade() -> None:
    with op.batch_alter_table("verdict", schema=None) as batch_op:
        for name, columns in _REPLACED:
            batch_op.drop_index(f"{name}_observed")
            batch_op.create_index(name, columns, unique=False)
    _forget_statistics([f"{name}_observed" for name, _ in _REPLACED])


def _forget_statistics(indexes: list[str]) -> None:
    """SQLite: drop the planner statistics of indexes that are gone (the new ones get
    theirs after the upgrade, as every index without statistics does)."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    if bind.exec_driver_sql(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'sqlite_stat1'"
    ).first():
        for index in indexes:
            bind.exec_driver_sql("DELETE FROM sqlite_stat1 WHERE idx = ?", (index,))
