"""A real moto server (`moto_server -H 127.0.0.1 -p PORT`) for the AWS connector's tests
and benchmark: AWS's APIs emulated on loopback, started as a child process and stopped
by its pid. `reset()` (moto's `POST /moto-api/reset`) empties it between tests.

moto is an emulator, not AWS: docs/aws.md lists what it does differently (it accepts
invalid CIDRs and more than 10,000 addresses, has no tags on API keys, enforces nothing
on the data plane), and the connector checks those limits itself.
"""

from __future__ import annotations

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

from tests.support.processes import free_port

REGION = "us-east-1"


def moto_binary() -> str:
    beside = Path(sys.executable).with_name("moto_server")
    found = str(beside) if beside.exists() else shutil.which("moto_server")
    if not found:
        raise RuntimeError(
            "moto_server is not installed: run `make .venv/.installed` (the dev extras "
            "install moto[server])"
        )
    return found


@dataclass
class MotoServer:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        httpx.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()

    def client(self, service: str, region: str = REGION) -> Any:
        import boto3

        return boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
        ).client(service, endpoint_url=self.url)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


@contextmanager
def moto_server() -> Iterator[MotoServer]:
    """A moto server on a free loopback port, answering before this yields."""
    port = free_port()
    process = subprocess.Popen(
        [moto_binary(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = MotoServer(process, port)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {process.returncode}")
            try:
                httpx.get(f"{server.url}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not answer within 30 s") from None
                time.sleep(0.1)
        yield server
    finally:
        server.stop()
