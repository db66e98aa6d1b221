"""The migrations build the schema the models describe: a database migrated to head
has every table, column and index of `controlplane/store/models.py`, and nothing else."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlmodel import SQLModel

import controlplane.store.models  # noqa: F401  (the tables, on SQLModel.metadata)
from controlplane.store.db import sync_url


def test_a_migrated_database_matches_the_models(database_url: str) -> None:
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            differences = compare_metadata(context, SQLModel.metadata)
            indexes = {i["name"]: i for i in inspect(connection).get_indexes("verdict")}
    finally:
        engine.dispose()
    assert differences == []
    # Recovery's index holds the verdicts left received alone (a decided one never
    # enters it): partial, which the comparison above does not look at.
    received = indexes["ix_verdict_received"]
    assert received["column_names"] == ["received_at", "id"]
    where = " ".join(str(v) for v in received.get("dialect_options", {}).values())
    assert "received" in where, received
    assert "ix_verdict_status" not in indexes
