"""Connector types by name, from the `tollgate.connectors` entry-point group, loaded lazily."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from controlplane.enforce.sdk import ConnectorFactory
from controlplane.errors import InvalidInput

GROUP = "tollgate.connectors"


@cache
def available() -> dict[str, str]:
    """Connector type -> the entry point's target, for messages and listings."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def factory(kind: str) -> ConnectorFactory:
    for ep in entry_points(group=GROUP):
        if ep.name == kind:
            loaded: ConnectorFactory = ep.load()
            return loaded
    known = ", ".join(sorted(available())) or "none installed"
    raise InvalidInput(
        f"connector type {kind!r} is not installed (known: {known}); a connector package "
        f"registers itself in the {GROUP!r} entry-point group"
    )
