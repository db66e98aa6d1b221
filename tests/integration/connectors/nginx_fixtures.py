"""A real NGINX (Debian's 1.22 package) for the NGINX connector's tests.

Imported by the test module, not a conftest, so other gateways' fixtures never
collide with these. NGINX is installed when missing (as root, through apt-get);
when it cannot be, the tests fail saying what to do: they are never skipped.

Each test gets its own master, started from a temporary directory with `-c` on a
config shaped like docs/examples/nginx.conf (pid, error log and temp paths in that
directory, a free port on 127.0.0.1), in front of a stdlib HTTP backend that answers
200. The master runs in the foreground (`daemon off`) as this process's child, so
it is stopped for sure at the end of the test, and limit_req counters never leak
from one test into another.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.nginx import NginxConnector
from controlplane.enforce.sdk import ConnectorConfig, GatewayUnavailable
from tests.support.processes import free_port

TIERS = [10, 60, 600]
KEY_HEADER = "X-API-Key"
INSTALL_SECONDS = 600
START_SECONDS = 5.0
PR_SET_PDEATHSIG = 1


# -- nginx itself -----------------------------------------------------------------------


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Another engineer's tests may be installing their gateway: wait for dpkg's lock.
    command = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=INSTALL_SECONDS, check=False
    )


def ensure_nginx() -> str:
    """The nginx binary, installed with apt-get when missing; fails (never skips) with
    what to do when it cannot be had."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail(
            "the NGINX connector's tests need a real nginx: run `sudo apt-get install -y "
            "nginx` (Debian's 1.22), or run the tests as root to let them install it"
        )
    try:
        installed = _apt("install", "-y", "nginx")
        if installed.returncode != 0:  # stale or missing package lists
            _apt("update")
            installed = _apt("install", "-y", "nginx")
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"could not run apt-get to install nginx: {exc}")
    found = shutil.which("nginx", path="/usr/sbin:/usr/bin:/usr/local/sbin")
    if installed.returncode != 0 or found is None:
        output = (installed.stdout + installed.stderr).strip().splitlines()[-15:]
        pytest.fail("`apt-get install -y nginx` failed:\n" + "\n".join(output))
    return found


# -- the backend ------------------------------------------------------------------------


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"model says hi\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read statuses, not logs."""


class Backend:
    """The model API behind NGINX: 200 to everything, on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> Backend:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- one NGINX --------------------------------------------------------------------------


def main_config(root: Path, include_dir: Path, port: int, backend: str) -> str:
    """docs/examples/nginx.conf's shape, with every path in `root`."""
    temp = root / "temp"
    return f"""\
user root;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log notice;

events {{
    worker_connections 256;
}}

http {{
    include {include_dir}/http.conf;

    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;

    upstream model_api {{
        server {backend};
    }}

    server {{
        listen 127.0.0.1:{port};
        default_type application/json;
        include {include_dir}/server.conf;

        location / {{
            proxy_pass http://model_api;
        }}
    }}
}}
"""


