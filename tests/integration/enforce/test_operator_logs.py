"""An operator sees a connector go down, degrade and recover in the log: one WARNING
per change of state, naming the connector."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connectors.memory import MemoryConnector
from tests.support.app import Running, make_settings, serve
from tests.support.verdicts import new_subject, verdict

CONNECTOR = {"name": "edge-7", "type": "memory", "providers": ["lab-a"], "reconcile_seconds": 3600}
FOLLOWER = "controlplane.enforce.follower"


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    async with serve(make_settings(database_url, tmp_path, connectors=[CONNECTOR])) as running:
        yield running


def gateway(api: Running) -> MemoryConnector:
    connector = api.runtime.enforcer._running["edge-7"].connector
    assert isinstance(connector, MemoryConnector)
    return connector


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == FOLLOWER and r.levelno == logging.WARNING
    ]


async def test_outage_and_recovery_are_each_logged_once(
    api: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=FOLLOWER)
    gateway(api).down = True
    for _ in range(3):  # three batches tried while down: still one line
        await api.submit(verdict(subject=new_subject()))
        await api.runtime.enforcer.settle()
    down = warnings(caplog)
    assert len(down) == 1, down
    assert down[0].startswith("connector edge-7 is down: gateway unavailable")

    gateway(api).down = False
    api.runtime.enforcer.wake()
    await api.runtime.enforcer.settle()
    assert warnings(caplog)[1:] == ["connector edge-7 recovered (was down)"]


async def test_entries_refused_make_the_connector_degraded(
    api: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=FOLLOWER)
    subject = new_subject()
    gateway(api).reject.add(("rate_limit", "api_key", subject["api_key_id"]))  # for good
    await api.submit(verdict(subject=subject))
    await api.runtime.enforcer.settle()
    [degraded] = warnings(caplog)
    assert degraded.startswith("connector edge-7 is degraded: rate_limit api_key:")
