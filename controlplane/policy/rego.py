"""Just enough Rego reading for checks and test discovery: packages, rule heads and
their METADATA blocks. Compilation and semantics are left to the real OPA engine."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

_PACKAGE = re.compile(r"^package\s+([A-Za-z_][\w.]*)\s*$")
_RULE = re.compile(
    r"^(?:default\s+)?([A-Za-z_]\w*)(?:\s*\[[^\]]*\])?(?:\([^)]*\))?\s*(?::=|=|\bcontains\b|\bif\b|\{)"
)
_KEYWORDS = {"package", "import", "else", "not", "some", "every", "with", "as"}


@dataclass
class Rule:
    name: str
    line: int
    metadata: dict[str, Any] | None

    @property
    def is_helper(self) -> bool:
        return self.name.startswith("_")

    @property
    def is_test(self) -> bool:
        return self.name.startswith("test_")


@dataclass
class Module:
    path: str
    package: str
    package_line: int
    package_metadata: dict[str, Any] | None
    rules: list[Rule] = field(default_factory=list)
    metadata_errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def is_test_file(self) -> bool:
        return self.path.endswith("_test.rego")


def read_module(path: str, source: str) -> Module:
    module = Module(path=path, package="", package_line=0, package_metadata=None)
    pending: dict[str, Any] | None = None
    block: list[str] | None = None
    block_line = 0
    seen: set[str] = set()
    for number, raw in enumerate(source.splitlines(), 1):
        line = raw.rstrip()
        if block is not None:
            if line.startswith("#"):
                block.append(line[1:].removeprefix(" "))
                continue
            pending = _parse_metadata(module, block_line, block)
            block = None
        if line.strip() == "# METADATA":
            block, block_line = [], number
            continue
        if package := _PACKAGE.match(line):
            module.package, module.package_line = package.group(1), number
            module.package_metadata, pending = pending, None
            continue
        rule = _RULE.match(line)
        if rule and rule.group(1) not in _KEYWORDS:
            name = rule.group(1)
            if name in seen and pending is None:
                continue  # another definition of a rule already listed
            seen.add(name)
            module.rules.append(Rule(name=name, line=number, metadata=pending))
            pending = None
        elif line and not line[0].isspace() and not line.startswith(("}", "#")):
            pending = None
    return module


def _parse_metadata(module: Module, line: int, block: list[str]) -> dict[str, Any] | None:
    try:
        value = yaml.safe_load("\n".join(block))
    except yaml.YAMLError as exc:
        module.metadata_errors.append((line, f"METADATA is not valid YAML: {exc}"))
        return None
    if not isinstance(value, dict):
        module.metadata_errors.append((line, "METADATA must be a YAML mapping"))
        return None
    return value


@dataclass(frozen=True)
class ShadowRules:
    """Rules (or whole packages) whose METADATA says `custom.mode: shadow`: their
    actions are recorded with `shadow=true` and never enforced. An action names its
    rule as `<package>.<rule>`, with or without the leading `tollgate.`."""

    rules: frozenset[str] = frozenset()
    packages: frozenset[str] = frozenset()
    shown: tuple[str, ...] = ()
    """For people: `package.rule` per shadow rule and `package.*` per shadow package."""

    def __contains__(self, rule: object) -> bool:
        if not isinstance(rule, str):
            return False
        return rule in self.rules or rule.rpartition(".")[0] in self.packages

    def __bool__(self) -> bool:
        return bool(self.rules or self.packages)


def shadow_rules(modules: dict[str, str]) -> ShadowRules:
    rules: set[str] = set()
    packages: set[str] = set()
    shown: set[str] = set()
    for path, source in modules.items():
        module = read_module(path, source)
        if module.is_test_file:
            continue
        names = {module.package, module.package.removeprefix("tollgate.")}
        if _mode(module.package_metadata) == "shadow":
            packages.update(names)
            shown.add(f"{module.package}.*")
        for rule in module.rules:
            if _mode(rule.metadata) == "shadow":
                rules.update(f"{name}.{rule.name}" for name in names)
                shown.add(f"{module.package}.{rule.name}")
    return ShadowRules(frozenset(rules), frozenset(packages), tuple(sorted(shown)))


def _mode(metadata: dict[str, Any] | None) -> str | None:
    custom = (metadata or {}).get("custom")
    mode = custom.get("mode") if isinstance(custom, dict) else None
    return mode if isinstance(mode, str) else None
