"""Explain: a stored decision is re-run at its revision on its stored input with the
engine's trace; the answer lists its actions with their rule's METADATA, the rules
that evaluated true, and whether the re-run matches what was stored."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import update
from sqlmodel import col
from typer.testing import CliRunner, Result

from controlplane.cli.main import app
from controlplane.settings import get_settings
from controlplane.store.models import DecisionRow
from tests.support.app import POLICY_DIR, Running
from tests.support.verdicts import new_subject, verdict

GRADUATED = "tollgate/graduated/graduated.rego"


def line_of_rule(rule: str) -> int:
    lines = (POLICY_DIR / GRADUATED).read_text(encoding="utf-8").splitlines()
    [line] = [n for n, text in enumerate(lines, 1) if text.startswith(f"{rule} contains ")]
    return line


async def decide(api: Running, **kwargs: Any) -> dict[str, Any]:
    results: list[dict[str, Any]] = (await api.submit(verdict(subject=new_subject(), **kwargs)))[
        "results"
    ]
    [result] = results
    assert result["decision_status"] == "ok", result
    return result


async def explain(api: Running, decision_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/v1/decisions/{decision_id}/explain")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def tamper(api: Running, decision_id: str, result: Any) -> None:
    """Rewrite a stored decision's result behind Tollgate's back."""
    async with api.runtime.db.write() as session, session.begin():
        await session.execute(
            update(DecisionRow).where(col(DecisionRow.id) == decision_id).values(result=result)
        )


async def tollgate(api: Running, *args: str) -> Result:
    env = {"TOLLGATE_DATABASE_URL": api.settings.resolved_database_url, "COLUMNS": "250"}

    def run() -> Result:
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(app, list(args), env=env)
        finally:
            get_settings.cache_clear()

    return await asyncio.to_thread(run)


async def test_a_decision_is_explained_by_its_rules(api: Running) -> None:
    result = await decide(api)

    explained = await explain(api, result["decision_id"])

    assert explained["matches"] is True
    assert explained["rerun_error"] is None
    assert explained["rerun_result"] == explained["stored_result"]
    assert explained["policy_revision"] == result["policy_revision"]
    assert explained["verdict_id"] == result["verdict_id"]
    assert explained["entrypoint"] == "tollgate.decision"
    [action] = explained["actions"]
    assert (action["type"], action["rule"]) == ("rate_limit", "graduated.first_offense")
    assert action["metadata"]["title"] == "first_offense"
    assert action["metadata"]["custom"]["owner"] == "abuse-engineering"
    assert action["metadata"]["description"].startswith("First qualifying verdict")

    fired = {f["rule"]: f for f in explained["fired"]}
    asked = fired["tollgate.graduated.first_offense"]
    assert asked["location"] == f"{GRADUATED}:{line_of_rule('first_offense')}"
    assert asked["bindings"]["action"]["rule"] == "graduated.first_offense"
    assert asked["bindings"]["action"]["target"] == action["target"]
    assert asked["metadata"]["custom"]["owner"] == "abuse-engineering"
    assert "tollgate.graduated.repeat_offense" not in fired
    assert "tollgate.graduated.severe_sweep" not in fired


async def test_an_escalation_names_each_rule(api: Running) -> None:
    result = await decide(api, score=0.98)

    explained = await explain(api, result["decision_id"])

    assert explained["matches"] is True
    owners = {a["rule"]: a["metadata"]["custom"]["owner"] for a in explained["actions"]}
    assert owners == {
        "graduated.severe_sweep": "abuse-engineering",
        "graduated.account_review": "abuse-engineering",
    }
    fired = {f["rule"] for f in explained["fired"]}
    assert {"tollgate.graduated.severe_sweep", "tollgate.graduated.account_review"} <= fired
    assert "tollgate.graduated.first_offense" not in fired


async def test_a_tampered_decision_no_longer_matches(api: Running) -> None:
    result = await decide(api)
    decision_id = result["decision_id"]
    stored = (await explain(api, decision_id))["stored_result"]

    await tamper(api, decision_id, {"actions": [], "shadow": False})
    explained = await explain(api, decision_id)

    assert explained["matches"] is False
    assert explained["stored_result"] == {"actions": [], "shadow": False}
    assert explained["rerun_result"] == stored


async def test_unknown_decision_is_404(api: Running) -> None:
    response = await api.client.get("/v1/decisions/dec_nothing/explain")
    assert response.status_code == 404
    assert "dec_nothing" in response.json()["message"]


async def test_cli_says_whether_the_rerun_matches(api: Running) -> None:
    kept = await decide(api)
    tampered = await decide(api)
    await tamper(api, tampered["decision_id"], {"actions": [], "shadow": False})

    matches = await tollgate(api, "decision", "explain", kept["decision_id"])
    differs = await tollgate(api, "decision", "explain", tampered["decision_id"])
    unknown = await tollgate(api, "decision", "explain", "dec_nothing")

    assert matches.exit_code == 0, matches.output
    assert "re-run matches the stored result" in matches.stdout
    assert "graduated.first_offense" in matches.stdout
    assert "abuse-engineering" in matches.stdout
    assert "tollgate.graduated.first_offense" in matches.stdout
    assert differs.exit_code == 0, differs.output
    assert "re-run differs from the stored result" in differs.stdout
    assert '"actions": []' in differs.stdout
    assert unknown.exit_code == 1
    assert "dec_nothing" in unknown.output
