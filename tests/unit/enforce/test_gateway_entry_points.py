"""The gateway connectors are registered in the `tollgate.connectors` entry-point group,
so `type: aws|envoy|kong|cloudflare` in tollgate.yaml finds them."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("aws", "connectors.aws"),
        ("envoy", "connectors.envoy"),
        ("kong", "connectors.kong"),
        ("cloudflare", "connectors.cloudflare"),
    ],
)
def test_registered(name: str, module: str) -> None:
    (point,) = [p for p in entry_points(group="tollgate.connectors") if p.name == name]
    factory = point.load()
    assert factory.__module__ == module and factory.__name__ == "create"
