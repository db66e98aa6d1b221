"""`tollgate appeal`, `tollgate exemption`, `tollgate report`: undoing mistakes and the
figures of how often, through the API."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from controlplane.cli.client import api_client, cli_settings, fail, request

appeal_app = typer.Typer(help="Appeals: customers asking for enforcement to be undone.")
exemption_app = typer.Typer(help="Exemptions: subjects no policy may enforce against.")
report_app = typer.Typer(help="Reports.", no_args_is_help=True)
for _app in (appeal_app, exemption_app):
    _app.info.no_args_is_help = True
out = Console()
UrlOption = Annotated[str | None, typer.Option(help="Server URL [TOLLGATE_URL].")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the raw answer.")]
KINDS = ("account", "api_key", "ip", "cidr", "org")


def _subject(text: str) -> dict[str, str]:
    kind, sep, value = text.partition(":")
    if not sep or kind not in KINDS or not value:
        raise fail(f"subject {text!r} is not kind:value", f"kind is one of {', '.join(KINDS)}")
    return {"kind": kind, "value": value}


def _call(url: str | None, method: str, path: str, **kwargs: Any) -> Any:
    settings = cli_settings()
    with api_client(url or settings.api_url, settings.token) as client:
        return request(client, method, path, **kwargs)


def _show_appeal(a: dict[str, Any]) -> None:
    subject = a["subject"]
    out.print(
        f"appeal [bold]{a['id']}[/] ({a['state']}) on {subject['kind']}:{subject['value']} "
        f"in {a['provider']}, filed by {a['filed_by']} at {a['filed_at']}",
        highlight=False,
    )
    if a.get("reference"):
        out.print(f"reference: {a['reference']}", highlight=False)
    out.print(f"statement: {a['statement']}", highlight=False)
    out.print(f"contact: {a['contact']}", highlight=False)
    if a["decided_by"]:
        out.print(
            f"decided by {a['decided_by']} at {a['decided_at']}: {a['decision_reason']}",
            highlight=False,
        )
    if a.get("outcome"):
        out.print(f"outcome: {a['outcome']}", highlight=False)
    table = Table(title="Actions covered")
    for column in ("action", "type", "target", "rule", "state", "lifted at"):
        table.add_column(column, overflow="fold")
    for c in a["actions"]:
        action = c["action"]
        table.add_row(
            action["id"],
            action["type"],
            f"{action['target']['kind']}:{action['target']['value']}",
            action["rule"],
            action["state"],
            c["lifted_at"] or "",
        )
    out.print(table if a["actions"] else "no actions covered")


@appeal_app.command("file")
def appeal_file(
    subject: Annotated[str, typer.Argument(help="kind:value, e.g. account:acct_9.")],
    provider: Annotated[str, typer.Option(help="The provider (tenant).")],
    statement: Annotated[str, typer.Option(help="The customer's case.")],
    contact: Annotated[str, typer.Option(help="Where the outcome goes.")],
    action: Annotated[
        list[str] | None, typer.Option(help="An action appealed (repeatable); none: all.")
    ] = None,
    reference: Annotated[str | None, typer.Option(help="The reference a refusal showed.")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """File an appeal (support)."""
    body: dict[str, Any] = {
        "subject": _subject(subject),
        "provider": provider,
        "statement": statement,
        "contact": contact,
        "action_ids": action or [],
    }
    if reference:
        body["reference"] = reference
    a = _call(url, "POST", "/v1/appeals", json=body)
    if as_json:
        out.print_json(json.dumps(a))
        return
    _show_appeal(a)


@appeal_app.command("list")
def appeal_list(
    state: Annotated[str | None, typer.Option(help="open, upheld or denied.")] = None,
    provider: Annotated[str | None, typer.Option()] = None,
    subject: Annotated[str | None, typer.Option(help="kind:value.")] = None,
    age: Annotated[str | None, typer.Option(help="Only older than this (2d, 12h).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """The appeal queue, newest first."""
    params = {
        k: v
        for k, v in {
            "state": state,
            "provider": provider,
            "subject": subject,
            "age": age,
            "limit": limit,
        }.items()
        if v is not None
    }
    page = _call(url, "GET", "/v1/appeals", params=params)
    if as_json:
        out.print_json(json.dumps(page))
        return
    table = Table(title="Appeals")
    for column in ("appeal", "state", "provider", "subject", "actions", "filed", "by"):
        table.add_column(column, overflow="fold")
    for a in page["items"]:
        table.add_row(
            a["id"],
            a["state"],
            a["provider"],
            f"{a['subject']['kind']}:{a['subject']['value']}",
            str(len(a["actions"])),
            a["filed_at"],
            a["filed_by"],
        )
    out.print(table if page["items"] else "no appeals")


@appeal_app.command("show")
def appeal_show(
    appeal_id: Annotated[str, typer.Argument(help="apl_...")],
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """One appeal with every action it covers and its state now."""
    a = _call(url, "GET", f"/v1/appeals/{appeal_id}")
    if as_json:
        out.print_json(json.dumps(a))
        return
    _show_appeal(a)


@appeal_app.command("uphold")
def appeal_uphold(
    appeal_id: Annotated[str, typer.Argument(help="apl_...")],
    reason: Annotated[str, typer.Option(help="Why, for the record and the customer.")],
    exempt_for: Annotated[
        str, typer.Option(help="Exempt the subject this long (30d); 'none' for no exemption.")
    ] = "30d",
    url: UrlOption = None,
) -> None:
    """Uphold: lift what the appeal covers everywhere, exempt the subject (reviewers)."""
    body = {"reason": reason, "exempt_for": None if exempt_for == "none" else exempt_for}
    _show_appeal(_call(url, "POST", f"/v1/appeals/{appeal_id}/uphold", json=body))


@appeal_app.command("deny")
def appeal_deny(
    appeal_id: Annotated[str, typer.Argument(help="apl_...")],
    reason: Annotated[str, typer.Option(help="Why, for the record and the customer.")],
    url: UrlOption = None,
) -> None:
    """Deny: nothing changes at any gateway (reviewers)."""
    _show_appeal(_call(url, "POST", f"/v1/appeals/{appeal_id}/deny", json={"reason": reason}))


@exemption_app.command("add")
def exemption_add(
    subject: Annotated[str, typer.Argument(help="kind:value, e.g. ip:198.51.100.7.")],
    provider: Annotated[str, typer.Option()],
    owner: Annotated[str, typer.Option(help="Who vouches for the subject.")],
    reason: Annotated[str, typer.Option()],
    expires_at: Annotated[
        str | None, typer.Option(help="RFC 3339, e.g. 2027-01-01T00:00:00Z; none: no expiry.")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Exempt a subject; what is enforced on it is lifted at once."""
    body: dict[str, Any] = {
        "subject": _subject(subject),
        "provider": provider,
        "owner": owner,
        "reason": reason,
    }
    if expires_at:
        body["expires_at"] = expires_at
    e = _call(url, "POST", "/v1/exemptions", json=body)
    out.print(f"exemption [bold]{e['id']}[/] added; lifted {len(e['lifted'])} action(s)")
    for item in e["carve_out"]:
        state = "[green]carved out[/]" if item["carved_out"] else "[yellow]not carved out[/]"
        out.print(f"  {item['connector']}: {state} {item['detail']}", highlight=False)
    if e["covering"]:
        out.print(f"  inside blocked range(s) of action(s): {', '.join(e['covering'])}")


