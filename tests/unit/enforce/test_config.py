"""The connectors' section of the config file: each connector sends nothing wider than
the loosest `min_prefix` of the providers it serves."""

from __future__ import annotations

from pathlib import Path

from controlplane.enforce.config import load_connectors
from controlplane.enforce.targets import DEFAULT_FLOOR, PrefixFloor


def test_a_connector_takes_the_loosest_floor_of_its_providers(tmp_path: Path) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(
        """
providers:
  lab-a: {min_prefix: {ipv4: 12}}
  lab-b: {min_prefix: {ipv4: 20, ipv6: 24}}
connectors:
  - {name: a, type: memory, providers: [lab-a]}
  - {name: b, type: memory, providers: [lab-b]}
  - {name: both, type: memory, providers: [lab-a, lab-b]}
  - {name: every, type: memory}
  - {name: other, type: memory, providers: [lab-c]}
""",
        encoding="utf-8",
    )

    floors = {c.name: c.min_prefix for c in load_connectors(path)}

    assert floors == {
        "a": PrefixFloor(12, 32),
        "b": PrefixFloor(20, 24),
        "both": PrefixFloor(12, 24),
        "every": PrefixFloor(12, 24),
        "other": DEFAULT_FLOOR,
    }
