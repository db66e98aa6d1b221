"""Per-provider settings from the config file's `providers:` section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controlplane.enforce.targets import DEFAULT_FLOOR, PrefixFloor
from controlplane.errors import InvalidInput
from controlplane.settings import Providers, load_providers, parse_providers


def test_defaults_without_a_file_or_section(tmp_path: Path) -> None:
    assert load_providers(tmp_path / "missing.yaml") == Providers()
    (tmp_path / "tollgate.yaml").write_text("connectors: []\n", encoding="utf-8")

    providers = load_providers(tmp_path / "tollgate.yaml")

    assert providers.of("lab-a").min_prefix == DEFAULT_FLOOR == PrefixFloor(16, 32)
    assert providers.of("lab-a").fallback == "flag_review"


def test_named_providers_override_the_star_entry(tmp_path: Path) -> None:
    (tmp_path / "tollgate.yaml").write_text(
        """
providers:
  "*": {min_prefix: {ipv4: 20}, fallback: none}
  lab-a: {min_prefix: {ipv6: 48}}
  lab-b: {fallback: flag_review, min_prefix: {ipv4: 8}}
""",
        encoding="utf-8",
    )

    providers = load_providers(tmp_path / "tollgate.yaml")

    assert providers.of("lab-z").min_prefix == PrefixFloor(20, 32)
    assert providers.of("lab-z").fallback == "none"
    assert providers.of("lab-a").min_prefix == PrefixFloor(20, 48)
    assert providers.of("lab-a").fallback == "none"
    assert providers.of("lab-b").min_prefix == PrefixFloor(8, 32)
    assert providers.of("lab-b").fallback == "flag_review"
    # Shared things (intel, a connector serving every provider) pass for the loosest.
    assert providers.loosest_floor() == PrefixFloor(8, 32)
    assert providers.loosest_floor(["lab-a"]) == PrefixFloor(20, 48)
    assert providers.loosest_floor(["lab-a", "*"]) == PrefixFloor(8, 32)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (["lab-a"], "must be a mapping"),
        ({"lab-a": {"fallback": "block"}}, "lab-a.fallback must be one of flag_review, none"),
        ({"lab-a": {"min_prefix": {"ipv4": 33}}}, "min_prefix.ipv4 must be a prefix length"),
        ({"lab-a": {"min_prefix": {"ipv6": "32"}}}, "min_prefix.ipv6 must be a prefix length"),
        ({"lab-a": {"min_prefix": {"ipv4": True}}}, "min_prefix.ipv4 must be a prefix length"),
        ({"lab-a": {"min_prefix": {"v4": 8}}}, "min_prefix takes ipv4 and ipv6"),
        ({"*": {"floor": 8}}, "takes min_prefix, fallback and cooldown only"),
        ({"lab-a": {"cooldown": "a week"}}, "lab-a.cooldown: 'a week' is not a duration"),
    ],
)
def test_bad_settings_are_named(raw: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_providers("tollgate.yaml: providers", raw)
