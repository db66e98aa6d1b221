"""A policy that fails for some inputs: the verdict is still stored and acknowledged, the
decision is recorded as an error with its message, none of the policy's actions is
planned, and the provider's fallback is (by default a flag_review of the subject, so a
failing decision is never a quiet no-action); it is counted and shown in the console."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col

from controlplane.errors import TollgateError
from controlplane.store.models import ActionRow, AuditEventRow, VerdictRow
from tests.integration.audit.test_metrics import scrape, value
from tests.integration.ui.conftest import signed_in
from tests.support.app import Running, make_settings, serve, serve_policy
from tests.support.databases import sqlite_url
from tests.support.store import count, fetch
from tests.support.verdicts import new_subject, verdict

# The decision depends on the score, so one revision shows every way a policy can fail.
FAILING_POLICY = """\
# METADATA
# title: Failing on purpose
# description: Passes check and probe, then fails for chosen scores.
# custom:
#   owner: tests
package failing

# For scores above 0.6 both definitions hold: eval_conflict_error at evaluation time.
_tier := "moderate" if input.verdict.score > 0.5

_tier := "severe" if input.verdict.score > 0.6

_review := {
	"type": "flag_review",
	"target": {"kind": "account", "value": input.verdict.subject.account_id},
	"params": {},
	"ttl": null,
	"rule": "failing.review",
	"reason": "looked at",
}

