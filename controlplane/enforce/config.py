"""Connector configuration: `connectors:` in the config file (`TOLLGATE_CONFIG`).

Secrets are never written in the file or stored in the database: a secret is
`{env: NAME}` or `{file: PATH}` and is read when the connector is built.

    connectors:
      - name: edge-haproxy
        type: haproxy
        providers: [lab-a]          # or ["*"] for every provider
        scope: {types: [block], target_kinds: [ip, cidr]}   # optional: less than it can
        reconcile_seconds: 30
        options: {socket: /run/haproxy/admin.sock, state_dir: /etc/haproxy/tollgate}
      - name: keys-service
        type: webhook
        providers: ["*"]
        options: {url: https://keys.internal/tollgate}
        secrets: {signing_key: {env: TOLLGATE_WEBHOOK_KEY}}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from controlplane.enforce.registry import available, factory
from controlplane.enforce.sdk import TARGET_KINDS, ConnectorConfig, ConnectorError, EntryType, Scope
from controlplane.errors import InvalidInput
from controlplane.settings import Providers, parse_providers, read_secret

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def load_connectors(path: Path, *, read_secrets: bool = True) -> list[ConnectorConfig]:
    """The configured connectors; none when the file does not exist. Every type must be
    installed. `read_secrets=False` (a process that applies nothing) leaves the secrets
    unread: it needs neither them nor the environment that holds them."""
    if not path.exists():
        return []
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInput(f"{path}: expected a mapping with a `connectors` list")
    raw = document.get("connectors") or []
    if not isinstance(raw, list):
        raise InvalidInput(f"{path}: `connectors` must be a list")
    providers = parse_providers(f"{path}: providers", document.get("providers") or {})
    configs = [_connector(path, i, item, providers, read_secrets) for i, item in enumerate(raw)]
    names = [c.name for c in configs]
    if len(names) != len(set(names)):
        raise InvalidInput(f"{path}: connector names must be unique, got {names}")
    return configs


def _connector(
    path: Path, i: int, item: Any, settings: Providers, read_secrets: bool
) -> ConnectorConfig:
    where = f"{path}: connectors[{i}]"
    if not isinstance(item, dict):
        raise InvalidInput(f"{where} must be a mapping")
    unknown = set(item) - {
        "name",
        "type",
        "providers",
        "options",
        "secrets",
        "reconcile_seconds",
        "timeout_seconds",
        "scope",
    }
    if unknown:
        raise InvalidInput(f"{where}: unknown keys {sorted(unknown)}")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(f"{where}.name must be lowercase letters, digits, - or _")
    kind = item.get("type")
    if not isinstance(kind, str) or not kind:
        raise InvalidInput(f"{where}.type names the connector type, e.g. haproxy")
    if kind not in available():
        known = ", ".join(sorted(available())) or "none installed"
        raise InvalidInput(
            f"{where}.type: no connector type {kind!r} is installed (known: {known})"
        )
    providers = item.get("providers", ["*"])
    if not isinstance(providers, list) or not all(isinstance(p, str) for p in providers):
        raise InvalidInput(f'{where}.providers must be a list of provider names or ["*"]')
    options = item.get("options") or {}
    if not isinstance(options, dict):
        raise InvalidInput(f"{where}.options must be a mapping")
    refs = item.get("secrets") or {}
    if not isinstance(refs, dict):
        raise InvalidInput(f"{where}.secrets must map names to {{env: NAME}} or {{file: PATH}}")
    secrets = (
        {key: _secret(f"{where}.secrets.{key}", ref) for key, ref in refs.items()}
        if read_secrets
        else {}
    )
    return ConnectorConfig(
        name=name,
        type=kind,
        providers=tuple(providers),
        options=options,
        secrets=secrets,
        reconcile_seconds=_seconds(where, item, "reconcile_seconds", 30),
        timeout_seconds=_seconds(where, item, "timeout_seconds", 5),
        min_prefix=settings.loosest_floor(providers),
        scope=parse_scope(f"{where}.scope", item.get("scope")),
    )


def parse_scope(where: str, raw: Any) -> Scope:
    """`scope: {types: [block], target_kinds: [ip, cidr]}`; either key may be left out
    (no limit). Errors name the key at fault."""
    if raw is None:
        return Scope()
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} must be a mapping with `types` and/or `target_kinds`")
    unknown = set(raw) - {"types", "target_kinds"}
    if unknown:
        raise InvalidInput(f"{where}: unknown keys {sorted(unknown)} (types, target_kinds)")
    types = _names(f"{where}.types", raw.get("types"), {t.value for t in EntryType})
    kinds = _names(f"{where}.target_kinds", raw.get("target_kinds"), TARGET_KINDS)
    return Scope(
        types=frozenset(EntryType(t) for t in types) if types is not None else None,
        target_kinds=kinds,
    )


def _names(where: str, raw: Any, known: Iterable[str]) -> frozenset[str] | None:
    if raw is None:
        return None
    choices = ", ".join(sorted(known))
    if not isinstance(raw, list) or not raw:
        raise InvalidInput(f"{where} must be a non-empty list of: {choices}")
    for i, name in enumerate(raw):
        if not isinstance(name, str) or name not in known:
            raise InvalidInput(f"{where}[{i}]: {name!r} is not one of: {choices}")
    return frozenset(raw)


def _secret(where: str, ref: Any) -> str:
    try:
        return read_secret(where, ref)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _seconds(where: str, item: dict[str, Any], key: str, default: float) -> float:
    value = item.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InvalidInput(f"{where}.{key} must be a positive number of seconds")
    return float(value)


async def check_connectors(configs: Sequence[ConnectorConfig]) -> None:
    """Build each connector once, as a worker will: its options are parsed and checked
    now, so a bad option stops the process at start with one line naming it."""
    async with httpx.AsyncClient() as http:
        for config in configs:
            try:
                connector = factory(config.type)(config, http)
            except ConnectorError as exc:
                raise InvalidInput(str(exc)) from None
            await connector.close()
