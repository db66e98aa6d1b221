"""Console sessions: an API token, given once at sign-in, becomes a signed cookie.

The cookie never holds the token. It holds the token's id, an expiry and a nonce,
signed with HMAC-SHA256 under `TOLLGATE_CONSOLE_SECRET`, so it can be checked on any
replica without a session table. Each request also checks that the token is still
active (cached a few seconds, like bearer tokens), so revoking the token ends every
console session it opened. Only readers (engineer, reviewer, auditor, admin) may
sign in: the console shows the whole enforcement record.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

from controlplane.auth.roles import READERS, Role
from controlplane.auth.service import Principal, token_by_id
from controlplane.settings import Settings
from controlplane.store.db import Database
from controlplane.store.types import utcnow

log = logging.getLogger(__name__)

COOKIE = "tollgate_console"
CSRF_COOKIE = "tollgate_csrf"
CSRF_FIELD = "csrf"
_CSRF_VALUE = re.compile(r"^[0-9a-f]{64}$")
SIGN_IN = "/console/sign-in"
CACHE_SECONDS = 10.0
_VERSION = "v1"
_PROCESS_SECRET = secrets.token_bytes(32)
"""Used when `TOLLGATE_CONSOLE_SECRET` is unset: sessions end at restart."""
_cache: dict[tuple[str, str], tuple[float, Principal | None]] = {}
_warned = False

ALLOWED = frozenset(READERS) | {Role.ADMIN}


class SignInRequired(NotAuthorizedException):
    """No valid console session: the console answers with a redirect to sign in."""

    def __init__(self, next_path: str) -> None:
        super().__init__("sign in to the console")
        self.next_path = next_path


def _key(settings: Settings) -> bytes:
    secret = settings.console_secret.encode() if settings.console_secret else _PROCESS_SECRET
    return hashlib.sha256(b"tollgate.console.session.v1\0" + secret).digest()


def _sign(settings: Settings, message: str) -> str:
    digest = hmac.new(_key(settings), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def issue(settings: Settings, principal: Principal) -> tuple[str, int]:
    """A cookie value for `principal` and its lifetime in seconds."""
    global _warned
    if not settings.console_secret and not _warned:
        _warned = True
        log.warning(
            "TOLLGATE_CONSOLE_SECRET is unset: console sessions are signed with a key of "
            "this process, so they end at restart and work on this replica only"
        )
    lifetime = max(60, int(settings.console_session_hours * 3600))
    expires = int(time.time()) + lifetime
    message = f"{_VERSION}.{principal.token_id}.{expires}.{secrets.token_hex(8)}"
    return f"{message}.{_sign(settings, message)}", lifetime


def token_id_of(settings: Settings, value: str) -> str | None:
    """The token id a cookie was issued for, if its signature holds and it has not expired."""
    parts = value.split(".")
    if len(parts) != 5 or parts[0] != _VERSION:
        return None
    message, signature = ".".join(parts[:4]), parts[4]
    if not hmac.compare_digest(signature, _sign(settings, message)):
        return None
    try:
        expires = int(parts[2])
    except ValueError:
        return None
    return parts[1] if expires > time.time() else None


async def principal_for(db: Database, token_id: str) -> Principal | None:
    """The principal of an active reader token, or None (unknown, revoked, expired)."""
    key = (db.url, token_id)
    cached = _cache.get(key)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    async with db.read() as session:
        row = await token_by_id(session, token_id)
    principal = None
    if (
        row is not None
        and row.revoked_at is None
        and (row.expires_at is None or row.expires_at > utcnow())
        and row.role in {r.value for r in ALLOWED}
    ):
        principal = Principal(row.id, row.name, Role(row.role))
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[key] = (time.monotonic() + CACHE_SECONDS, principal)
    return principal


async def current(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    value = connection.cookies.get(COOKIE)
    if not value:
        return None
    runtime = connection.app.state.runtime
    token_id = token_id_of(runtime.settings, value)
    if token_id is None:
        return None
    return await principal_for(runtime.db, token_id)


async def signed_in(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of every console page: a valid session of a reader, or a redirect to sign in.
    The principal is left where the API's guards leave theirs (`principal_of` works)."""
    principal = await current(connection)
    if principal is None:
        query = connection.scope.get("query_string", b"").decode("latin-1")
        raise SignInRequired(connection.url.path + (f"?{query}" if query else ""))
    connection.scope["tollgate_principal"] = principal  # type: ignore[typeddict-unknown-key]


def safe_next(value: str | None) -> str:
    """Where to go after sign-in: a console path only (no open redirect)."""
    if value and value.startswith("/console") and "//" not in value and "\\" not in value:
        return value
    return "/console"


# -- forms -------------------------------------------------------------------------------
# Sign-in and sign-out change who the browser is signed in as, so a page elsewhere must
# not be able to post them (login CSRF: the victim would work as the attacker's token).
# Each form carries a token bound to a cookie of ours (HttpOnly, SameSite=Strict, so a
# cross-site post never has it), and a browser's Origin must be this host.


def csrf_cookie(connection: ASGIConnection[Any, Any, Any, Any]) -> tuple[str, bool]:
    """The browser's CSRF cookie value, or a new one (and True: set it)."""
    value = connection.cookies.get(CSRF_COOKIE, "")
    if _CSRF_VALUE.match(value):
        return value, False
    return secrets.token_hex(32), True


def csrf_token(settings: Settings, cookie_value: str) -> str:
    """What a form must carry for the browser holding `cookie_value`."""
    return _sign(settings, f"csrf.{cookie_value}")


def page_csrf(connection: ASGIConnection[Any, Any, Any, Any]) -> tuple[str, list[Cookie]]:
    """The token a page's forms carry, and the CSRF cookie to set with the page (none when
    the browser has one). Like `current`, it reads the settings the app holds, so the
    handlers that render pages are given nothing of the runtime."""
    value, fresh = csrf_cookie(connection)
    token = csrf_token(connection.app.state.runtime.settings, value)
    return token, [set_csrf_cookie(value, connection.url.scheme == "https")] if fresh else []


def set_csrf_cookie(value: str, secure: bool) -> Cookie:
    return Cookie(
        key=CSRF_COOKIE,
        value=value,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def form_problem(
    connection: ASGIConnection[Any, Any, Any, Any], settings: Settings, sent: str
) -> str | None:
    """Why a posted console form must be refused, or None."""
    origin = connection.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != connection.headers.get("host", ""):
        return "This form was sent from another site: open the console's own page to use it."
    if connection.headers.get("sec-fetch-site") == "cross-site":
        return "This form was sent from another site: open the console's own page to use it."
    cookie = connection.cookies.get(CSRF_COOKIE, "")
    if not _CSRF_VALUE.match(cookie) or not hmac.compare_digest(sent, csrf_token(settings, cookie)):
        return "This form has expired or was not sent from the console: reload it and try again."
    return None
