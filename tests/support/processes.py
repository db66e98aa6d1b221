"""Tollgate's own commands as real processes on 127.0.0.1: `tollgate serve`, `tollgate
worker` and the CLI, each with only the settings a test gives it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
COMMAND = [sys.executable, "-m", "controlplane.cli.main"]


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now and not handed out before in this test run: the kernel may give
    the same free port twice, and two servers told the same port would both look ready
    (the one that cannot bind answers through the other until it exits)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def environment(settings: Mapping[str, str]) -> dict[str, str]:
    """The test process's environment without its TOLLGATE_* variables and Go's GOGC (a
    server sets it for its engine), plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_") and k != "GOGC"}
    env.update(settings)
    env["COLUMNS"] = "200"  # rich wraps at the terminal width; keep a line one line
    return env


def run(
    args: list[str], settings: Mapping[str, str], *, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run one CLI command to its end."""
    return subprocess.run(
        [*COMMAND, *args],
        cwd=REPO,
        env=environment(settings),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Process:
    process: subprocess.Popen[str]
    url: str
    log: Path
    """Its standard error: the log (a file, so a chatty server never blocks on a pipe)."""

    async def ready(self, tries: int = 900) -> None:
        """Until /readyz answers 200 (bounded: about 90 s), or the process ends."""
        async with httpx.AsyncClient() as client:
            for _ in range(tries):
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"{self.url} exited {self.process.returncode}: {self.log.read_text()}"
                    )
                try:
                    if (await client.get(f"{self.url}/readyz", timeout=2)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"{self.url} did not become ready")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@contextmanager
def started(
    args: list[str], settings: Mapping[str, str], port: int, log: Path
) -> Iterator[Process]:
    """A long-running command (serve, worker) listening on `port`; stopped at the end."""
    with log.open("w", encoding="utf-8") as sink:
        process = subprocess.Popen(
            [*COMMAND, *args],
            cwd=REPO,
            env=environment(settings),
            stdout=subprocess.DEVNULL,
            stderr=sink,
            text=True,
        )
    running = Process(process, f"http://127.0.0.1:{port}", log)
    try:
        yield running
    finally:
        running.stop()
