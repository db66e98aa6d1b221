"""`tollgate demo`: an embedded server, a bundled day of traffic, and what was decided.

The scenario mixes legitimate heavy users (who must never be touched) with
distillation operations; each verdict says which action types the bundled
policies should decide, so the demo checks itself and exits non-zero on a miss.

The decisions are enforced by a real HAProxy (Debian's package, installed when missing
and run as root) through the `haproxy` connector: the scenario's traffic goes through
it before and after the decisions, and the demo checks that distillers are refused
(403/401/429) and legitimate users are not. Without HAProxy it says what to install and
falls back to the in-memory connector. The local HAProxy runner here is also what the
HAProxy tests and `bench/enforce.py` use, so all three run the documented config.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from connectors.haproxy import HAProxyOptions, sample_config
from controlplane.api.app import create_app
from controlplane.auth.jobs import Tokens
from controlplane.auth.roles import Role
from controlplane.cli.client import cli_settings, request
from controlplane.settings import Settings
from controlplane.store.db import Database, upgrade

SCENARIO = Path(__file__).resolve().parent.parent / "demo" / "scenario.json"
out = Console()


def run_demo(*, keep_serving: bool, port: int) -> int:
    scenario = json.loads(SCENARIO.read_text(encoding="utf-8"))
    settings = cli_settings()
    # Absolute: HAProxy reads a relative stats socket path as host:port.
    data_dir = (settings.data_dir / "demo").resolve()
    DemoGateway.stop_leftover(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    out.rule("[bold]Tollgate demo")
    out.print(scenario["description"], style="dim")
    gateway = DemoGateway.start(data_dir)
    # A `kill` ends the demo like Ctrl-C does, so the HAProxy it started is stopped too.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(scenario, settings, data_dir, gateway, keep_serving=keep_serving, port=port)
    except KeyboardInterrupt:
        return 0
    finally:
        gateway.stop()
        signal.signal(signal.SIGTERM, previous)


def _run(
    scenario: dict[str, Any],
    settings: Settings,
    data_dir: Path,
    gateway: DemoGateway,
    *,
    keep_serving: bool,
    port: int,
) -> int:
    config = data_dir / "tollgate.yaml"
    config.write_text(yaml.safe_dump({"connectors": [gateway.connector]}), encoding="utf-8")
    settings = replace(settings, data_dir=data_dir, database_url="", url="", config=config)
    port = port or _free_port()
    base = f"http://127.0.0.1:{port}"
    out.print(
        f"policies: [bold]{settings.policy_dir}[/]  database: [bold]{data_dir}/tollgate.db[/]  "
        f"connectors: [bold]{config}[/]"
    )
    token = asyncio.run(_demo_token(settings.resolved_database_url))
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="tollgate-demo-server", daemon=True)
    thread.start()
    try:
        with httpx.Client(
            base_url=base, timeout=60, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            ready = _wait_ready(client, server)
            out.print(
                f"server ready at [bold]{base}[/], policy revision "
                f"[bold]{ready['checks']['policy']['revision'][:16]}[/]"
            )
            _seed(client, scenario)
            traffic = Traffic.of(scenario)
            before = gateway.send(traffic)
            results = _replay(client, scenario["verdicts"])
            enforced = _wait_enforced(client)
            after = gateway.send(traffic)
        misses = _report(scenario, results)
        if gateway.proxy is not None:
            misses += _report_traffic(traffic, before, after, enforced)
        if keep_serving:
            out.print(
                f"\nServing at [bold]{base}[/] (API docs: {base}/schema/swagger). Ctrl-C stops."
            )
            out.print(f"An admin token for this demo server: [bold]{token}[/]", highlight=False)
            gateway.explain_serving()
            while thread.is_alive():
                thread.join(0.5)
        return 1 if misses else 0
    finally:
        server.should_exit = True
        thread.join(10)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


async def _demo_token(url: str) -> str:
    """An admin token on the fresh demo database (the server checks tokens like any other)."""
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    try:
        token, _ = await Tokens(db).create("demo", Role.ADMIN, actor="demo")
        return token
    finally:
        await db.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(client: httpx.Client, server: uvicorn.Server) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.should_exit or (server.started is False and not _alive(server)):
            break
        try:
            response = client.get("/readyz")
            if response.status_code == 200:
                return response.json()  # type: ignore[no-any-return]
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("the demo server did not become ready: see the errors above")


def _alive(server: uvicorn.Server) -> bool:
    return not server.should_exit


def _seed(client: httpx.Client, scenario: dict[str, Any]) -> None:
    for exemption in scenario["exemptions"]:
        request(client, "POST", "/v1/exemptions", json=exemption)
    request(client, "POST", "/v1/intel/indicators", json={"indicators": scenario["indicators"]})
    out.print(
        f"seeded {len(scenario['exemptions'])} exemption(s) and "
        f"{len(scenario['indicators'])} shared intel indicator(s)"
    )


def _replay(client: httpx.Client, verdicts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    with Progress(
        TextColumn("replaying verdicts"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=out,
    ) as progress:
        task = progress.add_task("", total=len(verdicts))
        for verdict in verdicts:
            body = {k: v for k, v in verdict.items() if k != "expect"}
            answer = request(client, "POST", "/v1/verdicts", json=body)
            result = answer["results"][0]
            results[verdict["id"]] = result
            kinds = ", ".join(a["type"] for a in result["actions"]) or "no action"
            progress.update(task, advance=1, description=f"{verdict['id']}: {kinds}")
    return results


def _actor_of(actors: list[dict[str, Any]], verdict: dict[str, Any]) -> dict[str, Any]:
    subject = verdict["subject"]
    for actor in actors:
        if (
            (subject.get("account_id") and subject.get("account_id") == actor.get("account_id"))
            or (subject.get("org_id") and subject.get("org_id") == actor.get("org_id"))
            or set(subject.get("ips") or ()) & set(actor.get("ips") or ())
        ):
            return actor
    return {"name": subject.get("account_id") or "unknown", "kind": "?", "description": ""}


def _report(scenario: dict[str, Any], results: dict[str, dict[str, Any]]) -> int:
    by_actor: dict[str, list[dict[str, Any]]] = defaultdict(list)
    actors = {a["name"]: a for a in scenario["actors"]}
    for verdict in scenario["verdicts"]:
        by_actor[_actor_of(scenario["actors"], verdict)["name"]].append(verdict)

    misses = 0
    reasons: dict[str, str] = {}
    table = Table(title="What was decided, per subject", show_lines=True)
    for column in ("subject", "verdict", "score", "decided", "rule"):
        table.add_column(column, overflow="fold")
    for name, verdicts in by_actor.items():
        actor = actors.get(name, {"kind": "?"})
        style = "green" if actor["kind"] == "legitimate" else "red"
        label = f"[{style}]{name}[/]\n[dim]{actor['kind']}[/]"
        for verdict in verdicts:
            result = results[verdict["id"]]
            got = sorted(a["type"] for a in result["actions"])
            ok = got == sorted(verdict.get("expect", got))
            misses += not ok
            decided = (
                "\n".join(
                    f"{a['type']} {a['target']['kind']}:{a['target']['value']}"
                    + (f" ({_ttl(a['ttl_seconds'])})" if a["ttl_seconds"] else "")
                    for a in result["actions"]
                )
                or "[dim]no action[/]"
            )
            if not ok:
                decided += f"\n[bold red]expected {verdict['expect']}[/]"
            for a in result["actions"]:
                reasons.setdefault(a["rule"], a["reason"])
            rules = "\n".join(a["rule"] for a in result["actions"])
            table.add_row(
                label,
                verdict["id"],
                f"{verdict['score']:.2f}",
                decided,
                rules or result.get("error") or "[dim]below the bar[/]",
            )
            label = ""
    out.print(table)
    out.print("\n[bold]Why, in the policies' words[/] (one example per rule):")
    for rule, reason in sorted(reasons.items()):
        out.print(f"  [bold]{rule}[/]: {reason}")

    legit = [n for n, a in actors.items() if a["kind"] == "legitimate"]
    touched = sorted(
        n
        for n in legit
        for v in by_actor.get(n, [])
        for a in results[v["id"]]["actions"]
        if a["type"] != "flag_review"
    )
    distillers = [n for n, a in actors.items() if a["kind"] == "distiller"]
    enforced = [
        n for n in distillers if any(results[v["id"]]["actions"] for v in by_actor.get(n, []))
    ]
    out.print(
        f"\n[bold]{len(results)}[/] verdicts decided. Distillers enforced against: "
        f"[bold]{len(enforced)}/{len(distillers)}[/]. Legitimate heavy users rate-limited, "
        f"revoked or blocked: [bold]{len(set(touched))}/{len(legit)}[/] "
        "(an exempt subject gets flag_review only)."
    )
    if misses:
        out.print(
            f"[bold red]{misses} verdict(s) were decided differently than the scenario "
            "expects: the policies in use are not the bundled ones, or they changed.[/]"
        )
    else:
        out.print("[green]Every decision matches the scenario's expectation.[/]")
    return misses


def _ttl(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


# -- a local HAProxy: the demo's gateway; the tests and benchmarks run the same one ---------


class HAProxyMissing(RuntimeError):
    """HAProxy is not installed and could not be installed here; the message says how."""


INSTALL_HINT = "install it with `sudo apt-get install haproxy` (Debian/Ubuntu)"


def find_haproxy() -> str | None:
    """The haproxy binary (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


def ensure_haproxy(say: Callable[[str], None]) -> str:
    """The haproxy binary, installing Debian's package when it is missing and we are
    root. Waits for the dpkg lock (another install may be running), and runs
    `apt-get update` once if the first try fails (stale package lists)."""
    found = find_haproxy()
    if found:
        return found
    if os.geteuid() != 0:
        raise HAProxyMissing(f"HAProxy is not installed; {INSTALL_HINT}")
    if not shutil.which("apt-get"):
        raise HAProxyMissing("HAProxy is not installed and there is no apt-get: install it")
    # `env VAR=...` rather than a copy of os.environ: settings.py alone reads the environment.
    apt = [
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "-q",
        "-o",
        "DPkg::Lock::Timeout=300",
    ]
    say("HAProxy is missing: installing Debian's package (`apt-get install -y haproxy`)")
    done = _quietly([*apt, "install", "-y", "haproxy"])
    if done.returncode != 0:
        say("apt-get install failed; refreshing the package lists (`apt-get update`) and retrying")
        _quietly([*apt, "update"])
        done = _quietly([*apt, "install", "-y", "haproxy"])
    found = find_haproxy()
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise HAProxyMissing(
            f"`apt-get install haproxy` failed ({'; '.join(tail) or done.returncode}); "
            f"{INSTALL_HINT}"
        )
    return found


def _quietly(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900, check=False
    )


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16
    """Buffered: headers and body leave in one write (two small writes meet delayed ACKs
    and cost 40 ms a request)."""

    def _answer(self) -> None:
        body = b'{"ok":true}\n'
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the demo prints its own account of the traffic."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """HAProxy closing an idle keep-alive connection is routine, not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ModelStub:
    """The model API behind HAProxy: 200 to every request, so any other status a client
    sees was HAProxy's doing."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Ok)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="model-stub", daemon=True
        )

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> ModelStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class LocalHAProxy:
    """An HAProxy of our own in `directory`, on `sample_config()` (the documented
    config), daemonised with a pid file; `stop()` ends exactly the processes it started."""

    binary: str
    directory: Path
    options: HAProxyOptions
    backend: str
    port: int = 0
    trusted_proxies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.port = self.port or _free_port()

    @property
    def config_path(self) -> Path:
        return self.directory / "haproxy.cfg"

    @property
    def pidfile(self) -> Path:
        return self.directory / "haproxy.pid"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def files(self) -> list[Path]:
        o = self.options
        paths = [o.blocked_acl, o.allowed_acl, o.revoked_map, o.rate_limit_map]
        paths += [o.blocked_ref_map]
        paths += [o.account_rate_limit_map, o.account_suspend_map] if o.account_header else []
        paths += [o.org_rate_limit_map, o.org_suspend_map] if o.org_header else []
        return [Path(p) for p in paths]

    def start(self) -> LocalHAProxy:
        """Write the config (and empty ACL/map files where none exist: HAProxy refuses to
        start without them; existing ones are kept, as after a restart), then start."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in self.files():
            if not path.exists():
                path.write_text("", encoding="utf-8")
        self.config_path.write_text(
            sample_config(
                self.options,
                bind=f"127.0.0.1:{self.port}",
                backend=self.backend,
                trusted_proxies=self.trusted_proxies,
            ),
            encoding="utf-8",
        )
        self._haproxy()
        return self

    def reload(self) -> None:
        """A seamless reload (`-sf`): a new process on the same config and files; the old
        one finishes its connections and exits. Runtime-only changes die with it."""
        old = self.pids()
        self._haproxy("-sf", *map(str, old))
        _wait_gone(old)

    def stop(self) -> None:
        """Stop the processes of our pid file, and only those that run our config (a
        stale pid file may name a pid reused by something else)."""
        pids = [pid for pid in self.pids() if str(self.config_path) in _command_line(pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        _wait_gone(pids)
        self.pidfile.unlink(missing_ok=True)

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in self.pidfile.read_text(encoding="utf-8").split()]
        except FileNotFoundError:
            return []

    def _haproxy(self, *extra: str) -> None:
        command = [self.binary, "-D", "-f", str(self.config_path), "-p", str(self.pidfile)]
        done = subprocess.run(
            [*command, *extra], capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"haproxy did not start: {done.stderr.strip() or done.stdout}")
        _wait_listening(Path(self.options.socket), self.port)


def _wait_listening(sock: Path, port: int, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as unix:
                unix.connect(str(sock))
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"haproxy did not listen on {sock} and port {port} within {seconds}s")


def _wait_gone(pids: list[int], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    for pid in pids:
        while time.monotonic() < deadline and _running(pid):
            time.sleep(0.02)


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _running(pid: int) -> bool:
    """Alive and not a zombie (a daemon's parent is init, which may reap it late)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status


# -- the demo's gateway and the traffic sent through it -------------------------------------

REQUESTS_PER_CALLER = 70
"""More than the 60 requests a minute of the policies' first-offense limit."""


@dataclass
class DemoGateway:
    """What the demo enforces on: a real HAProxy in front of a stub model API, or, when
    HAProxy cannot be had, the in-memory connector (which enforces nothing)."""

    connector: dict[str, Any]
    """The `connectors:` entry of the demo's tollgate.yaml."""
    proxy: LocalHAProxy | None = None
    stub: ModelStub | None = None

    @classmethod
    def start(cls, data_dir: Path) -> DemoGateway:
        memory = {"name": "memory", "type": "memory", "providers": ["*"]}
        try:
            binary = ensure_haproxy(lambda message: out.print(f"[yellow]{message}[/]"))
        except HAProxyMissing as exc:
            out.print(
                f"[bold yellow]note:[/] {exc}. This run falls back to the in-memory connector: "
                "decisions are made, recorded and 'applied' as usual, but no gateway enforces "
                "them, so no traffic is sent. Install HAProxy to see requests refused."
            )
            return cls(memory)
        directory = data_dir / "haproxy"
        options = HAProxyOptions(
            socket=str(directory / "admin.sock"),
            state_dir=str(directory),
            key_header="x-api-key-id",
            key_match="id",
            account_header="x-account-id",
        )
        stub = ModelStub().start()
        proxy = LocalHAProxy(
            binary, directory, options, backend=stub.address, trusted_proxies=("127.0.0.1",)
        )
        try:
            proxy.start()
        except RuntimeError as exc:
            stub.stop()
            out.print(f"[bold yellow]note:[/] {exc}; falling back to the in-memory connector.")
            return cls(memory)
        out.print(
            f"HAProxy ({binary}) at [bold]{proxy.url}[/], config [bold]{proxy.config_path}[/], "
            f"in front of a stub model API at {stub.address} that answers 200 to everything."
        )
        out.print(
            "[dim]How the scenario's traffic reaches it: the scenario's clients use "
            "documentation addresses (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) that "
            "cannot be sent from on this machine, so the demo client plays the load balancer "
            "in front of HAProxy: it connects from 127.0.0.1, which haproxy.cfg trusts to name "
            "the client in X-Forwarded-For (`http-request set-src`), and HAProxy enforces on "
            "that address: no address is translated. The scenario names keys by the lab's key "
            "id, so HAProxy matches the X-Api-Key-Id header as it is (key_match: id) and reads "
            "the account from X-Account-Id, headers an authenticating layer in front would "
            "set; the default, key_match: fingerprint, hashes the raw key itself.[/]"
        )
        connector = {
            "name": "edge-haproxy",
            "type": "haproxy",
            "providers": ["*"],
            "reconcile_seconds": 30,
            "options": {
                "socket": options.socket,
                "state_dir": options.state_dir,
                "key_header": options.key_header,
                "key_match": options.key_match,
                "account_header": options.account_header,
            },
        }
        return cls(connector, proxy, stub)

    @staticmethod
    def stop_leftover(data_dir: Path) -> None:
        """An HAProxy a previous demo left running (killed mid-run) holds the files."""
        directory = data_dir / "haproxy"
        if (directory / "haproxy.pid").exists():
            LocalHAProxy("haproxy", directory, HAProxyOptions(), backend="").stop()

    def send(self, traffic: Traffic) -> dict[Caller, Counter[int]]:
        """Every caller's requests through HAProxy: the statuses each got."""
        if self.proxy is None:
            return {}
        return asyncio.run(traffic.send(self.proxy.url))

    def explain_serving(self) -> None:
        if self.proxy is None:
            return
        url = self.proxy.url
        out.print(
            f"HAProxy keeps enforcing at [bold]{url}[/]; try "
            f"`curl -si -H 'X-Forwarded-For: 203.0.113.7' {url}/` (403) or "
            f"`curl -si -H 'X-Api-Key-Id: key_sw_a2' {url}/` (401).",
            highlight=False,
        )

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        if self.stub is not None:
            self.stub.stop()


@dataclass(frozen=True)
class Caller:
    """One way an actor calls the API: a key (or none), an account, its addresses."""

    actor: str
    kind: str
    key: str | None
    account: str | None
    ips: tuple[str, ...]

    def headers(self, n: int) -> dict[str, str]:
        headers = {"x-forwarded-for": self.ips[n % len(self.ips)]}
        if self.key:
            headers["x-api-key-id"] = self.key
        if self.account:
            headers["x-account-id"] = self.account
        return headers

    @property
    def label(self) -> str:
        who = f"key {self.key}" if self.key else "no key"
        if self.account:
            who += f", {self.account}"
        return f"{who}\n[dim]from {', '.join(self.ips)}[/]"


@dataclass
class Traffic:
    """The scenario's callers: each actor's keys, accounts and addresses, as its verdicts
    saw them, each sending a burst of requests."""

    callers: list[Caller]

    @classmethod
    def of(cls, scenario: dict[str, Any]) -> Traffic:
        actors = scenario["actors"]
        found: dict[tuple[str, str | None, str | None], list[str]] = {}
        kinds = {a["name"]: a["kind"] for a in actors}
        for actor in actors:
            found[(actor["name"], actor.get("api_key_id"), actor.get("account_id"))] = list(
                actor["ips"]
            )
        for verdict in scenario["verdicts"]:
            name = _actor_of(actors, verdict)["name"]
            subject = verdict["subject"]
            ips = found.setdefault((name, subject.get("api_key_id"), subject.get("account_id")), [])
            ips.extend(ip for ip in subject.get("ips") or () if ip not in ips)
        return cls(
            [
                Caller(name, kinds.get(name, "?"), key, account, tuple(ips))
                for (name, key, account), ips in found.items()
                if ips
            ]
        )

    async def send(self, url: str) -> dict[Caller, Counter[int]]:
        """Each caller's requests in order (its rate counts), the callers side by side."""
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:

            async def burst(caller: Caller) -> Counter[int]:
                statuses: Counter[int] = Counter()
                for n in range(REQUESTS_PER_CALLER):
                    response = await client.get("/v1/messages", headers=caller.headers(n))
                    statuses[response.status_code] += 1
                return statuses

            counts = await asyncio.gather(*(burst(c) for c in self.callers))
        return dict(zip(self.callers, counts, strict=True))


def _wait_enforced(client: httpx.Client) -> list[dict[str, Any]]:
    """Reconcile every connector now: the reconcile runs after any push in flight, so
    when it returns the gateway holds every decision so far."""
    reports = []
    for connector in request(client, "GET", "/v1/connectors"):
        reports.append(request(client, "POST", f"/v1/connectors/{connector['name']}/reconcile"))
    return reports


def _statuses(counts: Counter[int]) -> str:
    styles = {200: "green", 401: "red", 403: "red", 429: "yellow"}
    return "  ".join(
        f"[{styles.get(code, 'magenta')}]{code}[/]x{n}" for code, n in sorted(counts.items())
    )


def _report_traffic(
    traffic: Traffic,
    before: dict[Caller, Counter[int]],
    after: dict[Caller, Counter[int]],
    reports: list[dict[str, Any]],
) -> int:
    """Show each caller's statuses before and after the decisions; count what breaks the
    scenario: any refusal before, a legitimate caller refused, a distiller let through."""
    table = Table(
        title=f"Traffic through HAProxy: {REQUESTS_PER_CALLER} requests per caller, "
        "before and after the decisions",
        show_lines=True,
    )
    for column in ("actor", "caller", "before", "after"):
        table.add_column(column, overflow="fold")
    misses = 0
    refused = {"legitimate": 0, "distiller": 0}
    sent = {"legitimate": 0, "distiller": 0}
    shown: set[str] = set()
    for caller in sorted(traffic.callers, key=lambda c: (c.kind != "legitimate", c.actor)):
        then, now = before[caller], after[caller]
        no = sum(n for code, n in now.items() if code != 200)
        sent[caller.kind] = sent.get(caller.kind, 0) + REQUESTS_PER_CALLER
        refused[caller.kind] = refused.get(caller.kind, 0) + no
        wrong = (
            set(then) != {200}
            or (caller.kind == "legitimate" and no)
            or (caller.kind == "distiller" and not no)
        )
        misses += bool(wrong)
        style = "green" if caller.kind == "legitimate" else "red"
        label = (
            "" if caller.actor in shown else f"[{style}]{caller.actor}[/]\n[dim]{caller.kind}[/]"
        )
        shown.add(caller.actor)
        table.add_row(
            label,
            caller.label,
            _statuses(then),
            _statuses(now) + ("\n[bold red]not as the scenario expects[/]" if wrong else ""),
        )
    out.print(table)
    for report in reports:
        out.print(
            f"connector [bold]{report['connector']}[/]: {report['applied']}/{report['desired']} "
            f"entries in force, {report['failed']} failed"
            + (f" ({'; '.join(report['failures'])})" if report["failures"] else "")
        )
    out.print(
        f"HAProxy refused [bold]{refused['distiller']}/{sent['distiller']}[/] distiller requests "
        f"(403 blocked address, 401 revoked key, 429 over its limit) and "
        f"[bold]{refused['legitimate']}/{sent['legitimate']}[/] legitimate ones."
    )
    if misses:
        out.print(f"[bold red]{misses} caller(s) were not treated as the scenario expects.[/]")
    else:
        out.print("[green]Every caller was treated as the scenario expects.[/]")
    return misses
