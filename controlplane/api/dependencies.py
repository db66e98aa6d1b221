"""Dependency providers: each area exports its own (`DEPENDENCIES` next to its
`ROUTES`), built with `provide` from what the process's `Runtime` holds; the app
adds those every area may ask for (`db`, `settings`, and the request's `session`)
and assembles the rest.

The request is the boundary of its unit of work: a handler that asks for `session`
gets one for the whole request and hands it to the services it calls, which never
open one themselves. A safe method (GET, HEAD) reads in a read session; any other
method writes in one transaction, committed once the handler has returned without an
error (before the answer is sent), rolled back when it raised."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide
from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from controlplane.runtime import Runtime

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def provide(get: Callable[[Runtime], Any]) -> Provide:
    """A provider of what `get` takes from the runtime the app keeps in its state."""

    def _provide(state: State) -> Any:
        return get(state.runtime)

    return Provide(_provide, sync_to_thread=False)


async def _session(request: Request[Any, Any, Any], state: State) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: a read session for a safe method, else one write
    transaction (SQLite takes its lock at the first statement, not here)."""
    if request.method in SAFE_METHODS:
        async with state.runtime.db.read() as session:
            yield session
    else:
        async with state.runtime.db.transaction() as session:
            yield session


async def _read_session(state: State) -> AsyncIterator[AsyncSession]:
    """A read session whatever the method: for a POST that only reads, and reads long
    (an impact replay), so it never holds SQLite's write lock."""
    async with state.runtime.db.read() as session:
        yield session


def common() -> dict[str, Provide]:
    """What every area's handlers may ask for: the database, the settings, the
    request's session (and a read session for a POST that only reads)."""
    return {
        "db": provide(lambda runtime: runtime.db),
        "settings": provide(lambda runtime: runtime.settings),
        "session": Provide(_session),
        "read_session": Provide(_read_session),
    }
