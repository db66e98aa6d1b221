"""Copies of the repository's policies, edited the way a security engineer would, and
git repositories holding them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.support.app import POLICY_DIR

GRADUATED = "tollgate/graduated/graduated.rego"
INTEL = "tollgate/intel/intel.rego"
SETTINGS = "tollgate/settings/data.json"
# Changing the first offense's TTL breaks this test of the repository's policies.
BROKEN_TEST = "tollgate.graduated_test.test_first_offense_rate_limits_the_key"

_GIT_ENV = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
_IDENTITY = ("-c", "user.email=tests@tollgate.invalid", "-c", "user.name=Tollgate tests")


def copy_policies(dest: Path) -> Path:
    """The repository's policies (modules, tests and data) under `dest`."""
    shutil.copytree(POLICY_DIR, dest, ignore=shutil.ignore_patterns("README.md"))
    return dest


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *_IDENTITY, *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **_GIT_ENV},
        timeout=30,
    )
    return done.stdout.strip()


def init_repo(repo: Path) -> str:
    """A git repository whose root holds a copy of the policies; its first commit."""
    copy_policies(repo)
    git(repo, "init", "-q", "-b", "main")
    return commit(repo, "policies as in the Tollgate repository")


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def settings_document(root: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((root / SETTINGS).read_text(encoding="utf-8"))
    return document


def edit_settings(root: Path, **graduated: Any) -> None:
    """Change `default.graduated` settings in the copy's data.json."""
    document = settings_document(root)
    document["default"]["graduated"].update(graduated)
    (root / SETTINGS).write_text(json.dumps(document, indent=2), encoding="utf-8")


def break_a_test(root: Path) -> None:
    """A change whose test fails: `BROKEN_TEST` expects a 24h first-offense limit."""
    document = settings_document(root)
    document["default"]["graduated"]["first_offense"]["ttl"] = "12h"
    (root / SETTINGS).write_text(json.dumps(document, indent=2), encoding="utf-8")


def restore_settings(root: Path) -> None:
    shutil.copyfile(POLICY_DIR / SETTINGS, root / SETTINGS)


def touch_module(root: Path, note: str) -> None:
    """A harmless change to a module: a comment at its end."""
    path = root / GRADUATED
    path.write_text(path.read_text(encoding="utf-8") + f"\n# {note}\n", encoding="utf-8")


def shadow_rule(root: Path, path: str, rule: str) -> None:
    """Put one rule in shadow mode: `mode: shadow` in the METADATA block above it."""
    _add_mode(root / path, f"{rule} contains ")


def shadow_package(root: Path, path: str) -> None:
    """Put a whole package in shadow mode: `mode: shadow` in its package METADATA."""
    _add_mode(root / path, "package ")


def _add_mode(path: Path, head: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    [at] = [n for n, line in enumerate(lines) if line.startswith(head)]
    owner = max(n for n in range(at) if lines[n].startswith("#   owner:"))
    assert all(lines[n].startswith("#") for n in range(owner, at)), "not the rule's METADATA"
    lines.insert(owner + 1, "#   mode: shadow")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
