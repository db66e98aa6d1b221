"""`revision_of`: the git commit a decision's policies came from."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from controlplane.engine.bundle import is_uncommitted, load_bundle, short_revision

POLICY = "package tollgate.decision\n\nactions := []\n\nshadow := false\n"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Tollgate tests",
    "GIT_AUTHOR_EMAIL": "tests@tollgate.invalid",
    "GIT_COMMITTER_NAME": "Tollgate tests",
    "GIT_COMMITTER_EMAIL": "tests@tollgate.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
    )
    return result.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository whose `policies/` holds one committed module."""
    git(tmp_path, "init", "-q")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "decision.rego").write_text(POLICY, encoding="utf-8")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "policies")
    return tmp_path


def test_clean_tree_is_its_commit(repo: Path) -> None:
    assert load_bundle(repo / "policies").revision == git(repo, "rev-parse", "HEAD")


def test_edited_tree_is_dirty(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    (repo / "policies" / "decision.rego").write_text(POLICY + "\n# edited\n", encoding="utf-8")

    assert load_bundle(repo / "policies").revision.startswith(f"{head}-dirty")


def test_untracked_data_file_is_dirty(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    (repo / "policies" / "settings").mkdir()
    (repo / "policies" / "settings" / "data.json").write_text("{}", encoding="utf-8")

    assert load_bundle(repo / "policies").revision.startswith(f"{head}-dirty")


def test_revision_is_the_last_commit_touching_the_policies(repo: Path) -> None:
    policies_commit = git(repo, "rev-parse", "HEAD")
    (repo / "README.md").write_text("unrelated", encoding="utf-8")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "docs")
    (repo / "notes.txt").write_text("uncommitted, outside policies", encoding="utf-8")

    assert git(repo, "rev-parse", "HEAD") != policies_commit
    assert load_bundle(repo / "policies").revision == policies_commit


def test_outside_git_the_revision_hashes_the_content(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        root.mkdir()
        (root / "decision.rego").write_text(POLICY, encoding="utf-8")

    revision = load_bundle(one).revision

    assert re.fullmatch(r"content-[0-9a-f]{16}", revision)
    assert load_bundle(two).revision == revision, "equal trees share a revision"
    (two / "decision.rego").write_text(POLICY + "\n# changed\n", encoding="utf-8")
    assert load_bundle(two).revision != revision
    (one / "data.json").write_text('{"rpm": 60}', encoding="utf-8")
    assert load_bundle(one).revision != revision, "data is part of the revision"


def test_an_edited_tree_never_shows_as_its_commit() -> None:
    commit = "491bed7ba593c0ffee1234567890abcdef123456"
    shown = [short_revision(r) for r in (commit, f"{commit}-dirty.1a2b3c4d", f"{commit}-dirty.99")]

    assert shown == ["491bed7ba593", "491bed7ba593-dirty.1a2b3c4d", "491bed7ba593-dirty.99"]
    assert short_revision("content-0123456789abcdef0123") == "content-01234567"
    assert (is_uncommitted(f"{commit}-dirty.99"), is_uncommitted(commit)) == (True, False)