# METADATA
# title: decision
# description: Malformed, undefined or conflicting for chosen scores.
# custom:
#   owner: tests
decision := "not an object" if {
	input.verdict.score == 0.11
} else := {"actions": [object.union(_review, {"type": "ban_forever"})], "shadow": false} if {
	input.verdict.score == 0.12
} else := {"actions": [object.union(_review, {"target": {"kind": "ip", "value": "x"}})]} if {
	input.verdict.score == 0.13
} else := {"actions": [_review], "shadow": "sometimes"} if {
	input.verdict.score == 0.14
} else := {"actions": [], "shadow": false, "tier": _tier} if {
	input.verdict.score > 0.5
} else := {"actions": [_review], "shadow": false} if {
	input.verdict.score != 0.15
}
"""

FAILURES: dict[str, tuple[dict[str, Any], str]] = {
    "not an object": ({"score": 0.11}, "malformed decision: decision must be an object, got str"),
    "unknown action type": (
        {"score": 0.12},
        "malformed decision: decision.actions[0].type must be one of",
    ),
    "bad target": (
        {"score": 0.13},
        "malformed decision: decision.actions[0].target.value 'x' is not a valid ip",
    ),
    "null target": (
        {"score": 0.3, "subject": {"ips": ["192.0.2.5"]}},
        "malformed decision: decision.actions[0].target.value must be a non-empty string",
    ),
    "bad shadow": ({"score": 0.14}, "malformed decision: decision.shadow must be true or false"),
    "undefined": ({"score": 0.15}, "data.failing.decision is undefined for this input"),
    "conflict": ({"score": 0.7}, "eval_conflict_error: complete rules must not produce multiple"),
}


@pytest.fixture(scope="module")
def failing_policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("failing-policies")
    (root / "failing.rego").write_text(FAILING_POLICY, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
async def failing_api(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    directory = tmp_path_factory.mktemp("failing")
    entrypoint = "failing.decision"
    async with serve_policy(module_database_url, directory, FAILING_POLICY, entrypoint) as api:
        yield api


def delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def assert_error_decision(
    api: Running, result: dict[str, Any], message: str, *, fallback: bool = True
) -> None:
    verdict_id = result["verdict_id"]
    assert result["status"] == "decided"
    assert result["decision_status"] == "error"
    assert message in result["error"]
    assert [a["rule"] for a in result["actions"]] == (["tollgate.fallback"] if fallback else [])

    stored = (await api.client.get(f"/v1/verdicts/{verdict_id}")).json()
    assert (stored["status"], stored["decision_status"]) == ("decided", "error")
    decision = (await api.client.get(f"/v1/decisions/{result['decision_id']}")).json()
    assert decision["status"] == "error"
    assert message in decision["error"]
    assert decision["actions"] == result["actions"]
    db = api.runtime.db
    rows = await fetch(db, ActionRow, col(ActionRow.verdict_id) == verdict_id)
    assert [(r.type, r.rule, r.shadow) for r in rows] == (
        [("flag_review", "tollgate.fallback", False)] if fallback else []
    )
    if fallback:
        assert message in rows[0].reason  # the reviewer sees why
    events = await fetch(db, AuditEventRow, col(AuditEventRow.verdict_id) == verdict_id)
    planned = ["action.planned"] if fallback else []
    assert sorted(e.type for e in events) == [*planned, "decision.recorded", "verdict.received"]
    [recorded] = [e for e in events if e.type == "decision.recorded"]
    assert recorded.payload["status"] == "error"
    assert message in recorded.payload["error"]
    assert recorded.payload["actions"] == len(planned)


@pytest.mark.parametrize("case", list(FAILURES))
async def test_failing_evaluation_is_recorded_as_an_error_decision(
    failing_api: Running, case: str
) -> None:
    fields, message = FAILURES[case]
    document = verdict(**fields)

    response = await failing_api.client.post("/v1/verdicts", json=document)

    assert response.status_code == 202
    [result] = response.json()["results"]
    await assert_error_decision(failing_api, result, message)
    assert await count(failing_api.runtime.db, VerdictRow, col(VerdictRow.id) == document["id"])


async def test_malformed_output_is_kept_as_returned(failing_api: Running) -> None:
    [result] = (await failing_api.submit(verdict(score=0.12)))["results"]

    decision = (await failing_api.client.get(f"/v1/decisions/{result['decision_id']}")).json()

    assert decision["result"]["actions"][0]["type"] == "ban_forever"


async def test_failures_in_a_batch_leave_the_good_verdicts_decided(failing_api: Running) -> None:
    subject = new_subject()
    batch = [
        verdict(subject=subject, score=0.3),
        verdict(score=0.7),
        verdict(score=0.12),
        verdict(score=0.55),
    ]

    body = await failing_api.submit({"verdicts": batch})

    assert body["accepted"] == 4
    good, conflict, malformed, empty = body["results"]
    assert (good["decision_status"], [a["type"] for a in good["actions"]]) == (
        "ok",
        ["flag_review"],
    )
    assert good["actions"][0]["target"] == {"kind": "account", "value": subject["account_id"]}
    await assert_error_decision(failing_api, conflict, "eval_conflict_error")
    await assert_error_decision(failing_api, malformed, "decision.actions[0].type")
    assert (empty["decision_status"], empty["actions"]) == ("ok", [])

    # The engine keeps working after an evaluation error.
    [after] = (await failing_api.submit(verdict(score=0.3)))["results"]
    assert after["decision_status"] == "ok"


async def test_startup_refuses_a_policy_with_an_undefined_entrypoint(
    failing_policy_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        sqlite_url(tmp_path),
        tmp_path,
        policy_dir=failing_policy_dir,
        entrypoint="tollgate.decision",
    )

    with caplog.at_level(logging.ERROR), pytest.raises(TollgateError) as raised:
        async with serve(settings):
            pass

    # The error that stops startup, or the log beside it, names the problem.
    assert "entrypoint data.tollgate.decision is undefined" in raised.value.message + caplog.text


async def test_the_fallback_flags_the_subject_for_a_human(failing_api: Running) -> None:
    subject = new_subject()

    [result] = (await failing_api.submit(verdict(subject=subject, score=0.7)))["results"]

    [flag] = result["actions"]
    assert flag["type"] == "flag_review"
    assert flag["target"] == {"kind": "account", "value": subject["account_id"]}
    assert flag["reason"].startswith("the decision failed, so no policy acted")
    assert "eval_conflict_error" in flag["reason"]
    assert flag["ttl_seconds"] is None


async def test_errors_and_fallbacks_are_counted_in_metrics(failing_api: Running) -> None:
    before = await scrape(failing_api)

    await failing_api.submit(
        {"verdicts": [verdict(score=0.7), verdict(score=0.12), verdict(score=0.3)]}
    )

    after = await scrape(failing_api)
    assert delta(before, after, "tollgate_decisions_total", status="error") == 2
    assert delta(before, after, "tollgate_decision_fallbacks_total", fallback="flag_review") == 2


async def test_the_console_shows_the_failed_decision(failing_api: Running) -> None:
    subject = new_subject()
    await failing_api.submit(verdict(subject=subject, score=0.12))

    async with signed_in(failing_api) as console:
        page = await console.get(
            "/console", params={"subject_kind": "account", "subject": subject["account_id"]}
        )

    assert page.status_code == 200
    html = page.text
    assert '<span class="badge error">error</span>' in html
    assert "error, 1 action(s): malformed decision: decision.actions[0].type" in html
    assert "tollgate.fallback" in html


@pytest.fixture(scope="module")
async def quiet_api(
    module_database_url: str,
    failing_policy_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Running]:
    """lab-a's fallback is `none`: nothing is planned, the error is still counted."""
    settings = make_settings(
        module_database_url,
        tmp_path_factory.mktemp("data"),
        policy_dir=failing_policy_dir,
        entrypoint="failing.decision",
        providers={"lab-a": {"fallback": "none"}},
    )
    async with serve(settings) as running:
        yield running


async def test_a_provider_may_choose_no_fallback(quiet_api: Running) -> None:
    before = await scrape(quiet_api)

    [result] = (await quiet_api.submit(verdict(score=0.7)))["results"]
    [other] = (await quiet_api.submit(verdict(score=0.7, provider="lab-b")))["results"]

    await assert_error_decision(quiet_api, result, "eval_conflict_error", fallback=False)
    await assert_error_decision(quiet_api, other, "eval_conflict_error")
    after = await scrape(quiet_api)
    assert delta(before, after, "tollgate_decision_fallbacks_total", fallback="none") == 1
    assert delta(before, after, "tollgate_decision_fallbacks_total", fallback="flag_review") == 1
