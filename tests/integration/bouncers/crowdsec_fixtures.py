"""Debian's real `crowdsec-custom-bouncer` pointed at Tollgate.

Installed when missing (as root, `apt-get install --no-install-recommends`: the bouncer
alone, no CrowdSec engine); when it cannot be, the tests fail saying what to do. Each
bouncer runs from a temporary directory with a script that appends every decision it
is given (`add|del VALUE DURATION SCENARIO`) to a file the test reads."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

BINARY = "crowdsec-custom-bouncer"
INSTALL = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300", "install", "-y"]


def ensure_custom_bouncer() -> str:
    found = shutil.which(BINARY)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise AssertionError(
            f"{BINARY} is not installed: `apt-get install --no-install-recommends {BINARY}`"
        )
    env = ["env", "DEBIAN_FRONTEND=noninteractive"]
    done = subprocess.run(
        [*env, *INSTALL, "--no-install-recommends", BINARY], capture_output=True, text=True
    )
    if done.returncode != 0:
        subprocess.run([*env, "apt-get", "-q", "update"], capture_output=True)
        done = subprocess.run(
            [*env, *INSTALL, "--no-install-recommends", BINARY], capture_output=True, text=True
        )
    found = shutil.which(BINARY)
    if not found:
        raise AssertionError(f"`apt-get install {BINARY}` failed: {done.stderr[-500:]}")
    return found


@dataclass
class CustomBouncer:
    """One crowdsec-custom-bouncer process polling Tollgate."""

    directory: Path
    api_url: str
    api_key: str
    update_frequency: str = "1s"
    process: subprocess.Popen[bytes] | None = None
    seen: Path = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.seen = self.directory / "decisions.log"
        script = self.directory / "on-decision.sh"
        script.write_text(
            f'#!/bin/sh\nprintf \'%s %s %s %s\\n\' "$1" "$2" "$3" "$4" >> {self.seen}\n',
            encoding="utf-8",
        )
        script.chmod(0o755)
        config = {
            "bin_path": str(script),
            "feed_via_stdin": False,
            "total_retries": 0,
            "scenarios_containing": [],
            "scenarios_not_containing": [],
            "origins": [],
            "piddir": str(self.directory),
            "update_frequency": self.update_frequency,
            "cache_retention_duration": "10s",
            "daemonize": False,
            "log_mode": "file",
            "log_dir": str(self.directory),
            "log_level": "info",
            "api_url": self.api_url.rstrip("/") + "/",
            "api_key": self.api_key,
            "prometheus": {"enabled": False, "listen_addr": "127.0.0.1", "listen_port": 60602},
        }
        (self.directory / "bouncer.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    def start(self) -> None:
        binary = ensure_custom_bouncer()
        out = (self.directory / "stdout.log").open("ab")
        self.process = subprocess.Popen(
            [binary, "-c", str(self.directory / "bouncer.yaml")], stdout=out, stderr=out
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def lines(self) -> list[list[str]]:
        if not self.seen.exists():
            return []
        return [line.split(" ") for line in self.seen.read_text().splitlines() if line]

    def held(self) -> set[str]:
        """What the script would enforce now: adds minus dels, in order."""
        held: set[str] = set()
        for op, value, *_ in self.lines():
            (held.add if op == "add" else held.discard)(value)
        return held

    def wait_for(self, condition: Callable[[CustomBouncer], bool], what: str) -> None:
        """Until `condition` holds (the bouncer polls every `update_frequency`); fails
        with what the script saw and the bouncer's log after 30 s."""
        deadline = time.monotonic() + 30
        while not condition(self):
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"the bouncer exited: {self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: script saw {self.lines()}; log: {self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        parts = []
        for name in ("stdout.log", "crowdsec-custom-bouncer.log"):
            path = self.directory / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-1500:])
        return "\n".join(parts)
