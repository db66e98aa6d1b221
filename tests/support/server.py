"""A real Tollgate server (uvicorn, in a process of its own) on a free loopback port:
for gateways that call Tollgate over HTTP, such as CrowdSec bouncers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from controlplane.settings import Settings
from tests.support.app import REPO

SERVER = """
import json, logging, sys
from pathlib import Path
import uvicorn
from controlplane.api.app import create_app
from controlplane.settings import Settings

logging.basicConfig(level=logging.WARNING)
cfg = json.loads(sys.argv[1])
settings = Settings(data_dir=Path(cfg["data_dir"]), database_url=cfg["url"],
                    policy_dir=Path(cfg["policies"]), config=Path(cfg["config"]),
                    otlp_endpoint="", engine_workers=1, policy_allow_uncommitted=False)
uvicorn.run(create_app(settings), host="127.0.0.1", port=cfg["port"], log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def tollgate_server(settings: Settings, log: Path, ready_seconds: float = 60.0) -> Iterator[str]:
    """Start `tollgate` on these settings; yields its base URL once `/readyz` answers 200,
    and stops it afterwards. Its output goes to `log` (named in any failure)."""
    port = free_port()
    cfg = {
        "data_dir": str(settings.data_dir),
        "url": settings.database_url,
        "policies": str(settings.policy_dir),
        "config": str(settings.config),
        "port": port,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER, json.dumps(cfg)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + ready_seconds
            while True:
                if process.poll() is not None:
                    raise AssertionError(f"the server exited: {log.read_text()[-2000:]}")
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"the server was not ready: {log.read_text()[-2000:]}")
                time.sleep(0.1)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
