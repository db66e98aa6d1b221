"""Shadow mode: METADATA `custom.mode: shadow` on a rule (here graduated.first_offense)
or on a package (here tollgate.intel) records its actions with `shadow: true`; they are
listed by `GET /v1/actions?shadow=true`, never count as history and never reach a
gateway, while the other rules stay live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.memory import MemoryConnector
from tests.integration.policy.policy_copies import (
    GRADUATED,
    INTEL,
    copy_policies,
    shadow_package,
    shadow_rule,
)
from tests.support.app import Running, make_settings, serve
from tests.support.verdicts import new_subject, verdict

EDGE = {"name": "edge", "type": "memory", "providers": ["lab-a"], "reconcile_seconds": 3600}
SHADOW_RANGE = "203.0.113.0/24"


@pytest.fixture(scope="module")
async def api(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    policies = copy_policies(tmp_path_factory.mktemp("shadow") / "policies")
    shadow_rule(policies, GRADUATED, "first_offense")
    shadow_package(policies, INTEL)
    data_dir = tmp_path_factory.mktemp("data")
    settings = make_settings(module_database_url, data_dir, policy_dir=policies, connectors=[EDGE])
    async with serve(settings) as running:
        response = await running.client.post(
            "/v1/intel/indicators",
            json={"indicators": [{"value": SHADOW_RANGE, "source": "lab-b", "confidence": 0.9}]},
        )
        assert response.status_code == 201, response.text
        yield running


def gateway(api: Running) -> MemoryConnector:
    connector = api.runtime.enforcer._running["edge"].connector
    assert isinstance(connector, MemoryConnector)
    return connector


async def decide(api: Running, document: dict[str, Any]) -> dict[str, Any]:
    results: list[dict[str, Any]] = (await api.submit(document))["results"]
    [result] = results
    assert result["decision_status"] == "ok", result
    await api.runtime.enforcer.settle()
    return result


async def listed(api: Running, shadow: bool, target: str) -> list[dict[str, Any]]:
    query = {"shadow": str(shadow).lower(), "target_value": target}
    response = await api.client.get("/v1/actions", params=query)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_a_shadow_rule_is_recorded_and_never_enforced(api: Running) -> None:
    subject = new_subject()
    key = subject["api_key_id"]

    result = await decide(api, verdict(subject=subject))

    [action] = result["actions"]
    assert (action["type"], action["rule"], action["shadow"]) == (
        "rate_limit",
        "graduated.first_offense",
        True,
    )
    decision = (await api.client.get(f"/v1/decisions/{result['decision_id']}")).json()
    assert decision["shadow"] is False, "the decision is live; one of its rules is not"
    assert [a["id"] for a in await listed(api, True, key)] == [action["id"]]
    assert await listed(api, False, key) == []
    assert ("rate_limit", "api_key", key) not in gateway(api).entries

    reconciled = await api.client.post("/v1/connectors/edge/reconcile")
    assert reconciled.status_code in (200, 201), reconciled.text
    assert ("rate_limit", "api_key", key) not in gateway(api).entries


async def test_live_rules_of_the_same_policy_reach_the_gateway(api: Running) -> None:
    subject = new_subject()
    key = subject["api_key_id"]

    result = await decide(api, verdict(subject=subject, score=0.98))

    actions = {a["rule"]: a for a in result["actions"]}
    assert set(actions) == {"graduated.severe_sweep", "graduated.account_review"}
    assert not any(a["shadow"] for a in actions.values())
    assert ("revoke_key", "api_key", key) in gateway(api).entries
    assert [a["id"] for a in await listed(api, False, key)] == [
        actions["graduated.severe_sweep"]["id"]
    ]


async def test_shadow_actions_are_not_history(api: Running) -> None:
    subject = new_subject()
    first = await decide(api, verdict(subject=subject, observed_at="2026-11-25T08:00:00Z"))
    assert [a["shadow"] for a in first["actions"]] == [True]

    later = await decide(api, verdict(subject=subject))

    decision = (await api.client.get(f"/v1/decisions/{later['decision_id']}")).json()
    assert decision["input"]["history"]["verdicts_30d"] == 1
    assert decision["input"]["history"]["active_actions"] == []


async def test_a_shadow_package_shadows_all_its_rules(api: Running) -> None:
    subject = new_subject(ips=["203.0.113.7"])

    result = await decide(api, verdict(subject=subject, score=0.6))

    [block] = result["actions"]
    assert (block["type"], block["rule"], block["shadow"]) == ("block", "intel.known_range", True)
    assert block["target"] == {"kind": "cidr", "value": SHADOW_RANGE}
    assert [a["id"] for a in await listed(api, True, SHADOW_RANGE)] == [block["id"]]
    assert not any(kind == "block" for kind, _, _ in gateway(api).entries)


async def test_policies_list_the_shadow_rules(api: Running) -> None:
    listed = (await api.client.get("/v1/policies")).json()

    [revision] = [r for r in listed["revisions"] if r["active"]]
    assert revision["id"] == api.runtime.engines.current.revision
    assert "tollgate.graduated.first_offense" in revision["shadow_rules"]
    assert "tollgate.intel.*" in revision["shadow_rules"], "a package in shadow is listed"
    assert not any("severe_sweep" in r for r in revision["shadow_rules"])
