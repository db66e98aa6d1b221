"""`tollgate connector` and `tollgate action`: gateways and manual lifts, through the API."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from controlplane.cli.client import api_client, cli_settings, fail, request

connector_app = typer.Typer(help="Connectors: gateways kept in step.", no_args_is_help=True)
action_app = typer.Typer(help="Actions.", no_args_is_help=True)
out = Console()
UrlOption = Annotated[str | None, typer.Option(help="Server URL [TOLLGATE_URL].")]


@connector_app.command("list")
def list_connectors(url: UrlOption = None) -> None:
    """Each connector's health, last reconcile, desired vs applied, failures and lag."""
    settings = cli_settings()
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
    settings = cli_settings()
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


@action_app.command("list")
def list_actions(
    state: Annotated[
        str | None, typer.Option(help="pending, applied, failed, expired or lifted.")
    ] = None,
    action_type: Annotated[
        str | None, typer.Option("--type", help="rate_limit, revoke_key, block, ...")
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="kind:value, e.g. api_key:key_3 or ip:203.0.113.7.")
    ] = None,
    provider: Annotated[str | None, typer.Option(help="One provider's actions.")] = None,
    shadow: Annotated[
        bool | None, typer.Option("--shadow/--enforced", help="Only shadow-mode, or only real.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Go on after this action id.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw answer.")] = False,
    url: UrlOption = None,
) -> None:
    """Actions, newest first: what is enforced on whom, by which rule, and its state."""
    params: dict[str, str | int] = {"limit": limit}
    for name, value in (("state", state), ("type", action_type), ("provider", provider)):
        if value is not None:
            params[name] = value
    if target is not None:
        kind, sep, value = target.partition(":")
        if not sep or not kind or not value:
            raise fail(f"--target {target!r} is not kind:value", "e.g. api_key:key_3")
        params |= {"target_kind": kind, "target_value": value}
    if shadow is not None:
        params["shadow"] = "true" if shadow else "false"
    if cursor is not None:
        params["cursor"] = cursor
    settings = cli_settings()
    with api_client(url or settings.api_url, settings.token) as client:
        page = request(client, "GET", "/v1/actions", params=params)
    if as_json:
        out.print_json(data=page)
        return
    table = Table(title="Actions")
    for column in ("id", "state", "type", "target", "provider", "rule", "reason", "created"):
        table.add_column(column, overflow="fold")
    for a in page["items"]:
        shadowed = " (shadow)" if a.get("shadow") else ""
        table.add_row(
            a["id"],
            a["state"],
            a["type"] + shadowed,
            f"{a['target']['kind']}:{a['target']['value']}",
            a["provider"],
            a["rule"],
            a["reason"],
            str(a.get("created_at", ""))[:19],
        )
    out.print(table if page["items"] else "no actions")
    if page.get("next_cursor"):
        out.print(f"more: --cursor {page['next_cursor']}", highlight=False)


@action_app.command("lift")
def lift(
    action_id: Annotated[str, typer.Argument(help="The action id (act_...).")],
    reason: Annotated[str, typer.Option(help="Why, for the record.")],
    url: UrlOption = None,
) -> None:
    """Lift an active action by hand; gateways drop it at once."""
    settings = cli_settings()
    with api_client(url or settings.api_url, settings.token) as client:
        a = request(client, "POST", f"/v1/actions/{action_id}/lift", json={"reason": reason})
    out.print(f"lifted {a['id']}: {a['type']} {a['target']['kind']}:{a['target']['value']}")
