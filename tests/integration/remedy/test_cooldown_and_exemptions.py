"""No re-ban loops, and exemptions that win: after a lift the same evidence is held
back (and shown), stronger evidence acts; an exemption lifts what is enforced on its
subject at once, can be removed, and expires."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col

from connectors.memory import MemoryConnector
from controlplane.store.models import AuditEventRow, ChangeRow, ExemptionRow
from tests.support.app import Running, make_settings, serve
from tests.support.store import add, exemption, fetch
from tests.support.verdicts import new_subject, verdict

CONNECTOR = {"name": "edge", "type": "memory", "providers": ["lab-a"], "reconcile_seconds": 3600}


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    settings = make_settings(
        database_url, tmp_path, connectors=[CONNECTOR], providers={"lab-a": {"cooldown": "3d"}}
    )
    async with serve(settings) as running:
        yield running


def gateway(api: Running) -> MemoryConnector:
    connector = api.runtime.enforcer._running["edge"].connector
    assert isinstance(connector, MemoryConnector)
    return connector


async def decide(api: Running, document: dict[str, Any]) -> dict[str, Any]:
    [result] = (await api.submit(document))["results"]
    await api.runtime.enforcer.settle()
    return result


def kinds(result: dict[str, Any]) -> list[str]:
    return sorted(f"{a['type']}:{a['rule']}" for a in result["actions"])


async def test_after_a_lift_the_same_evidence_is_held_back_and_stronger_acts(
    api: Running,
) -> None:
    subject = new_subject()
    [limit] = (await decide(api, verdict(subject=subject, score=0.78)))["actions"]
    lifted = await api.client.post(
        f"/v1/actions/{limit['id']}/lift", json={"reason": "false positive: batch evals"}
    )
    assert lifted.status_code == 200, lifted.text

    again = await decide(api, verdict(subject=subject, score=0.78))
    assert kinds(again) == [
        "flag_review:cooldown.held_back",
        "flag_review:graduated.account_review",
    ], "the earlier verdict no longer makes a repeat that revokes the key"
    given = (await api.client.get(f"/v1/decisions/{again['decision_id']}")).json()["input"]
    [lift] = given["history"]["appeals"]
    assert (lift["state"], lift["rule"], lift["score"]) == ("lifted", limit["rule"], 0.78)
    until = datetime.fromisoformat(lift["cooldown_until"].replace("Z", "+00:00"))
    at = datetime.fromisoformat(lift["at"].replace("Z", "+00:00"))
    assert until - at == timedelta(days=3), "the provider's cool-down from tollgate.yaml"
    assert ("revoke_key", "api_key", subject["api_key_id"]) not in gateway(api).entries

    stronger = await decide(api, verdict(subject=subject, score=0.85))
    assert "revoke_key:graduated.repeat_offense" in kinds(stronger)
    assert ("revoke_key", "api_key", subject["api_key_id"]) in gateway(api).entries


async def test_an_exemption_lifts_what_is_enforced_then_ends_by_hand(api: Running) -> None:
    subject = new_subject()
    [limit] = (await decide(api, verdict(subject=subject)))["actions"]
    key = ("rate_limit", "api_key", subject["api_key_id"])
    assert key in gateway(api).entries
    body = {
        "subject": {"kind": "account", "value": subject["account_id"]},
        "provider": "lab-a",
        "owner": "trust-and-safety",
        "reason": "enterprise contract MSA-7",
    }
    added = await api.client.post("/v1/exemptions", json=body)
    assert added.status_code == 201, added.text
    assert added.json()["lifted"] == [limit["id"]]
    await api.runtime.enforcer.settle()
    assert key not in gateway(api).entries
    changes = await fetch(api.runtime.db, ChangeRow, col(ChangeRow.action_id) == limit["id"])
    assert sorted(c.cause for c in changes) == ["exempted", "planned"]

    exemption_id = added.json()["id"]
    live = (await api.client.get("/v1/exemptions", params={"live": "true"})).json()
    assert exemption_id in [e["id"] for e in live]
    removed = await api.client.delete(
        f"/v1/exemptions/{exemption_id}", params={"reason": "contract ended"}
    )
    assert removed.status_code == 200, removed.text
    assert removed.json()["ended_at"] and removed.json()["ended_by"] == "test-admin"
    again = await api.client.delete(
        f"/v1/exemptions/{exemption_id}", params={"reason": "contract ended"}
    )
    assert again.status_code == 409
    live = (await api.client.get("/v1/exemptions", params={"live": "true"})).json()
    assert exemption_id not in [e["id"] for e in live]
    # Gone by id once ended, yet kept for the record in the list.
    assert (await api.client.get(f"/v1/exemptions/{exemption_id}")).status_code == 404
    listed = (await api.client.get("/v1/exemptions")).json()
    assert [e["ended_by"] for e in listed if e["id"] == exemption_id] == ["test-admin"]
    # Enforced again from now on (the cool-down of the exemption's lift still holds the
    # same evidence back, so stronger evidence acts).
    result = await decide(api, verdict(subject=subject, score=0.88))
    assert "revoke_key:graduated.repeat_offense" in kinds(result)


async def test_exemptions_expire_with_an_event_and_leave_the_policy(api: Running) -> None:
    subject = new_subject()
    past = datetime.now(UTC) - timedelta(seconds=1)
    row = exemption("lab-a", "account", subject["account_id"], expires_at=past)
    await add(api.runtime.db, row)
    assert await api.runtime.expire_exemptions() >= 1
    [stored] = await fetch(api.runtime.db, ExemptionRow, col(ExemptionRow.id) == row.id)
    assert stored.ended_at is not None and stored.ended_by == "tollgate"
    events = await fetch(
        api.runtime.db, AuditEventRow, col(AuditEventRow.type) == "exemption.expired"
    )
    assert row.id in [e.payload["id"] for e in events]
    result = await decide(api, verdict(subject=subject))
    assert kinds(result) == ["rate_limit:graduated.first_offense"]


async def test_an_ip_exemption_inside_a_blocked_range_is_reported_per_connector(
    api: Running,
) -> None:
    indicator = {"kind": "cidr", "value": "198.18.40.0/24", "source": "lab-b", "confidence": 0.9}
    await api.client.post("/v1/intel/indicators", json={"indicators": [indicator]})
    subject = new_subject(ips=["198.18.40.9"])
    # Local evidence (score >= 0.5) lets one lab's range drive a block.
    [block] = (await decide(api, verdict(subject=subject, score=0.6)))["actions"]
    body = {
        "subject": {"kind": "ip", "value": "198.18.40.9"},
        "provider": "lab-a",
        "owner": "noc",
        "reason": "the customer's egress",
    }
    added = (await api.client.post("/v1/exemptions", json=body)).json()
    assert added["lifted"] == [] and added["covering"] == [block["id"]]
    assert added["carve_out"] == [
        {"connector": "edge", "carved_out": True, "detail": "served before the block list"}
    ]
    await api.runtime.enforcer.settle()
    entries = gateway(api).entries
    assert ("block", "cidr", "198.18.40.0/24") in entries, "the range stays blocked"
    assert ("allow", "ip", "198.18.40.9") in entries, "the address is carved out"

    await api.client.delete(f"/v1/exemptions/{added['id']}", params={"reason": "moved"})
    await api.runtime.enforcer.settle()
    assert ("allow", "ip", "198.18.40.9") not in gateway(api).entries
