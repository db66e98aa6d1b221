"""`tollgate`: serve the API, migrate the database, submit verdicts, run the demo."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from controlplane import __version__
from controlplane.cli.audit import audit_app
from controlplane.cli.client import api_client, cli_settings, fail, request
from controlplane.cli.connector import action_app, connector_app
from controlplane.cli.customers import customer_app, review_app
from controlplane.cli.decision import decision_app
from controlplane.cli.intel import intel_app
from controlplane.cli.policy import policy_app
from controlplane.cli.remedy import appeal_app, exemption_app, report_app
from controlplane.cli.startup import start_or_exit
from controlplane.cli.token import token_app
from controlplane.engine.bundle import short_revision
from controlplane.settings import engine_environment
from controlplane.telemetry.logs import configure_logging

app = typer.Typer(
    help="Tollgate: policy-as-code enforcement against adversarial distillation.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
verdict_app = typer.Typer(help="Verdicts.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(verdict_app, name="verdict")
app.add_typer(policy_app, name="policy")
app.add_typer(decision_app, name="decision")
app.add_typer(token_app, name="token")
app.add_typer(audit_app, name="audit")
app.add_typer(connector_app, name="connector")
app.add_typer(action_app, name="action")
app.add_typer(customer_app, name="customer")
app.add_typer(review_app, name="review")
app.add_typer(appeal_app, name="appeal")
app.add_typer(exemption_app, name="exemption")
app.add_typer(report_app, name="report")
app.add_typer(intel_app, name="intel")
out = Console()

BATCH = 1000


def _version(value: bool) -> None:
    if value:
        print(f"tollgate {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Tollgate: policy-as-code enforcement against adversarial distillation."""


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [TOLLGATE_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [TOLLGATE_PORT].")] = None,
) -> None:
    """Serve the API (migrates the database and loads the policies first). A setting,
    config file, database or policy that cannot work stops it at once, in one line."""
    from controlplane.api.app import create_app
    from controlplane.enforce.config import check_connectors
    from controlplane.runtime import Runtime

    settings = cli_settings()
    env = engine_environment(settings)
    if env is not None:
        # The same command again, in the environment the embedded engine's Go runtime
        # reads once, as the process starts (same pid: supervisors see no change).
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    configure_logging(settings)

    async def build() -> Runtime:
        runtime = Runtime.create(settings)
        if runtime.enforcer.embedded:
            await check_connectors([runtime.enforcer.config(n) for n in runtime.enforcer.names])
        return runtime

    async def serve_api(runtime: Runtime) -> None:
        await _uvicorn(create_app(settings, runtime), host or settings.host, port or settings.port)

    raise typer.Exit(code=asyncio.run(start_or_exit(settings, build, serve_api)))


@app.command()
def worker(
    host: Annotated[
        str, typer.Option(help="Address of the probes (/healthz, /readyz).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the probes.")] = 8401,
) -> None:
    """Run a connector worker: a follower per connector applies the change log that the
    API servers (with TOLLGATE_ENFORCE=off) write. No migrations, no deciding, no jobs;
    on PostgreSQL one worker applies each connector while the others stand by."""
    from controlplane.api.worker import create_worker_app
    from controlplane.enforce.config import check_connectors
    from controlplane.runtime import WorkerRuntime

    settings = cli_settings()
    configure_logging(settings)

    async def build() -> WorkerRuntime:
        runtime = WorkerRuntime.create(settings)
        await check_connectors([runtime.enforcer.config(n) for n in runtime.enforcer.names])
        return runtime

    async def serve_probes(runtime: WorkerRuntime) -> None:
        await _uvicorn(create_worker_app(runtime), host, port)

    raise typer.Exit(code=asyncio.run(start_or_exit(settings, build, serve_probes)))


