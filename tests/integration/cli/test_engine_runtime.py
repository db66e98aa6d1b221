"""`tollgate serve` runs the embedded engine's Go runtime with its garbage collector
target (`GOGC`), which Go reads only from the environment a process starts with: the
server starts again, same pid, with it set, unless the operator set `GOGC` already."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controlplane.settings import ENGINE_GC_PERCENT
from tests.support.app import POLICY_DIR
from tests.support.processes import free_port, started


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, str(ENGINE_GC_PERCENT)),
        ({"TOLLGATE_ENGINE_GC_PERCENT": "250"}, "250"),
        ({"GOGC": "150", "TOLLGATE_ENGINE_GC_PERCENT": "250"}, "150"),  # the operator's wins
    ],
)
def test_the_server_runs_with_the_engines_gc_target(
    tmp_path: Path, given: dict[str, str], expected: str
) -> None:
    port = free_port()
    env = {
        "TOLLGATE_DATA_DIR": str(tmp_path / "data"),
        "TOLLGATE_POLICY_DIR": str(POLICY_DIR),
        "TOLLGATE_PORT": str(port),
        "TOLLGATE_LOG_FORMAT": "text",
        **given,
    }
    with started(["serve"], env, port, tmp_path / "serve.log") as server:
        asyncio.run(server.ready())
        # The process the supervisor started is the one serving (exec, not a child).
        assert server.process.poll() is None
        assert environ_of(server.process.pid).get("GOGC") == expected
