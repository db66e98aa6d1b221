"""Starting a server or a connector worker: everything that can be wrong with the
settings, the config file, the database or the policies is found before serving, and
stops the process with one line saying what and a non-zero exit, never a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from controlplane.enforce.sdk import ConnectorError
from controlplane.errors import TollgateError
from controlplane.settings import Settings

log = logging.getLogger("controlplane.startup")

CANNOT_START = 2
"""The exit status of a process that refused to start (1 is uvicorn's own failures)."""


class CannotStart(Exception):
    """Why the process will not start, in one line."""


def reason(exc: BaseException, settings: Settings | None = None) -> str | None:
    """One line for the errors a start can meet; None for a bug (left to a traceback)."""
    if isinstance(exc, TollgateError):
        return exc.message
    if isinstance(exc, ConnectorError):
        return str(exc)
    if isinstance(exc, ArgumentError | ValueError) and settings is not None:
        return f"TOLLGATE_DATABASE_URL is not a database URL: {exc}"
    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None) or exc
        detail = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        where = safe_url(settings.resolved_database_url) if settings else "the database"
        return f"cannot use the database at {where}: {detail}"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
    return None


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an unparsable URL)"


def fatal(message: str) -> int:
    """Say why the process stops, on stderr and in the log, and return its exit status."""
    log.error("cannot start: %s", message)
    if not logging.getLogger().handlers:
        print(f"tollgate: cannot start: {message}", file=sys.stderr)
    return CANNOT_START


async def start_or_exit(
    settings: Settings,
    build: Callable[[], Awaitable[Any]],
    serve: Callable[[Any], Awaitable[None]],
) -> int:
    """Build and start a runtime (an object with `start` and `stop`), then serve it."""
    try:
        runtime = await build()
    except Exception as exc:
        if (message := reason(exc, settings)) is None:
            raise
        return fatal(message)
    try:
        await runtime.start()
    except Exception as exc:
        message = reason(exc, settings)
        await _quietly(runtime.stop)
        if message is None:
            raise
        return fatal(message)
    try:
        await serve(runtime)
    finally:
        await _quietly(runtime.stop)
    return 0


async def _quietly(stop: Callable[[], Awaitable[None]]) -> None:
    try:
        await stop()
    except Exception:
        log.debug("stopping after a failed start", exc_info=True)