async def _uvicorn(app: Any, host: str, port: int) -> None:
    import uvicorn

    # log_config=None: uvicorn's records go through the handler configure_logging set.
    config = uvicorn.Config(app, host=host, port=port, log_config=None)
    await uvicorn.Server(config).serve()


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply the database migrations to TOLLGATE_DATABASE_URL (default: SQLite under
    the data directory). Never through a server: with only TOLLGATE_URL set it refuses."""
    from controlplane.store.db import upgrade

    settings = cli_settings()
    if settings.url and not settings.database_url:
        raise fail(
            "`tollgate db upgrade` runs the migrations against the database "
            f"(TOLLGATE_DATABASE_URL), not a server, and only TOLLGATE_URL is set ({settings.url})",
            "set TOLLGATE_DATABASE_URL to the server's database (a server migrates its own "
            "at start)",
        )
    url = settings.resolved_database_url
    try:
        upgrade(url, revision)
    except Exception as exc:
        raise fail(
            f"migration failed: {exc}", "check TOLLGATE_DATABASE_URL and that the server runs"
        ) from None
    out.print(f"database at [bold]{_safe_url(url)}[/] is at revision {revision}")


@verdict_app.command("submit")
def verdict_submit(
    file: Annotated[
        str,
        typer.Argument(
            help="A JSON file (one verdict, a list, or "
            '{"verdicts": [...]}), JSON lines, or - for stdin.'
        ),
    ],
    url: Annotated[str | None, typer.Option(help="Server URL [TOLLGATE_URL].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw answers.")] = False,
) -> None:
    """Submit verdicts and print what was decided for each."""
    verdicts = _read_verdicts(file)
    settings = cli_settings()
    results: list[dict[str, Any]] = []
    with api_client(url or settings.api_url, settings.token) as client:
        for i in range(0, len(verdicts), BATCH):
            body = request(
                client, "POST", "/v1/verdicts", json={"verdicts": verdicts[i : i + BATCH]}
            )
            results.extend(body["results"])
    if as_json:
        out.print_json(json.dumps(results))
        return
    for line in decision_lines(results):
        print(line)


def decision_lines(results: list[dict[str, Any]]) -> list[str]:
    """Per verdict a line with its decision (id, status, revision), then a line per
    action (id, type, target, rule, reason). Lines, not a table: an id is never folded to
    the terminal's width, so it can be copied into `decision explain` or `action lift`."""
    lines = []
    for r in results:
        status = r.get("decision_status") or r["status"]
        if r.get("duplicate"):
            status += " (repeat)"
        line = (
            f"verdict {r['verdict_id']}  decision {r.get('decision_id') or '-'}  {status}  "
            f"revision {short_revision(r.get('policy_revision'))}"
        )
        if not r["actions"]:
            line += f"  {r.get('error') or 'no action'}"
        lines.append(line)
        for a in r["actions"]:
            shadow = " (shadow)" if a["shadow"] else ""
            target = f"{a['target']['kind']}:{a['target']['value']}"
            lines.append(
                f"  action {a['id']}  {a['type']}{shadow} {target}  {a['rule']}: {a['reason']}"
            )
    return lines


def _read_verdicts(file: str) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}") from None
    text = text.strip()
    if not text:
        raise fail(f"{file} is empty", "give one verdict, a list, or JSON lines")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
    if document is None:
        verdicts = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                verdicts.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise fail(
                    f"{file}:{n}: not JSON: {exc.msg}",
                    "use one JSON document or one verdict per line",
                ) from None
        return verdicts
    if isinstance(document, dict) and "verdicts" in document:
        document = document["verdicts"]
    return document if isinstance(document, list) else [document]


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command()
def demo(
    serve: Annotated[bool, typer.Option("--serve", help="Keep serving after the replay.")] = False,
    port: Annotated[int, typer.Option(help="Port for the demo server (0: any free one).")] = 0,
) -> None:
    """Replay a scenario of legitimate heavy users and distillers through an embedded
    server, and show what was decided and why, per subject."""
    from controlplane.cli.demo import run_demo

    raise typer.Exit(code=run_demo(keep_serving=serve, port=port))


if __name__ == "__main__":
    app()
