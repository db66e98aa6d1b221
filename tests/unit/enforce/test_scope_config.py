"""`scope:` in a connector's configuration: parsed into the SDK's `Scope`, and every
mistake named by its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.enforce.config import load_connectors
from controlplane.enforce.sdk import EntryType, Scope
from controlplane.errors import InvalidInput


def load(tmp_path: Path, scope: str) -> Scope:
    path = tmp_path / "tollgate.yaml"
    path.write_text(
        f"connectors:\n  - {{name: edge, type: memory, providers: [lab-a], scope: {scope}}}\n",
        encoding="utf-8",
    )
    [config] = load_connectors(path)
    return config.scope


def test_a_scope_limits_types_and_target_kinds(tmp_path: Path) -> None:
    scope = load(tmp_path, "{types: [block], target_kinds: [ip, cidr]}")

    assert scope == Scope(frozenset({EntryType.BLOCK}), frozenset({"ip", "cidr"}))
    assert scope.admits("block", "cidr")
    assert not scope.admits("block", "api_key")
    assert not scope.admits("revoke_key", "ip")


def test_a_missing_key_is_no_limit(tmp_path: Path) -> None:
    scope = load(tmp_path, "{target_kinds: [api_key]}")

    assert scope.types is None
    assert scope.admits("rate_limit", "api_key") and not scope.admits("rate_limit", "org")


@pytest.mark.parametrize(
    ("scope", "named"),
    [
        ("{types: [block, blok]}", "connectors[0].scope.types[1]: 'blok' is not one of"),
        ("{target_kinds: [ip, subnet]}", "connectors[0].scope.target_kinds[1]: 'subnet'"),
        ("{types: []}", "connectors[0].scope.types must be a non-empty list"),
        ("{types: block}", "connectors[0].scope.types must be a non-empty list"),
        ("{kinds: [ip]}", "connectors[0].scope: unknown keys ['kinds']"),
        ("[block]", "connectors[0].scope must be a mapping"),
    ],
)
def test_each_mistake_names_its_key(tmp_path: Path, scope: str, named: str) -> None:
    with pytest.raises(InvalidInput, match=named.replace("[", r"\[").replace("]", r"\]")):
        load(tmp_path, scope)


def test_a_connector_without_scope_covers_what_its_providers_have(tmp_path: Path) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text("connectors:\n  - {name: edge, type: memory, providers: [lab-a]}\n")
    [config] = load_connectors(path)

    assert config.covers("lab-a", "rate_limit", "org")
    assert not config.covers("lab-b", "block", "ip")
