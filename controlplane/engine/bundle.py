"""A policy revision on disk: Rego modules, data documents and the git revision."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from controlplane.errors import PolicyError

DATA_FILES = ("data.json", "data.yaml", "data.yml")


@dataclass(frozen=True)
class PolicyBundle:
    """Everything an engine needs to load one revision, read once from disk."""

    root: Path
    revision: str
    modules: dict[str, str]
    """Rego source by path relative to the root."""
    data: list[tuple[str, Any]]
    """(dotted path, document) pairs, mounted OPA-bundle style by directory."""


def load_bundle(root: Path) -> PolicyBundle:
    """Read every `.rego` module and `data.json`/`data.yaml` under `root`."""
    if not root.is_dir():
        raise PolicyError(
            f"policy directory {root} does not exist: set TOLLGATE_POLICY_DIR to your policies"
        )
    modules: dict[str, str] = {}
    data: list[tuple[str, Any]] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        rel = path.relative_to(root)
        if path.suffix == ".rego":
            modules[rel.as_posix()] = path.read_text(encoding="utf-8")
        elif path.name in DATA_FILES:
            data.append((".".join(rel.parent.parts), _read_data(path)))
    if not modules:
        raise PolicyError(f"no .rego files under {root}: is TOLLGATE_POLICY_DIR right?")
    return PolicyBundle(
        root=root, revision=revision_of(root, modules, data), modules=modules, data=data
    )


def _read_data(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None


def revision_of(root: Path, modules: dict[str, str], data: list[tuple[str, Any]]) -> str:
    """The git commit that last touched `root`, plus `-dirty` when it has uncommitted
    changes; outside git, `content-<hash>` of the files so equal trees share a revision."""
    try:
        commit = _git(root, "log", "-1", "--format=%H", "--", ".")
        if commit:
            dirty = _git(root, "status", "--porcelain", "--untracked-files=all", "--", ".")
            return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    digest = hashlib.sha256()
    for name in sorted(modules):
        digest.update(name.encode() + b"\0" + modules[name].encode() + b"\0")
    digest.update(json.dumps(data, sort_keys=True).encode())
    return "content-" + digest.hexdigest()[:16]


def _git(root: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True, timeout=10
    )
    return out.stdout.strip()
