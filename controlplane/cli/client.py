"""Talking to a Tollgate server from the CLI, with errors that say what to do."""

from __future__ import annotations

from typing import Any

import httpx
import typer
from rich.console import Console

from controlplane.errors import TollgateError
from controlplane.settings import Settings, get_settings

err = Console(stderr=True)


def fail(message: str, hint: str = "") -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    if hint:
        err.print(f"[dim]hint:[/] {hint}")
    return typer.Exit(code=1)


def cli_settings() -> Settings:
    """The settings, or one line naming the variable that is wrong."""
    try:
        return get_settings()
    except TollgateError as exc:
        raise fail(exc.message) from None


def local_database(command: str, *, may_create: bool = False) -> str:
    """The database URL for a command that reads the database directly. Refused, in one
    line, when TOLLGATE_URL says the user means a server (the command would otherwise
    act on some local database instead), and when the default SQLite file does not
    exist (unless `may_create`: a first token bootstraps a new installation), so a
    command run in the wrong folder never leaves an empty database behind."""
    settings = cli_settings()
    if settings.url:
        raise fail(
            f"`tollgate {command}` works on the database itself, not through a server, "
            f"and TOLLGATE_URL is set ({settings.url})",
            "set TOLLGATE_DATABASE_URL to the server's database and unset TOLLGATE_URL",
        )
    if not settings.database_url and not may_create:
        path = (settings.data_dir / "tollgate.db").resolve()
        if not path.exists():
            raise fail(
                f"no Tollgate database at {path}",
                "run it in the folder the server runs in, or set TOLLGATE_DATABASE_URL "
                "(or TOLLGATE_DATA_DIR); with only a server's URL, set TOLLGATE_URL",
            )
    return settings.resolved_database_url


def api_client(base_url: str, token: str, timeout: float = 120) -> httpx.Client:
    """A client for the API, sending the bearer token when there is one."""
    if not token:
        err.print(
            "[yellow]warning:[/] TOLLGATE_TOKEN is not set; the server will refuse "
            "the request. Create a token with `tollgate token create`."
        )
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if not base_url.startswith(("http://", "https://")):
        raise fail(
            f"TOLLGATE_URL {base_url!r} is not a server URL",
            "use http(s)://host:port, e.g. http://127.0.0.1:8400",
        )
    try:
        return httpx.Client(base_url=base_url, timeout=timeout, headers=headers)
    except httpx.InvalidURL as exc:
        raise fail(f"TOLLGATE_URL {base_url!r} is not a server URL: {exc}") from None


def request(
    client: httpx.Client, method: str, path: str, *, raw: bool = False, **kwargs: Any
) -> Any:
    """Send one request; turn connection failures and error answers into a clean exit.
    The decoded JSON answer, or its bytes when `raw`."""
    try:
        response = client.request(method, path, **kwargs)
    except httpx.ConnectError:
        raise fail(
            f"no Tollgate server answers at {client.base_url}",
            "start one with `tollgate serve`, or point TOLLGATE_URL at yours",
        ) from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol):
        raise fail(
            f"TOLLGATE_URL {str(client.base_url)!r} is not a server URL",
            "use http(s)://host:port, e.g. http://127.0.0.1:8400",
        ) from None
    except httpx.TimeoutException:
        raise fail(
            f"{client.base_url} did not answer in time", "is the server overloaded?"
        ) from None
    except httpx.TransportError as exc:
        raise fail(
            f"cannot reach the Tollgate server at {client.base_url}: {type(exc).__name__}",
            "check TOLLGATE_URL and the network",
        ) from None
    if response.status_code == 401:
        raise fail(
            f"{client.base_url} refused the token: {response.json().get('message', '')}",
            "set TOLLGATE_TOKEN to a token from `tollgate token create`",
        )
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text}
        err.print(f"[bold red]error {response.status_code}:[/] {body.get('message', body)}")
        for detail in body.get("details", []):
            err.print(f"  [yellow]{detail.get('field', '?')}[/]: {detail.get('message', '')}")
        raise typer.Exit(code=1)
    return response.content if raw else response.json()
