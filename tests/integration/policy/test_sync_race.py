"""Replicas starting together: the one that loses the race to record a revision finds it
active when its sync returns (it would otherwise start with nothing to decide with),
and the revision is activated once."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from controlplane.policy import service
from controlplane.policy.service import PolicyService
from controlplane.policy.source import source_from
from controlplane.store.db import Database
from controlplane.store.models import PolicyActivationRow
from tests.support.app import make_settings


async def test_the_replica_that_loses_the_race_to_record_finds_the_revision_active(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = threading.Event()
    real_gate = service.gate
    gates = 0
    guard = threading.Lock()

    def gate(bundle: Any, entrypoint: str) -> tuple[list[str], dict[str, Any]]:
        # The second replica's gate ends once the first has recorded the revision
        # (not committed yet): its insert then meets the first one's.
        nonlocal gates
        with guard:
            gates += 1
            second = gates == 2
        found = real_gate(bundle, entrypoint)
        if second:
            assert recorded.wait(10)
        return found

    real_record, real_activate = service.record, service.activate

    async def record(*args: Any, **kwargs: Any) -> Any:
        result = await real_record(*args, **kwargs)
        recorded.set()
        return result

    async def activate(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.5)  # activating takes a while
        return await real_activate(*args, **kwargs)

    monkeypatch.setattr(service, "gate", gate)
    monkeypatch.setattr(service, "record", record)
    monkeypatch.setattr(service, "activate", activate)
    settings = make_settings(database_url, tmp_path)
    first, second = Database(database_url), Database(database_url)
    try:
        replicas = [
            PolicyService(db, source_from(settings), settings.entrypoint) for db in (first, second)
        ]

        async def start(replica: PolicyService) -> tuple[Any, Any]:
            """Sync, then look for the active revision at once (as a start does)."""
            result = await replica.sync("tollgate", "start")
            return result, await replica.active()

        both = await asyncio.gather(*(start(r) for r in replicas))
        assert sorted(result.outcome for result, _ in both) == ["activated", "unchanged"]
        for result, active in both:
            assert active is not None and active.revision == result.revision
        async with first.read() as session:
            count = await session.scalar(select(func.count()).select_from(PolicyActivationRow))
        assert count == 1
    finally:
        await first.dispose()
        await second.dispose()
