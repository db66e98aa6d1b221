"""Impact: the demo scenario's decisions, stored under the repository's policies, are
replayed against a stricter head (a higher `min_score`), uploaded over HTTP or read
from a working tree by the CLI; the report counts what changes and for whom."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlmodel import col
from typer.testing import CliRunner, Result

from controlplane.auth.roles import Role
from controlplane.cli.main import app
from controlplane.engine.bundle import PolicyBundle, load_bundle, short_revision
from controlplane.engine.embedded import EmbeddedEngine
from controlplane.evaluate.repository import count_decisions
from controlplane.policy import impact as impact_module
from controlplane.policy.impact import replay
from controlplane.settings import get_settings
from controlplane.store.models import DecisionRow
from controlplane.store.types import utcnow
from tests.integration.policy.policy_copies import copy_policies, edit_settings, shadow_rule
from tests.support.app import SCENARIO, Running, make_settings, serve
from tests.support.escapes import escapes
from tests.support.listener import http_listener

TABLE_HEADER = "| action type | added | removed |"
# Decided "three days ago" for the window tests.
OLD = ["demo-v-001", "demo-v-003", "demo-v-008", "demo-v-011"]


@pytest.fixture(scope="module")
async def api(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    """The demo scenario decided by the repository's policies, seeded through the API."""
    settings = make_settings(module_database_url, tmp_path_factory.mktemp("data"))
    scenario = json.loads(SCENARIO.read_text(encoding="utf-8"))
    async with serve(settings) as running:
        for exemption in scenario["exemptions"]:
            added = await running.client.post("/v1/exemptions", json=exemption)
            assert added.status_code == 201, added.text
        added = await running.client.post(
            "/v1/intel/indicators", json={"indicators": scenario["indicators"]}
        )
        assert added.status_code == 201, added.text
        verdicts = [
            {k: v for k, v in item.items() if k != "expect"} for item in scenario["verdicts"]
        ]
        results = (await running.submit({"verdicts": verdicts}))["results"]
        assert all(r["decision_status"] == "ok" for r in results)
        async with running.runtime.db.write() as session, session.begin():
            await session.execute(
                update(DecisionRow)
                .where(col(DecisionRow.verdict_id).in_(OLD))
                .values(decided_at=utcnow() - timedelta(days=3))
            )
        yield running


@pytest.fixture(scope="module")
def stricter(tmp_path_factory: pytest.TempPathFactory) -> PolicyBundle:
    """The repository's policies with `min_score` raised from 0.7 to 0.85."""
    root = copy_policies(tmp_path_factory.mktemp("stricter") / "policies")
    edit_settings(root, min_score=0.85)
    return load_bundle(root)


def uploaded(bundle: PolicyBundle, **extra: Any) -> dict[str, Any]:
    return {"head_modules": bundle.modules, "head_data": bundle.data, **extra}


async def impact(api: Running, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = await api.client.post("/v1/policies/impact", json=body)
    assert response.status_code == status, response.text
    report: dict[str, Any] = response.json()
    return report


async def test_a_stricter_head_releases_subjects(api: Running, stricter: PolicyBundle) -> None:
    report = await impact(api, uploaded(stricter))

    assert report["base"] == api.runtime.engines.current.revision
    assert report["head"].startswith("content-")
    assert report["replayed"] == 30
    assert report["errors"] == {"base": 0, "head": 0}
    assert 0 < report["changed"] < 30
    rate_limit = report["by_action_type"]["rate_limit"]
    assert rate_limit["removed"] > rate_limit["added"]
    assert report["by_action_type"]["revoke_key"]["added"] == 0
    assert "block" not in report["by_action_type"], "intel blocks do not depend on the score"
    assert report["by_rule"]["graduated.first_offense"]["removed"] > 0
    assert report["newly"]["revoke_key"] == []
    assert report["newly"]["block"] == []
    # Scores 0.76 to 0.84 no longer qualify: their first-offense limits go.
    assert {"api_key:key_sw_a1", "api_key:key_cot_1", "api_key:key_ir_01"} <= set(
        report["released"]
    )
    assert not any("northwind" in s or "meridian" in s for s in report["released"])
    changed = {s["verdict_id"]: s for s in report["sample"]}
    assert changed["demo-v-003"] == {
        "verdict_id": "demo-v-003",
        "before": ["rate_limit api_key:key_sw_a1 (graduated.first_offense)"],
        "after": [],
    }
    assert "demo-v-001" not in changed, "a legitimate user's decision does not change"

    text = report["markdown"]
    assert text.startswith(f"### Tollgate policy impact: `{report['base'][:12]}`")
    assert "Replayed **30** stored verdicts" in text
    assert f"**{report['changed']} decisions change**" in text
    assert TABLE_HEADER in text
    assert "`api_key:key_sw_a1`" in text


async def test_moving_a_rule_into_shadow_mode_is_a_change_that_enforces_nothing(
    api: Running, tmp_path: Path
) -> None:
    root = copy_policies(tmp_path / "policies")
    shadow_rule(root, "tollgate/graduated/graduated.rego", "first_offense")

    report = await impact(api, uploaded(load_bundle(root)))

    rules = report["by_rule"]
    assert rules["graduated.first_offense"]["removed"] > 0
    assert (
        rules["graduated.first_offense (shadow)"]["added"]
        == rules["graduated.first_offense"]["removed"]
    )
    assert report["newly"]["rate_limit"] == [], "a shadow action is not an enforcement"
    assert "api_key:key_sw_a1" in report["released"]


async def test_the_same_revision_changes_nothing(api: Running) -> None:
    revision = api.runtime.engines.current.revision

    report = await impact(api, {"base": revision, "head": revision[:12]})

    assert (report["base"], report["head"]) == (revision, revision)
    assert (report["replayed"], report["changed"]) == (30, 0)
    assert report["by_action_type"] == {} and report["released"] == []
    assert "**0 decisions change**" in report["markdown"]
    assert TABLE_HEADER not in report["markdown"]


async def test_since_keeps_to_the_window(api: Running, stricter: PolicyBundle) -> None:
    everything = await impact(api, uploaded(stricter))
    recent = await impact(api, uploaded(stricter, since="2d"))
    wide = await impact(api, uploaded(stricter, since="7d"))

    assert recent["replayed"] == 30 - len(OLD)
    assert wide["replayed"] == 30
    assert recent["since"] is not None and wide["since"] < recent["since"]
    # The old decisions included demo-v-003, -008 and -011, which the stricter head changes.
    assert recent["changed"] == everything["changed"] - 3
    assert not {"demo-v-003", "demo-v-008", "demo-v-011"} & {
        s["verdict_id"] for s in recent["sample"]
    }
    assert "decided since" in recent["markdown"]


async def test_bad_requests(api: Running, stricter: PolicyBundle) -> None:
    bad_since = await impact(api, uploaded(stricter, since="soon"), status=422)
    assert bad_since["message"].startswith("since: ")
    both = await impact(api, {"head": "x", **uploaded(stricter)}, status=422)
    assert "exactly one of head" in json.dumps(both)
    await impact(api, {"base": "0000000deadbeef", **uploaded(stricter)}, status=404)
    await impact(api, {"head": "0000000deadbeef"}, status=404)

    auditor = await api.token(Role.AUDITOR)
    response = await api.client.post(
        "/v1/policies/impact", json=uploaded(stricter), headers=auditor
    )
    assert response.status_code == 403


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str]]]:
    with http_listener() as running:
        yield running


