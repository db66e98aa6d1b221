"""`tollgate token`: bearer tokens for detectors, engineers, reviewers and auditors.

With TOLLGATE_URL set (and an admin's TOLLGATE_TOKEN) they go through the server's
`/v1/tokens`; without, they work on the database directly, which is how the first
admin token of an installation is made."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table

from controlplane.auth.jobs import Tokens
from controlplane.auth.roles import Role
from controlplane.auth.schemas import TokenOut
from controlplane.cli.client import api_client, cli_settings, fail, local_database, request
from controlplane.domain.action import parse_duration
from controlplane.errors import TollgateError
from controlplane.store.db import Database, upgrade
from controlplane.store.types import utcnow

token_app = typer.Typer(help="API tokens (stored hashed; shown once).", no_args_is_help=True)
out = Console()
T = TypeVar("T")


async def _with_tokens(work: Callable[[Tokens], Awaitable[T]], *, may_create: bool = False) -> T:
    db = Database(local_database("token", may_create=may_create))
    try:
        await asyncio.to_thread(upgrade, db.url)
        return await work(Tokens(db))
    finally:
        await db.dispose()


@token_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="Who or what holds it; recorded as the actor.")],
    role: Annotated[Role, typer.Option(help="What it may do.")],
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 90d.")] = None,
) -> None:
    """Create a token and print it once: store it in your secret manager. With
    TOLLGATE_URL set, the server issues it (an admin's TOLLGATE_TOKEN); without, it is
    written to the database directly (how the first admin token is made)."""
    try:
        expires_at = utcnow() + parse_duration(expires) if expires else None
    except ValueError as exc:
        raise fail(f"--expires: {exc}") from None
    settings = cli_settings()
    if settings.url:
        body = {"name": name, "role": role.value, "expires": expires}
        with api_client(settings.api_url, settings.token) as client:
            created = request(client, "POST", "/v1/tokens", json=body)
        token_id, token = str(created["id"]), str(created["token"])
    else:
        token, row = asyncio.run(
            _with_tokens(
                lambda t: t.create(name, role, actor="cli", expires_at=expires_at), may_create=True
            )
        )
        token_id = row.id
    out.print(
        f"token [bold]{token_id}[/] for {name} ({role.value}); it is shown only now:",
        highlight=False,
    )
    print(token)


@token_app.command("list")
def list_tokens() -> None:
    """Tokens by id, name and role (never the tokens themselves)."""
    settings = cli_settings()
    if settings.url:
        with api_client(settings.api_url, settings.token) as client:
            rows = [TokenOut.model_validate(t) for t in request(client, "GET", "/v1/tokens")]
    else:
        rows = [TokenOut.from_row(r) for r in asyncio.run(_with_tokens(lambda t: t.list()))]
    table = Table(title="API tokens")
    for column in ("id", "name", "role", "created", "expires", "revoked"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.id,
            r.name,
            r.role,
            f"{r.created_at:%Y-%m-%d %H:%M}",
            f"{r.expires_at:%Y-%m-%d}" if r.expires_at else "-",
            f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "-",
        )
    out.print(table)


@token_app.command("revoke")
def revoke(token_id: Annotated[str, typer.Argument(help="The token's id (tok_...).")]) -> None:
    """Revoke a token; servers refuse it within seconds."""
    settings = cli_settings()
    if settings.url:
        with api_client(settings.api_url, settings.token) as client:
            request(client, "DELETE", f"/v1/tokens/{quote(token_id, safe='')}")
    else:
        try:
            asyncio.run(_with_tokens(lambda t: t.revoke(token_id, actor="cli")))
        except TollgateError as exc:
            raise fail(exc.message) from None
    out.print(f"token {token_id} revoked")
