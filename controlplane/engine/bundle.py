"""A policy revision on disk: Rego modules, data documents and the git revision."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from controlplane.errors import PolicyError
from controlplane.policy.rego import ShadowRules, shadow_rules

DATA_FILES = ("data.json", "data.yaml", "data.yml")
UNCOMMITTED = "-dirty."
"""Between a commit and the content hash in the revision of a tree with local edits."""


@dataclass(frozen=True)
class PolicyBundle:
    """Everything an engine needs to load one revision, read once from disk."""

    root: Path
    revision: str
    modules: dict[str, str]
    """Rego source by path relative to the root."""
    data: list[tuple[str, Any]]
    """(dotted path, document) pairs, mounted OPA-bundle style by directory."""

    @cached_property
    def shadow(self) -> ShadowRules:
        """Rules whose METADATA puts them in shadow mode."""
        return shadow_rules(self.modules)


def load_bundle(root: Path, revision: str | None = None) -> PolicyBundle:
    """Read every `.rego` module and `data.json`/`data.yaml` under `root`; the revision
    is `revision` when given (a git source knows its commit), else `revision_of`."""
    if not root.is_dir():
        raise PolicyError(
            f"policy directory {root} does not exist: set TOLLGATE_POLICY_DIR to your policies"
        )
    modules: dict[str, str] = {}
    data: list[tuple[str, Any]] = []
    # A vendored OPA bundle (a directory with a .manifest) mounts its data from its own
    # root, as OPA would: vendor/lab_a/x/data.json is data.x.
    bundle_roots = sorted(
        (m.parent for m in root.rglob(".manifest") if m.parent != root),
        key=lambda p: -len(p.parts),
    )
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        rel = path.relative_to(root)
        if path.suffix == ".rego":
            modules[rel.as_posix()] = path.read_text(encoding="utf-8")
        elif path.name in DATA_FILES:
            base = next((b for b in bundle_roots if b in path.parents), root)
            data.append((".".join(path.parent.relative_to(base).parts), _read_data(path)))
    if not modules:
        raise PolicyError(f"no .rego files under {root}: is TOLLGATE_POLICY_DIR right?")
    return PolicyBundle(
        root=root,
        revision=revision or revision_of(root, modules, data),
        modules=modules,
        data=data,
    )


def _read_data(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None


def revision_of(root: Path, modules: dict[str, str], data: list[tuple[str, Any]]) -> str:
    """The git commit that last touched `root`, plus `-dirty` and a hash of the content
    when it has uncommitted changes (each edit is a revision of its own); outside git,
    `content-<hash>` of the files, so equal trees share a revision."""
    try:
        commit = _git(root, "log", "-1", "--format=%H", "--", ".")
        if commit:
            dirty = _git(root, "status", "--porcelain", "--untracked-files=all", "--", ".")
            return f"{commit}{UNCOMMITTED}{_content_hash(modules, data)[:8]}" if dirty else commit
    except (OSError, subprocess.CalledProcessError):
        pass
    return content_revision(modules, data)


def is_uncommitted(revision: str) -> bool:
    """A working tree's revision with edits that are not committed."""
    return UNCOMMITTED in revision


def base_commit(revision: str) -> str:
    """The commit an uncommitted revision was edited from (the revision itself if none)."""
    return revision.split(UNCOMMITTED, 1)[0]


def short_revision(revision: str | None) -> str:
    """A revision as people see it: 12 hex digits of a commit; an uncommitted one keeps
    its `-dirty.<hash>`, so edits never pass for the commit they were made on; a content
    revision keeps its `content-` prefix and 8 digits."""
    text = revision or ""
    if is_uncommitted(text):
        commit, _, edits = text.partition(UNCOMMITTED)
        return f"{commit[:12]}{UNCOMMITTED}{edits}"
    return text[:16] if text.startswith("content-") else text[:12]


def content_revision(modules: dict[str, str], data: list[tuple[str, Any]]) -> str:
    """A revision named by content, for policies that are not in git."""
    return "content-" + _content_hash(modules, data)[:16]


def _content_hash(modules: dict[str, str], data: list[tuple[str, Any]]) -> str:
    digest = hashlib.sha256()
    for name in sorted(modules):
        digest.update(name.encode() + b"\0" + modules[name].encode() + b"\0")
    digest.update(json.dumps(data, sort_keys=True).encode())
    return digest.hexdigest()


def _git(root: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True, timeout=10
    )
    return out.stdout.strip()
