"""A running server follows the database: a rollback made elsewhere (the CLI, another
replica) becomes the revision that decides once the server converges, and
`GET /v1/policies` shows every revision and activation with who, when and why."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.errors import PolicyError
from controlplane.policy import repository
from controlplane.policy.service import PolicyService
from controlplane.policy.source import source_from
from controlplane.store.db import Database
from controlplane.store.types import utcnow
from tests.integration.policy.policy_copies import (
    BROKEN_TEST,
    break_a_test,
    commit,
    init_repo,
    restore_settings,
    touch_module,
)
from tests.support.app import Running, make_settings, serve
from tests.support.escapes import escapes
from tests.support.listener import http_listener
from tests.support.verdicts import verdict


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return tmp_path / "repo"


@pytest.fixture
async def api(database_url: str, tmp_path: Path, repo: Path) -> AsyncIterator[Running]:
    init_repo(repo)
    settings = dataclasses.replace(make_settings(database_url, tmp_path), policy_repo=str(repo))
    async with serve(settings) as running:
        yield running


async def decided_by(api: Running) -> str:
    """The revision recorded on a new decision."""
    [result] = (await api.submit(verdict()))["results"]
    decision = (await api.client.get(f"/v1/decisions/{result['decision_id']}")).json()
    assert decision["policy_revision"] == result["policy_revision"]
    revision: str = decision["policy_revision"]
    return revision


async def test_servers_converge_on_a_rollback_and_list_every_activation(
    api: Running, repo: Path
) -> None:
    first = api.runtime.engines.current.revision
    assert await decided_by(api) == first

    touch_module(repo, "second commit")
    second = commit(repo, "second")
    await api.runtime.sync_policies()
    assert api.runtime.engines.current.revision == second
    assert await decided_by(api) == second

    # The rollback is made through a service of its own, as the CLI does.
    elsewhere = Database(api.settings.resolved_database_url)
    try:
        policies = PolicyService(elsewhere, source_from(api.settings), api.settings.entrypoint)
        assert await policies.rollback(None, "oncall", "second blocks a customer") == first
    finally:
        await elsewhere.dispose()
    await api.runtime.converge()

    assert api.runtime.engines.current.revision == first
    assert await decided_by(api) == first

    # A rejected commit changes nothing, and a sync does not undo the rollback.
    break_a_test(repo)
    broken = commit(repo, "broken")
    await api.runtime.sync_policies()
    assert api.runtime.engines.current.revision == first
    assert await decided_by(api) == first

    listed = (await api.client.get("/v1/policies")).json()

    assert listed["active"] == first
    revisions: dict[str, dict[str, Any]] = {r["id"]: r for r in listed["revisions"]}
    assert set(revisions) == {first, second, broken}
    assert [(r["id"], r["status"], r["active"]) for r in listed["revisions"]] == [
        (broken, "rejected", False),
        (second, "passed", False),
        (first, "passed", True),
    ]
    for revision in (first, second):
        assert revisions[revision]["problems"] == []
        assert revisions[revision]["tests"]["failed"] == 0
        assert revisions[revision]["tests"]["passed"] >= 40
        assert revisions[revision]["source"] == f"{repo}@HEAD"
    assert any(p.startswith(BROKEN_TEST) for p in revisions[broken]["problems"])
    assert revisions[broken]["tests"]["failures"] == revisions[broken]["problems"]
    assert [(a["revision"], a["kind"], a["actor"], a["reason"]) for a in listed["activations"]] == [
        (first, "rollback", "oncall", "second blocks a customer"),
        (second, "activate", "tollgate", "sync from the policy source"),
        (first, "activate", "tollgate", "sync from the policy source"),
    ]
    times = [a["at"] for a in listed["activations"]]
    assert times == sorted(times, reverse=True)

    # A newer commit is activated by the next sync, and decides.
    restore_settings(repo)
    touch_module(repo, "fixed")
    fixed = commit(repo, "fixed")
    await api.runtime.sync_policies()
    assert await decided_by(api) == fixed


async def test_a_recorded_revision_that_can_leave_the_process_never_decides(
    api: Running,
) -> None:
    """A revision recorded as passed before its builtins were refused (by an older
    Tollgate, or written into the database) is refused when a server loads it."""
    first = api.runtime.engines.current.revision
    active = await api.runtime.policies.active()
    assert active is not None
    with http_listener() as (url, asked):
        sneaky = "f" * 40
        async with api.runtime.db.write() as session, session.begin():
            await repository.insert_revision(
                session,
                {
                    "id": sneaky,
                    "source": "recorded before the sandbox",
                    "status": "passed",
                    "created_at": utcnow(),
                    "problems": [],
                    "tests": {},
                    "modules": escapes(url)["indexed"].apply(dict(active.modules)),
                    "data": [list(item) for item in active.data],
                },
            )
        await api.runtime.policies.rollback(sneaky, "mallory", "try it")

        with pytest.raises(PolicyError, match=r"uses http\.send, which is not allowed"):
            await api.runtime.converge()

        assert api.runtime.engines.current.revision == first
        assert await decided_by(api) == first
    assert asked == []


async def test_a_sync_or_rollback_through_the_api_decides_at_once(api: Running, repo: Path) -> None:
    """`POST /v1/policies/sync` and `/rollback` converge this server's engine once their
    change has committed, before they answer (the periodic jobs are paused here, so
    nothing else converges it); one refused converges nothing."""
    api.runtime.scheduler.pause()
    first = api.runtime.engines.current.revision
    touch_module(repo, "second commit")
    second = commit(repo, "second")

    synced = await api.client.post("/v1/policies/sync", json={"reason": "merged"})

    assert synced.status_code == 200, synced.text
    assert (synced.json()["outcome"], synced.json()["revision"]) == ("activated", second)
    assert api.runtime.engines.current.revision == second
    assert await decided_by(api) == second

    rolled = await api.client.post("/v1/policies/rollback", json={"reason": "false positives"})

    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["revision"] == first
    assert api.runtime.engines.current.revision == first
    assert await decided_by(api) == first

    # Activated elsewhere (as the CLI does) and not converged on yet: a change refused
    # through the API leaves the engine as it was, for the next converge to move.
    elsewhere = Database(api.settings.resolved_database_url)
    try:
        policies = PolicyService(elsewhere, source_from(api.settings), api.settings.entrypoint)
        await policies.rollback(second, "oncall", "second after all")
    finally:
        await elsewhere.dispose()
    refused = await api.client.post("/v1/policies/rollback", json={"revision": second})

    assert refused.status_code == 409, refused.text
    assert api.runtime.engines.current.revision == first
    await api.runtime.converge()
    assert api.runtime.engines.current.revision == second
