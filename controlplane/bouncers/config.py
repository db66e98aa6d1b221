"""`crowdsec:` in the config file (`TOLLGATE_CONFIG`): what the decision stream serves.

crowdsec:
  providers: [lab-a]                 # or ["*"] (the default)
  scope: {target_kinds: [ip, cidr]}  # blocks only; ip and/or cidr (the default: both)
  origin: tollgate                   # the `origin` of every decision
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controlplane.enforce.config import parse_scope
from controlplane.enforce.sdk import EntryType, Scope
from controlplane.errors import InvalidInput

KINDS = ("cidr", "ip")
"""The target kinds a decision can have (CrowdSec's `Range` and `Ip`)."""
_ORIGIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$")


@dataclass(frozen=True)
class StreamConfig:
    providers: tuple[str, ...] = ("*",)
    scope: Scope = field(default_factory=Scope)
    origin: str = "tollgate"

    @property
    def kinds(self) -> list[str]:
        chosen = self.scope.target_kinds
        return [k for k in KINDS if chosen is None or k in chosen]

    def serves(self, provider: str) -> bool:
        return "*" in self.providers or provider in self.providers


def load_stream_config(path: Path) -> StreamConfig:
    """The `crowdsec:` section; the defaults when the file or the section is missing."""
    if not path.exists():
        return StreamConfig()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML: {exc}") from None
    raw = document.get("crowdsec") if isinstance(document, dict) else None
    return parse_stream_config(f"{path}: crowdsec", raw)


def parse_stream_config(where: str, raw: Any) -> StreamConfig:
    if raw is None:
        return StreamConfig()
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} must be a mapping (providers, scope, origin)")
    unknown = set(raw) - {"providers", "scope", "origin"}
    if unknown:
        raise InvalidInput(f"{where}: unknown keys {sorted(unknown)} (providers, scope, origin)")
    providers = raw.get("providers", ["*"])
    if (
        not isinstance(providers, list)
        or not providers
        or not all(isinstance(p, str) and p for p in providers)
    ):
        raise InvalidInput(f'{where}.providers must be a list of provider names or ["*"]')
    scope = parse_scope(f"{where}.scope", raw.get("scope"))
    if scope.types is not None and scope.types != {EntryType.BLOCK}:
        raise InvalidInput(f"{where}.scope.types: CrowdSec decisions are blocks: [block] only")
    if scope.target_kinds is not None and not scope.target_kinds <= set(KINDS):
        raise InvalidInput(
            f"{where}.scope.target_kinds: CrowdSec decisions are on ip and cidr targets only"
        )
    origin = raw.get("origin", "tollgate")
    if not isinstance(origin, str) or not _ORIGIN.match(origin):
        raise InvalidInput(f"{where}.origin must be a name of letters, digits, . _ : -")
    return StreamConfig(providers=tuple(providers), scope=scope, origin=origin)
