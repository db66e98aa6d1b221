"""The connectors' section of the config file: each connector sends nothing wider than
the loosest `min_prefix` of the providers it serves."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.enforce.config import check_connectors, load_connectors
from controlplane.enforce.targets import DEFAULT_FLOOR, PrefixFloor
from controlplane.errors import InvalidInput


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


def test_an_unknown_connector_type_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text("connectors:\n  - {name: edge, type: haproxi}\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as caught:
        load_connectors(path)
    assert "connectors[0].type" in caught.value.message
    assert "'haproxi'" in caught.value.message and "haproxy" in caught.value.message


def test_a_process_that_applies_nothing_never_reads_the_secrets(tmp_path: Path) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(
        "connectors:\n  - name: keys\n    type: webhook\n"
        "    secrets: {signing_key: {env: TOLLGATE_TEST_NEVER_SET}}\n",
        encoding="utf-8",
    )
    with pytest.raises(InvalidInput, match="TOLLGATE_TEST_NEVER_SET is not set"):
        load_connectors(path)
    [config] = load_connectors(path, read_secrets=False)
    assert config.name == "keys" and config.secrets == {}


async def test_a_bad_option_is_found_when_the_connectors_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(
        "connectors:\n  - {name: edge, type: haproxy, options: {socket: 3}}\n", encoding="utf-8"
    )
    with pytest.raises(InvalidInput, match=r"connector edge: options\.socket"):
        await check_connectors(load_connectors(path))
