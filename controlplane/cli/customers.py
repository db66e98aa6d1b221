"""`tollgate customer` and `tollgate review`: customer records and the review queue,
through the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from controlplane.cli.client import api_client, cli_settings, fail, request

customer_app = typer.Typer(help="Customer records.", no_args_is_help=True)
review_app = typer.Typer(help="Reviews of actions withheld from customers.", no_args_is_help=True)
out = Console()
UrlOption = Annotated[str | None, typer.Option(help="Server URL [TOLLGATE_URL].")]
BATCH = 10_000


def read_records(path: Path) -> list[dict[str, Any]]:
    """A JSON array of records, or JSON lines (one record per line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror or exc}") from None
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            records = json.loads(stripped)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise fail(
            f"{path} is neither a JSON array nor JSON lines: {exc}",
            "one record per line, or one array of records",
        ) from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise fail(f"{path}: every record must be a JSON object")
    return records


@customer_app.command("import")
def import_customers(
    file: Annotated[Path, typer.Argument(help="JSON array or JSON lines of records.")],
    url: UrlOption = None,
) -> None:
    """Send customer records (account_id, org_id, tier, verified, keys, contract, owner)
    in batches of 10,000; a bad record stops its batch whole, naming the field."""
    records = read_records(file)
    settings = cli_settings()
    created = updated = 0
    with api_client(url or settings.api_url, settings.token) as client:
        for i in range(0, len(records), BATCH):
            done = request(
                client, "POST", "/v1/customers", json={"customers": records[i : i + BATCH]}
            )
            created += done["created"]
            updated += done["updated"]
    out.print(f"{created} customer record(s) created, {updated} replaced")


@review_app.command("list")
def list_reviews(
    state: Annotated[str, typer.Option(help="open, confirmed or dismissed.")] = "open",
    url: UrlOption = None,
) -> None:
    """Reviews oldest first, with what each withheld."""
    settings = cli_settings()
    with api_client(url or settings.api_url, settings.token) as client:
        page = request(client, "GET", "/v1/reviews", params={"state": state, "limit": 1000})
    table = Table(title=f"Reviews ({state})")
    for column in ("id", "age", "subject", "withheld", "reason"):
        table.add_column(column, overflow="fold")
    for r in page["reviews"]:
        withheld = ", ".join(
            f"{w['type']} {w['target']['kind']}:{w['target']['value']}" for w in r["withheld"]
        )
        table.add_row(
            r["id"],
            f"{r['age_seconds'] / 60:.0f} min",
            f"{r['subject']['kind']}:{r['subject']['value']}",
            withheld,
            r["reason"],
        )
    out.print(table if page["reviews"] else f"no {state} reviews")


@review_app.command("confirm")
def confirm(
    review_id: Annotated[str, typer.Argument(help="Review id.")],
    note: Annotated[str, typer.Option(help="Recorded with the confirmation.")] = "",
    url: UrlOption = None,
) -> None:
    """Apply the withheld actions now (recorded with your token's name)."""
    settings = cli_settings()
    with api_client(url or settings.api_url, settings.token) as client:
        done = request(client, "POST", f"/v1/reviews/{review_id}/confirm", json={"note": note})
    for a in done["actions"]:
        out.print(f"planned {a['type']} {a['target']['kind']}:{a['target']['value']} ({a['id']})")


@review_app.command("dismiss")
def dismiss(
    review_id: Annotated[str, typer.Argument(help="Review id.")],
    reason: Annotated[str, typer.Option(help="Why nothing should be done.")],
    url: UrlOption = None,
) -> None:
    """Keep the actions withheld, with a reason."""
    settings = cli_settings()
    with api_client(url or settings.api_url, settings.token) as client:
        request(client, "POST", f"/v1/reviews/{review_id}/dismiss", json={"reason": reason})
    out.print(f"review {review_id} dismissed")