@pytest.mark.parametrize("escape", sorted(escapes("http://127.0.0.1:1")))
async def test_an_uploaded_head_may_not_call_the_network(
    escape: str, api: Running, stricter: PolicyBundle, listener: tuple[str, list[str]]
) -> None:
    url, asked = listener
    modules = escapes(url)[escape].apply(dict(stricter.modules))

    refused = await impact(api, {"head_modules": modules, "head_data": stricter.data}, status=422)

    assert "which is not allowed" in refused["message"]
    assert asked == [], "the server called the network for an uploaded policy"


async def tollgate(api: Running, policy_dir: Path, *args: str) -> Result:
    env = {
        "TOLLGATE_DATABASE_URL": api.settings.resolved_database_url,
        "TOLLGATE_DATA_DIR": str(api.settings.data_dir),
        "TOLLGATE_POLICY_DIR": str(policy_dir),
    }

    def run() -> Result:
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(app, list(args), env=env)
        finally:
            get_settings.cache_clear()

    return await asyncio.to_thread(run)


async def test_cli_compares_the_active_revision_with_a_working_tree(
    api: Running, stricter: PolicyBundle
) -> None:
    over_http = await impact(api, uploaded(stricter))

    text = await tollgate(api, stricter.root, "policy", "impact", "--head", "worktree")
    as_json = await tollgate(
        api, stricter.root, "policy", "impact", "--head", "worktree", "--format", "json"
    )

    assert text.exit_code == 0, text.output
    assert text.stdout.startswith(
        f"### Tollgate policy impact: `{short_revision(over_http['base'])}` → "
        f"`{short_revision(stricter.revision)}`"
    )
    assert "Replayed **30** stored verdicts" in text.stdout
    assert f"**{over_http['changed']} decisions change**" in text.stdout
    assert TABLE_HEADER in text.stdout
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert report["head"] == stricter.revision
    for field in ("replayed", "changed", "by_action_type", "by_rule", "newly", "released"):
        assert report[field] == over_http[field], field


async def test_cli_refuses_a_bad_window(api: Running, stricter: PolicyBundle) -> None:
    result = await tollgate(api, stricter.root, "policy", "impact", "--since", "soon")

    assert result.exit_code == 1
    assert re.search(r"--since: 'soon' is not a duration", result.output)


class Stopped(Exception):
    """What the progress callback raises to stop a replay half-way."""


async def test_a_replay_stopped_half_way_leaves_its_session_as_it_found_it(
    api: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay reads in its caller's session, a chunk ahead of what it evaluates: one
    that stops (here its progress callback raises after the first chunk) closes that
    read and stops reading before it returns, so the session goes on serving its
    caller, with no cursor left open in it nor a read still running."""
    monkeypatch.setattr(impact_module, "CHUNK", 4)
    active = api.runtime.engines.current.bundle
    engine = await asyncio.to_thread(EmbeddedEngine, active, api.settings.entrypoint, 1)

    def stop(replayed: int) -> None:
        raise Stopped(f"stopped after {replayed}")

    try:
        async with api.runtime.db.read() as session:
            tasks = asyncio.all_tasks()
            with pytest.raises(Stopped, match="stopped after 4"):
                await replay(session, engine, engine, None, stop)

            assert asyncio.all_tasks() <= tasks, "a read of the replay is still running"
            if session.bind.dialect.name == "postgresql":
                cursors = await session.execute(text("SELECT count(*) FROM pg_cursors"))
                assert cursors.scalar_one() == 0, "the replay's cursor is still open"
            assert await count_decisions(session, None) == 30
    finally:
        engine.close()