@exemption_app.command("list")
def exemption_list(
    provider: Annotated[str | None, typer.Option()] = None,
    all_of_them: Annotated[bool, typer.Option("--all", help="Ended ones too.")] = False,
    url: UrlOption = None,
) -> None:
    """Exemptions, newest first (only live ones unless --all)."""
    params: dict[str, Any] = {"live": str(not all_of_them).lower()}
    if provider:
        params["provider"] = provider
    rows = _call(url, "GET", "/v1/exemptions", params=params)
    table = Table(title="Exemptions")
    for column in ("id", "provider", "subject", "owner", "reason", "expires", "ended"):
        table.add_column(column, overflow="fold")
    for e in rows:
        table.add_row(
            e["id"],
            e["provider"],
            f"{e['subject']['kind']}:{e['subject']['value']}",
            e["owner"],
            e["reason"],
            e["expires_at"] or "never",
            e["ended_at"] or "",
        )
    out.print(table if rows else "no exemptions")


@exemption_app.command("remove")
def exemption_remove(
    exemption_id: Annotated[str, typer.Argument(help="exm_...")],
    reason: Annotated[str, typer.Option(help="Why, for the record.")],
    url: UrlOption = None,
) -> None:
    """End an exemption now."""
    e = _call(url, "DELETE", f"/v1/exemptions/{exemption_id}", params={"reason": reason})
    out.print(f"exemption {e['id']} ended at {e['ended_at']}")


@report_app.command("remediation")
def report_remediation(
    since: Annotated[str | None, typer.Option(help="RFC 3339; default 30 days ago.")] = None,
    until: Annotated[str | None, typer.Option(help="RFC 3339; default now.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="markdown, csv or json.")] = "markdown",
    url: UrlOption = None,
) -> None:
    """Appeals, reversals and how fast, per rule and per detector."""
    if fmt not in ("markdown", "csv", "json"):
        raise fail(f"--format {fmt!r} is not markdown, csv or json")
    params = {k: v for k, v in {"since": since, "until": until, "format": fmt}.items() if v}
    settings = cli_settings()
    with api_client(url or settings.api_url, settings.token) as client:
        response = client.get("/v1/reports/remediation", params=params)
        if response.status_code >= 400:
            request(client, "GET", "/v1/reports/remediation", params=params)  # prints why
        text = response.text
    if fmt == "json":
        out.print_json(text)
    else:
        print(text, end="")
