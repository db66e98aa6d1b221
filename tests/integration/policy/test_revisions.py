"""Revisions from a git repository: each commit is gated once (check and tests), recorded
`passed` or `rejected`, and only a passed one is activated; rollback reactivates an
earlier passed revision and sticks; every step is an audit event. A working tree's
uncommitted edits are revisions of their own."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from controlplane.cli.main import app
from controlplane.errors import Conflict, NotFound
from controlplane.policy import repository
from controlplane.policy.service import PolicyService
from controlplane.policy.source import WORKTREE, GitRepository, WorkingTree, source_at, source_from
from controlplane.settings import Settings, get_settings
from controlplane.store.db import Database
from tests.integration.policy.policy_copies import (
    BROKEN_TEST,
    GRADUATED,
    break_a_test,
    commit,
    copy_policies,
    git,
    init_repo,
    restore_settings,
    touch_module,
)
from tests.support.app import make_settings
from tests.support.store import assert_chain_intact, audit_events


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()


def git_settings(database_url: str, data_dir: Path, repo: Path) -> Settings:
    data_dir.mkdir(exist_ok=True)
    return dataclasses.replace(make_settings(database_url, data_dir), policy_repo=str(repo))


def service(db: Database, settings: Settings) -> PolicyService:
    return PolicyService(db, source_from(settings), settings.entrypoint)


async def active(policies: PolicyService) -> str | None:
    bundle = await policies.active()
    return bundle.revision if bundle else None


async def policy_events(db: Database) -> list[tuple[str, str, dict[str, Any]]]:
    events = await audit_events(db)
    assert_chain_intact(events)
    return [(e.type, e.actor, e.payload) for e in events if e.type.startswith("policy.")]


async def test_commits_are_gated_activated_and_rolled_back(db: Database, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    first = init_repo(repo)
    settings = git_settings(db.url, tmp_path / "data", repo)
    policies = service(db, settings)
    assert isinstance(source_from(settings), GitRepository)

    synced = await policies.sync("alice", "first deploy")

    assert (synced.outcome, synced.revision) == ("activated", first)
    assert synced.tests["failed"] == 0 and synced.tests["passed"] >= 40
    assert await active(policies) == first
    assert (await policies.sync("alice", "again")).outcome == "unchanged"

    # A commit whose test fails is recorded as rejected, with why, and never activated.
    break_a_test(repo)
    broken = commit(repo, "shorter first-offense limit")
    rejected = await policies.sync("alice", "second deploy")

    assert (rejected.outcome, rejected.revision) == ("rejected", broken)
    assert any(p.startswith(BROKEN_TEST) for p in rejected.problems), rejected.problems
    assert rejected.tests["failed"] >= 1 and rejected.tests["ran"] is True
    assert await active(policies) == first
    async with db.read() as session:
        row = await repository.get_revision(session, broken)
    assert row is not None and row.status == "rejected"
    assert any(BROKEN_TEST in p for p in row.problems)
    assert (await policies.sync("alice", "retry")).outcome == "unchanged"
    assert await active(policies) == first

    restore_settings(repo)
    touch_module(repo, "fixed")
    fixed = commit(repo, "back to 24h")
    assert (await policies.sync("alice", "third deploy")).outcome == "activated"
    assert await active(policies) == fixed

    # Rollback: the revision active before this one; the next sync does not undo it.
    assert await policies.rollback(None, "bob", "false positives") == first
    assert await active(policies) == first
    assert (await policies.sync("tollgate", "periodic sync")).outcome == "unchanged"
    assert await active(policies) == first

    with pytest.raises(Conflict) as refused:
        await policies.rollback(broken, "bob", "try the rejected one")
    assert refused.value.status_code == 409
    assert "can never be activated" in refused.value.message
    with pytest.raises(Conflict, match="already active"):
        await policies.rollback(first[:10], "bob", "again")
    with pytest.raises(NotFound) as unknown:
        await policies.rollback("0000000deadbeef", "bob", "nothing like it")
    assert unknown.value.status_code == 404
    assert await active(policies) == first

    assert await policies.rollback(fixed[:12], "bob", "fixed for real") == fixed
    assert await active(policies) == fixed

    events = await policy_events(db)
    assert [(kind, actor, payload["revision"]) for kind, actor, payload in events] == [
        ("policy.gated", "alice", first),
        ("policy.activated", "alice", first),
        ("policy.gated", "alice", broken),
        ("policy.gated", "alice", fixed),
        ("policy.activated", "alice", fixed),
        ("policy.rolled_back", "bob", first),
        ("policy.rolled_back", "bob", fixed),
    ]
    gated = [payload for kind, _, payload in events if kind == "policy.gated"]
    assert [g["status"] for g in gated] == ["passed", "rejected", "passed"]
    assert any(BROKEN_TEST in p for p in gated[1]["problems"])
    assert gated[1]["tests"]["failed"] >= 1
    rolled = [payload for kind, _, payload in events if kind == "policy.rolled_back"]
    assert [r["reason"] for r in rolled] == ["false positives", "fixed for real"]

    async with db.read() as session:
        history = await repository.activations(session)
    assert [(a.revision, a.kind, a.actor) for a in history] == [
        (fixed, "rollback", "bob"),
        (first, "rollback", "bob"),
        (fixed, "activate", "alice"),
        (first, "activate", "alice"),
    ]


async def test_rollback_needs_an_earlier_activation(db: Database, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init_repo(repo)
    policies = service(db, git_settings(db.url, tmp_path / "data", repo))

    with pytest.raises(Conflict, match="nothing to roll back to"):
        await policies.rollback(None, "bob", "too early")
    await policies.sync("alice", "first deploy")
    with pytest.raises(Conflict, match="no committed revision other than"):
        await policies.rollback(None, "bob", "nothing before")


async def test_ref_and_subdir_choose_what_is_read(db: Database, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    copy_policies(repo / "rego")
    git(repo, "init", "-q", "-b", "main")
    tagged = commit(repo, "policies under rego/")
    git(repo, "tag", "v1")
    touch_module(repo / "rego", "after the tag")
    commit(repo, "newer than the tag")
    settings = dataclasses.replace(
        git_settings(db.url, tmp_path / "data", repo), policy_ref="v1", policy_subdir="rego/"
    )

    bundle = await asyncio.to_thread(source_from(settings).fetch)

    assert bundle.revision == tagged
    assert "after the tag" not in bundle.modules[GRADUATED]
    assert (await service(db, settings).sync("alice", "tagged")).revision == tagged


async def test_a_working_tree_with_edits_is_a_revision_per_edit(
    db: Database, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    copy_policies(repo / "policies")
    git(repo, "init", "-q", "-b", "main")
    head = commit(repo, "policies")
    root = repo / "policies"
    settings = dataclasses.replace(
        make_settings(db.url, tmp_path), policy_dir=root, policy_allow_uncommitted=True
    )
    policies = service(db, settings)
    assert isinstance(source_from(settings), WorkingTree)

    clean = await policies.sync("alice", "clean tree")
    touch_module(root, "first edit")
    edited = await policies.sync("alice", "first edit")
    touch_module(root, "second edit")
    edited_again = await policies.sync("alice", "second edit")

    assert clean.revision == head
    dirty = re.compile(rf"^{head}-dirty\.[0-9a-f]{{8}}$")
    assert dirty.match(edited.revision) and dirty.match(edited_again.revision)
    assert edited.revision != edited_again.revision
    assert [clean.outcome, edited.outcome, edited_again.outcome] == ["activated"] * 3
    assert await active(policies) == edited_again.revision
    recorded = await policies.recorded(edited_again.revision)
    assert recorded is not None and "# second edit" in recorded.modules[GRADUATED]

    # Any commit of the repository holding the policy dir can be read back, or the
    # working tree as it is.
    at_head = await asyncio.to_thread(source_at(settings, head).fetch)
    assert at_head.revision == head and "first edit" not in at_head.modules[GRADUATED]
    worktree = await asyncio.to_thread(source_at(settings, WORKTREE).fetch)
    assert worktree.revision == edited_again.revision


def edited_tree(db: Database, tmp_path: Path, **overrides: Any) -> tuple[Path, str, Settings]:
    """A policy dir in git (its commit) and settings whose source is its working tree."""
    repo = tmp_path / "repo"
    copy_policies(repo / "policies")
    git(repo, "init", "-q", "-b", "main")
    head = commit(repo, "policies")
    root = repo / "policies"
    settings = dataclasses.replace(make_settings(db.url, tmp_path), policy_dir=root, **overrides)
    return root, head, settings


async def test_a_server_never_activates_uncommitted_edits_by_default(
    db: Database, tmp_path: Path
) -> None:
    root, head, settings = edited_tree(db, tmp_path)
    policies = service(db, settings)
    touch_module(root, "edited, not committed")

    synced = await policies.sync("alice", "tree with edits")

    assert (synced.revision, synced.outcome) == (head, "activated")
    active_bundle = await policies.active()
    assert active_bundle is not None and active_bundle.revision == head
    assert "edited, not committed" not in active_bundle.modules[GRADUATED]
    second = commit(root.parent, "the edit, committed")
    assert (await policies.sync("alice", "committed")).revision == second
    assert await active(policies) == second


async def test_rollback_skips_uncommitted_copies_and_a_prefix_must_be_unique(
    db: Database, tmp_path: Path
) -> None:
    root, head, settings = edited_tree(db, tmp_path, policy_allow_uncommitted=True)
    developing = service(db, settings)
    await developing.sync("alice", "clean")
    touch_module(root, "first edit")
    first_edit = (await developing.sync("alice", "first edit")).revision
    touch_module(root, "second edit")
    second_edit = (await developing.sync("alice", "second edit")).revision
    assert head != first_edit != second_edit

    # The revision before is the committed one, not a dirty copy of the same change.
    assert await developing.rollback(None, "oncall", "back") == head

    with pytest.raises(Conflict) as ambiguous:
        await developing.rollback(head[:12], "oncall", "which one?")
    for revision in (head, first_edit, second_edit):
        assert f"`tollgate policy rollback {revision}`" in ambiguous.value.message
    assert "matches 3 revisions" in ambiguous.value.message

    # A server without the development setting never activates an uncommitted one.
    serving = service(db, dataclasses.replace(settings, policy_allow_uncommitted=False))
    with pytest.raises(Conflict, match="uncommitted edits"):
        await serving.rollback(first_edit, "oncall", "try the edit")
    assert await active(serving) == head


async def tollgate(settings: Settings, *args: str) -> Result:
    """The CLI in a thread (it runs its own event loop) with these settings."""
    env = {
        "TOLLGATE_DATABASE_URL": settings.database_url,
        "TOLLGATE_DATA_DIR": str(settings.data_dir),
        "TOLLGATE_POLICY_REPO": settings.policy_repo,
        "COLUMNS": "250",
    }

    def run() -> Result:
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(app, list(args), env=env)
        finally:
            get_settings.cache_clear()

    return await asyncio.to_thread(run)


async def test_cli_sync_and_rollback(db: Database, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    first = init_repo(repo)
    settings = git_settings(db.url, tmp_path / "data", repo)

    synced = await tollgate(settings, "policy", "sync", "--actor", "ci", "--reason", "merged")
    assert synced.exit_code == 0, synced.output
    assert f"revision {first}: activated" in synced.output
    break_a_test(repo)
    broken = commit(repo, "broken")
    refused = await tollgate(settings, "policy", "sync")
    assert refused.exit_code == 1
    assert f"revision {broken} rejected" in refused.output
    assert BROKEN_TEST in refused.output
    restore_settings(repo)
    touch_module(repo, "fixed")
    fixed = commit(repo, "fixed")
    assert (await tollgate(settings, "policy", "sync")).exit_code == 0

    rolled = await tollgate(
        settings, "policy", "rollback", "--reason", "pager", "--actor", "oncall"
    )
    assert rolled.exit_code == 0, rolled.output
    assert f"revision {first} is active again" in rolled.output
    bad = await tollgate(settings, "policy", "rollback", broken[:12])
    assert bad.exit_code == 1
    assert "can never be activated" in bad.output

    assert await active(service(db, settings)) == first
    events = await policy_events(db)
    assert ("policy.activated", "ci", {"revision": first, "reason": "merged"}) in events
    assert ("policy.rolled_back", "oncall", {"revision": first, "reason": "pager"}) in events
    assert [p["revision"] for k, _, p in events if k == "policy.activated"] == [first, fixed]


async def test_a_source_moved_back_to_a_known_revision_is_followed(
    db: Database, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    first = init_repo(repo)
    policies = service(db, git_settings(db.url, tmp_path / "data", repo))
    await policies.sync("ci", "first")
    touch_module(repo, "second")
    second = commit(repo, "second")
    assert (await policies.sync("ci", "second")).outcome == "activated"

    git(repo, "reset", "--hard", first)  # the branch is put back: the source moved
    moved_back = await policies.sync("ci", "after the reset")

    assert (moved_back.outcome, moved_back.revision) == ("activated", first)
    assert await active(policies) == first
    assert (await policies.sync("ci", "again")).outcome == "unchanged"
    # ...whereas a rollback while the source stays put holds:
    await policies.rollback(second, "oncall", "try the newer one again")
    assert (await policies.sync("ci", "periodic")).outcome == "unchanged"
    assert await active(policies) == second
