"""`GET /v1/decisions/{id}`: the exact input and output of an evaluation."""

from __future__ import annotations

import re
from datetime import datetime

from tests.support.app import Running
from tests.support.verdicts import new_subject, verdict

HEX32 = re.compile(r"^[0-9a-f]{32}$")


async def test_decision_shows_input_result_revision_and_trace(api: Running) -> None:
    subject = new_subject(ips=["192.0.2.77"])
    first = verdict(subject=subject, observed_at="2026-11-20T08:00:00Z")
    second = verdict(subject=subject)
    await api.submit(first)
    [result] = (await api.submit(second))["results"]

    response = await api.client.get(f"/v1/decisions/{result['decision_id']}")

    assert response.status_code == 200
    decision = response.json()
    assert decision["id"] == result["decision_id"]
    assert decision["verdict_id"] == second["id"]
    assert decision["provider"] == "lab-a"
    assert decision["status"] == "ok"
    assert decision["error"] is None
    assert decision["shadow"] is False
    assert decision["engine"] == "opa-embedded"
    assert decision["entrypoint"] == "tollgate.decision"
    assert decision["policy_revision"] == api.runtime.engines.current.revision
    assert HEX32.match(decision["trace_id"])
    assert decision["duration_ms"] >= 0

    given = decision["input"]
    assert set(given) == {"verdict", "history", "context", "now"}
    assert given["verdict"]["id"] == second["id"]
    assert given["verdict"]["subject"] == subject
    assert given["history"]["verdicts_30d"] == 1
    [active] = given["history"]["active_actions"]
    assert (active["type"], active["rule"]) == ("rate_limit", "graduated.first_offense")
    assert active["target"] == {"kind": "api_key", "value": subject["api_key_id"]}
    assert given["context"]["exempt"] is False
    assert given["context"]["intel_matches"] == []
    assert given["now"].endswith("Z")
    datetime.fromisoformat(given["now"])

    # The result is the entrypoint's output as returned; the planned actions follow it.
    assert decision["result"]["shadow"] is False
    assert sorted(a["type"] for a in decision["result"]["actions"]) == [
        "flag_review",
        "revoke_key",
    ]
    assert sorted((a["type"], a["rule"]) for a in decision["actions"]) == sorted(
        (a["type"], a["rule"]) for a in decision["result"]["actions"]
    )
    assert {a["id"] for a in decision["actions"]} == {a["id"] for a in result["actions"]}


async def test_unknown_decision_is_404(api: Running) -> None:
    response = await api.client.get("/v1/decisions/dec_nothing")
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "not_found"
    assert "dec_nothing" in body["message"]
