"""`tollgate decision explain`: why a decision came out as it did."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table

from controlplane.cli.client import api_client, cli_settings, fail, local_database, request
from controlplane.errors import TollgateError
from controlplane.evaluate.explain import Explanation, explain
from controlplane.store.db import Database

decision_app = typer.Typer(help="Decisions.", no_args_is_help=True)
out = Console()


async def _explain(decision_id: str, url: str) -> Explanation:
    db = Database(url)
    try:
        async with db.read() as session:
            return await explain(session, decision_id)
    finally:
        await db.dispose()


@decision_app.command("explain")
def explain_command(
    decision_id: Annotated[
        str,
        typer.Argument(help="The decision id (dec_...), or a reference a refusal quoted (TG-...)."),
    ],
    all_rules: Annotated[
        bool, typer.Option("--all", help="Show helper rules (_name) too.")
    ] = False,
) -> None:
    """Re-evaluate the stored input at the stored revision; show the rules that fired
    with their METADATA and bindings, and whether the re-run matches. With TOLLGATE_URL
    set, the server explains it (`GET /v1/decisions/{id}/explain`)."""
    settings = cli_settings()
    if settings.url:
        with api_client(settings.api_url, settings.token) as client:
            e = request(client, "GET", f"/v1/decisions/{quote(decision_id, safe='')}/explain")
    else:
        try:
            found = asyncio.run(_explain(decision_id, local_database("decision explain")))
        except TollgateError as exc:
            raise fail(exc.message) from None
        e = asdict(found)
    _print(e, all_rules)


def _print(e: dict[str, Any], all_rules: bool) -> None:
    """An explanation, as the API answers it or as computed here."""
    out.print(f"decision [bold]{e['decision_id']}[/] for verdict [bold]{e['verdict_id']}[/]")
    out.print(
        f"revision {e['policy_revision']}, entrypoint data.{e['entrypoint']}, "
        f"stored status {e['stored_status']}"
    )
    if e["matches"]:
        out.print("[green]re-run matches the stored result[/]")
    else:
        out.print("[bold red]re-run differs from the stored result[/]")
        out.print(f"  stored: {json.dumps(e['stored_result'], sort_keys=True)}", highlight=False)
        out.print(
            f"  re-run: {json.dumps(e['rerun_result'], sort_keys=True)}"
            + (f" ({e['rerun_error']})" if e["rerun_error"] else ""),
            highlight=False,
        )
    actions = Table(title="Actions and the rules that asked for them")
    for column in ("action", "target", "rule", "title", "owner", "reason"):
        actions.add_column(column, overflow="fold")
    for a in e["actions"]:
        meta = a.get("metadata") or {}
        target = a.get("target") or {}
        actions.add_row(
            str(a.get("type")),
            f"{target.get('kind')}:{target.get('value')}",
            str(a.get("rule")),
            str(meta.get("title", "-")),
            str((meta.get("custom") or {}).get("owner", "-")),
            str(a.get("reason")),
        )
    out.print(actions if e["actions"] else "no actions")
    fired = Table(title="Rules that evaluated true, in order, with their bindings")
    for column in ("rule", "where", "bindings"):
        fired.add_column(column, overflow="fold")
    for rule in e["fired"]:
        short = rule["rule"].rsplit(".", 1)[-1]
        if short.startswith("_") and not all_rules:
            continue
        bindings = rule.get("bindings")
        fired.add_row(
            rule["rule"], rule["location"], json.dumps(bindings, sort_keys=True) if bindings else ""
        )
    out.print(fired)
