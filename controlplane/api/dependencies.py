"""Dependency providers: each area exports its own (`DEPENDENCIES` next to its
`ROUTES`), built with `provide` from what the process's `Runtime` holds; the app
adds the two every area may ask for, `db` and `settings`, and assembles the rest."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from litestar.datastructures import State
from litestar.di import Provide

if TYPE_CHECKING:
    from controlplane.runtime import Runtime


def provide(get: Callable[[Runtime], Any]) -> Provide:
    """A provider of what `get` takes from the runtime the app keeps in its state."""

    def _provide(state: State) -> Any:
        return get(state.runtime)

    return Provide(_provide, sync_to_thread=False)


def common() -> dict[str, Provide]:
    """What every area's handlers may ask for: the database and the settings."""
    return {
        "db": provide(lambda runtime: runtime.db),
        "settings": provide(lambda runtime: runtime.settings),
    }
