"""`tollgate intel`: indicators, peers and pulls, through the API."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from controlplane.cli.client import api_client, request
from controlplane.settings import get_settings

intel_app = typer.Typer(help="Shared intel: indicators, peers, pulls.", no_args_is_help=True)
out = Console()
UrlOption = Annotated[str | None, typer.Option(help="Server URL [TOLLGATE_URL].")]


@intel_app.command("list")
def list_indicators(
    kind: Annotated[str | None, typer.Option(help="Only this kind (cidr, account, ...).")] = None,
    source: Annotated[str | None, typer.Option(help="Only what this lab said.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 100,
    url: UrlOption = None,
) -> None:
    """Indicators, local and pulled (identifiers as keyed hashes)."""
    settings = get_settings()
    params: dict[str, str | int] = {"limit": limit}
    if kind:
        params["kind"] = kind
    if source:
        params["source"] = source
    with api_client(url or settings.api_url, settings.token) as client:
        rows = request(client, "GET", "/v1/intel/indicators", params=params)
    table = Table(title="Indicators")
    for column in (
        "id",
        "kind",
        "value",
        "source",
        "origin",
        "conf",
        "tlp",
        "pap",
        "until",
        "state",
    ):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            r["id"],
            r["kind"],
            r["value"],
            r["source"],
            r["origin"],
            f"{r['confidence']:.2f}",
            r["tlp"],
            r["pap"],
            r["expires_at"] or "-",
            "retracted" if r["revoked"] else "in force",
        )
    out.print(table if rows else "no indicators")


@intel_app.command("peers")
def peers(url: UrlOption = None) -> None:
    """Each peer: health of the last pull and what it contributed."""
    settings = get_settings()
    with api_client(url or settings.api_url, settings.token) as client:
        rows = request(client, "GET", "/v1/intel/peers")
    table = Table(title="Peers")
    for column in (
        "name",
        "health",
        "last pull",
        "in force",
        "accepted",
        "refused",
        "retractions",
        "lifted",
        "trust",
    ):
        table.add_column(column, overflow="fold")
    for p in rows:
        health = (
            "[green]ok[/]"
            if p["healthy"]
            else f"[red]failing[/] {p['last_error'] or 'never pulled'}"
        )
        table.add_row(
            p["name"],
            health,
            p["last_pull_at"] or "never",
            str(p["indicators_in_force"]),
            str(p["accepted"]),
            str(p["rejected"]),
            str(p["retractions"]),
            str(p["lifted"]),
            f"{p['trust']:.2f}",
        )
    out.print(table if rows else "no peers configured (intel.peers in TOLLGATE_CONFIG)")


@intel_app.command("pull")
def pull(
    peer: Annotated[str, typer.Argument(help="The peer's name in intel.peers.")],
    url: UrlOption = None,
) -> None:
    """Pull one peer's collection now."""
    settings = get_settings()
    with api_client(url or settings.api_url, settings.token) as client:
        r = request(client, "POST", f"/v1/intel/peers/{peer}/pull")
    out.print(
        f"{r['peer']}: {r['pages']} page(s), {r['accepted']} accepted, {r['rejected']} refused, "
        f"{r['duplicates']} already held, {r['retractions']} retraction(s), {r['lifted']} lifted"
    )
    if r["error"]:
        out.print(f"[red]error:[/] {r['error']}")
        raise typer.Exit(code=1)


@intel_app.command("retract")
def retract(
    indicator_id: Annotated[
        str, typer.Argument(help="The indicator that caused a false positive.")
    ],
    reason: Annotated[str, typer.Option(help="Why; published to peers in the opinion.")],
    url: UrlOption = None,
) -> None:
    """Mark an indicator a false positive: revoke, tell peers, lift what rested on it."""
    settings = get_settings()
    with api_client(url or settings.api_url, settings.token) as client:
        r = request(
            client, "POST", f"/v1/intel/indicators/{indicator_id}/retract", json={"reason": reason}
        )
    out.print(
        f"retracted {r['id']}: {r['published']} object(s) published, "
        f"{len(r['lifted'])} action(s) lifted"
    )