@dataclass
class Nginx:
    """One NGINX master (foreground, a child of the test process) and its files."""

    binary: str
    root: Path
    backend: Backend
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)
    unused: httpx.AsyncClient = field(default_factory=httpx.AsyncClient)
    """The HTTP client a connector is given (NGINX's is driven through files)."""

    @property
    def include_dir(self) -> Path:
        return self.root / "tollgate"

    @property
    def main_config(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def pid_file(self) -> Path:
        return self.root / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def options(self, **overrides: Any) -> dict[str, Any]:
        """What tollgate.yaml's `options:` say for this NGINX."""
        chosen = {
            "nginx": self.binary,
            "main_config": str(self.main_config),
            "include_dir": str(self.include_dir),
            "pid_file": str(self.pid_file),
            "tiers": TIERS,
            "key_header": KEY_HEADER,
        }
        return {**chosen, **overrides}

    def connector(self, name: str = "edge-nginx", **overrides: Any) -> NginxConnector:
        config = ConnectorConfig(
            name=name,
            type="nginx",
            providers=("*",),
            options=self.options(**overrides),
            timeout_seconds=5.0,
        )
        return NginxConnector(config, self.unused)

    def write_config(self) -> None:
        (self.root / "temp").mkdir(parents=True, exist_ok=True)
        text = main_config(self.root, self.include_dir, self.port, self.backend.address)
        self.main_config.write_text(text, encoding="utf-8")

    async def bootstrap(self) -> None:
        """What an operator does the first time: Tollgate writes the include files (it
        finds no NGINX running), then NGINX starts on them."""
        with contextlib.suppress(GatewayUnavailable):
            await self.connector().observe()
        self.start()

    def start(self) -> None:
        """Start the master in the foreground; return once it serves (bounded)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.pid_file.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.main_config), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"nginx exited at start ({self.process.returncode}):\n{self.log()}")
            if self.pid_file.exists() and _answers(self.url):
                return
            time.sleep(0.01)
        self.stop()
        pytest.fail(f"nginx did not serve on 127.0.0.1:{self.port} in {START_SECONDS}s")

    def stop(self) -> None:
        """Stop the master and its workers (fast shutdown), bounded."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=START_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=START_SECONDS)

    def log(self) -> str:
        try:
            return self.error_log.read_text(encoding="utf-8", errors="replace")[-3000:]
        except FileNotFoundError:
            return "(no error log)"

    async def get(self, source: str = "127.0.0.1", key: str | None = None) -> int:
        """One request through NGINX from `source` (a loopback address), with `key` in
        the key header: its status."""
        return (await self.response(source, key)).status_code

    async def response(
        self, source: str = "127.0.0.1", key: str | None = None, **headers: str
    ) -> httpx.Response:
        """One request through NGINX from `source`, with `key` in the key header and
        `headers` (those a trusted layer in front would set). A new connection each time,
        so a reload's old workers never answer a request the test makes after it."""
        client = self.clients.get(source)
        if client is None:
            transport = httpx.AsyncHTTPTransport(local_address=source)
            client = httpx.AsyncClient(transport=transport, timeout=5.0)
            self.clients[source] = client
        sent = {"Connection": "close", **headers}
        if key is not None:
            sent[KEY_HEADER] = key
        return await client.get(f"{self.url}/v1/messages", headers=sent)

    async def statuses(
        self, count: int, source: str = "127.0.0.1", key: str | None = None
    ) -> list[int]:
        return [await self.get(source, key) for _ in range(count)]

    async def close(self) -> None:
        self.stop()
        for client in [*self.clients.values(), self.unused]:
            await client.aclose()
        self.clients.clear()


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends the master SIGTERM when the test process
    dies, so a killed test run leaves no NGINX behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _answers(url: str) -> bool:
    """Whether a worker answers HTTP (the port alone accepts as soon as the master has
    bound it, before any worker runs)."""
    try:
        with urllib.request.urlopen(f"{url}/ready", timeout=0.5):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session", name="nginx_binary")
def nginx_binary_fixture() -> str:
    return ensure_nginx()


@pytest.fixture(scope="session", name="backend")
def backend_fixture() -> Iterator[Backend]:
    backend = Backend().start()
    yield backend
    backend.stop()


@pytest.fixture(name="nginx_stopped")
async def nginx_stopped_fixture(
    nginx_binary: str, backend: Backend, tmp_path: Path
) -> AsyncIterator[Nginx]:
    """An NGINX configured but not started (no include files yet either)."""
    gateway = Nginx(nginx_binary, tmp_path, backend)
    gateway.write_config()
    try:
        yield gateway
    finally:
        await gateway.close()


@pytest.fixture(name="nginx")
async def nginx_fixture(nginx_stopped: Nginx) -> AsyncIterator[Nginx]:
    """An NGINX serving, bootstrapped as docs/nginx.md says, with nothing enforced."""
    await nginx_stopped.bootstrap()
    yield nginx_stopped
