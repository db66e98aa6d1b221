"""`tollgate connector` and `tollgate action`: gateways and manual lifts, through the API."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from controlplane.cli.client import api_client, request
from controlplane.settings import get_settings

connector_app = typer.Typer(help="Connectors: gateways kept in step.", no_args_is_help=True)
action_app = typer.Typer(help="Actions.", no_args_is_help=True)
out = Console()
UrlOption = Annotated[str | None, typer.Option(help="Server URL [TOLLGATE_URL].")]


@connector_app.command("list")
def list_connectors(url: UrlOption = None) -> None:
    """Each connector's health, last reconcile, desired vs applied, failures and lag."""
    settings = get_settings()
    with api_client(url or settings.api_url, settings.token) as client:
        connectors = request(client, "GET", "/v1/connectors")
    table = Table(title="Connectors")
    for column in (
        "name",
        "type",
        "providers",
        "health",
        "desired",
        "applied",
        "failed",
        "lag",
        "last reconcile",
        "last error",
    ):
        table.add_column(column, overflow="fold")
    for c in connectors:
        health = "[green]ok[/]" if c["healthy"] else f"[red]down[/] {c['detail']}"
        table.add_row(
            c["name"],
            c["type"],
            ",".join(c["providers"]),
            health,
            str(c["desired"]),
            str(c["applied"]),
            str(c["failed"]),
            f"{c['lag_seconds']:.1f}s",
            c["last_reconcile_at"] or "never",
            c["last_error"] or "",
        )
    out.print(table if connectors else "no connectors configured (see TOLLGATE_CONFIG)")


@connector_app.command("reconcile")
def reconcile(
    name: Annotated[str, typer.Argument(help="Connector name.")], url: UrlOption = None
) -> None:
    """Reconcile one connector now: observe, diff, apply."""
    settings = get_settings()
    with api_client(url or settings.api_url, settings.token, timeout=600) as client:
        r = request(client, "POST", f"/v1/connectors/{name}/reconcile")
    status = "[green]ok[/]" if r["ok"] else f"[red]failed[/] {r['error'] or ''}"
    out.print(
        f"{name}: {status}; desired {r['desired']}, applied {r['applied']}, "
        f"added {r['added']}, removed {r['removed']}, changed {r['changed']}, "
        f"failed {r['failed']}, drift repaired {r['drift_repaired']}"
    )
    for failure in r["failures"]:
        out.print(f"  [red]{failure}[/]", highlight=False)
    if not r["ok"]:
        raise typer.Exit(code=1)


@action_app.command("lift")
def lift(
    action_id: Annotated[str, typer.Argument(help="The action id (act_...).")],
    reason: Annotated[str, typer.Option(help="Why, for the record.")],
    url: UrlOption = None,
) -> None:
    """Lift an active action by hand; gateways drop it at once."""
    settings = get_settings()
    with api_client(url or settings.api_url, settings.token) as client:
        a = request(client, "POST", f"/v1/actions/{action_id}/lift", json={"reason": reason})
    out.print(f"lifted {a['id']}: {a['type']} {a['target']['kind']}:{a['target']['value']}")
