"""Appeals through the API: filed by support, decided by another reviewer; an uphold
lifts what the appeal covers at the gateway (through the change log), exempts the
subject and records each step in the appeal's trace; a denial changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col

from connectors.memory import MemoryConnector
from controlplane.auth.roles import Role
from controlplane.store.models import AuditEventRow, ChangeRow
from tests.support.app import Running, make_settings, serve
from tests.support.store import fetch
from tests.support.verdicts import new_subject, verdict

CONNECTOR = {"name": "edge", "type": "memory", "providers": ["lab-a"], "reconcile_seconds": 3600}


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    async with serve(make_settings(database_url, tmp_path, connectors=[CONNECTOR])) as running:
        yield running


def gateway(api: Running) -> MemoryConnector:
    connector = api.runtime.enforcer._running["edge"].connector
    assert isinstance(connector, MemoryConnector)
    return connector


async def enforce(api: Running, document: dict[str, Any]) -> list[dict[str, Any]]:
    [result] = (await api.submit(document))["results"]
    await api.runtime.enforcer.settle()
    actions: list[dict[str, Any]] = result["actions"]
    return actions


def appeal_body(subject: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "subject": {"kind": "account", "value": subject["account_id"]},
        "provider": "lab-a",
        "statement": "We run nightly evaluation jobs for a customer; this is not distillation.",
        "contact": "ops@customer.example",
        **extra,
    }


async def test_upheld_appeal_lifts_everything_on_the_account_and_exempts_it(
    api: Running,
) -> None:
    support = await api.token(Role.SUPPORT, "support-ann")
    reviewer = await api.token(Role.REVIEWER, "reviewer-bo")
    subject = new_subject()
    [limit] = await enforce(api, verdict(subject=subject))
    key = ("rate_limit", "api_key", subject["api_key_id"])
    assert key in gateway(api).entries

    filed = await api.client.post("/v1/appeals", json=appeal_body(subject), headers=support)
    assert filed.status_code == 201, filed.text
    appeal = filed.json()
    assert appeal["state"] == "open" and appeal["filed_by"] == "support-ann"
    assert [c["action"]["id"] for c in appeal["actions"]] == [limit["id"]]

    upheld = await api.client.post(
        f"/v1/appeals/{appeal['id']}/uphold",
        json={"reason": "contracted evaluation workload", "exempt_for": "30d"},
        headers=reviewer,
    )
    assert upheld.status_code == 200, upheld.text
    body = upheld.json()
    assert body["state"] == "upheld" and body["decided_by"] == "reviewer-bo"
    assert [c["action"]["state"] for c in body["actions"]] == ["lifted"]
    assert body["exemption_id"] and body["exempt_until"]
    assert "upheld" in body["outcome"] and "1 restriction(s)" in body["outcome"]
    await api.runtime.enforcer.settle()
    assert key not in gateway(api).entries

    changes = await fetch(api.runtime.db, ChangeRow, col(ChangeRow.action_id) == limit["id"])
    changes.sort(key=lambda c: c.seq)
    assert [c.cause for c in changes] == ["planned", "upheld"]
    assert changes[-1].trace_id == appeal["trace_id"], "the lift continues the appeal's trace"
    events = await fetch(
        api.runtime.db, AuditEventRow, col(AuditEventRow.trace_id) == appeal["trace_id"]
    )
    assert [e.type for e in sorted(events, key=lambda e: e.seq)] == [
        "appeal.filed",
        "appeal.upheld",
        "action.lifted",
        "exemption.added",
        "appeal.outcome",
    ]

    # Exempt now: the same evidence again only flags the account for review.
    [again] = (await api.submit(verdict(subject=subject)))["results"]
    assert [a["type"] for a in again["actions"]] == ["flag_review"]


async def log_head(api: Running) -> int:
    """The enforcement change log's head, as the edge connector sees it."""
    async with api.runtime.db.read() as session:
        return (await api.runtime.enforcer.status(session))["edge"][1]


async def test_denied_appeal_changes_nothing_at_the_gateway(api: Running) -> None:
    support = await api.token(Role.SUPPORT, "support-cy")
    reviewer = await api.token(Role.REVIEWER, "reviewer-di")
    subject = new_subject()
    [limit] = await enforce(api, verdict(subject=subject))
    before = dict(gateway(api).entries)
    head = await log_head(api)

    appeal = (
        await api.client.post("/v1/appeals", json=appeal_body(subject), headers=support)
    ).json()
    denied = await api.client.post(
        f"/v1/appeals/{appeal['id']}/deny", json={"reason": "sweep confirmed"}, headers=reviewer
    )
    assert denied.status_code == 200, denied.text
    assert denied.json()["state"] == "denied"
    assert [c["action"]["state"] for c in denied.json()["actions"]] != ["lifted"]
    assert "denied" in denied.json()["outcome"]
    assert await log_head(api) == head, "no change was logged"
    assert gateway(api).entries == before

    again = await api.client.post(
        f"/v1/appeals/{appeal['id']}/uphold", json={"reason": "second try"}, headers=reviewer
    )
    assert again.status_code == 409
    action = (await api.client.get(f"/v1/actions/{limit['id']}")).json()
    assert action["state"] != "lifted"


async def test_who_may_file_and_decide(api: Running) -> None:
    subject = new_subject()
    await enforce(api, verdict(subject=subject))
    reviewer = await api.token(Role.REVIEWER, "reviewer-ed")
    auditor = await api.token(Role.AUDITOR, "auditor-fay")
    support = await api.token(Role.SUPPORT, "support-gus")

    assert (
        await api.client.post("/v1/appeals", json=appeal_body(subject), headers=auditor)
    ).status_code == 403
    assert (
        await api.client.post("/v1/appeals", json=appeal_body(subject), headers=reviewer)
    ).status_code == 403
    # An admin files one, then may not decide it: another must.
    admin_filed = (await api.client.post("/v1/appeals", json=appeal_body(subject))).json()
    own = await api.client.post(f"/v1/appeals/{admin_filed['id']}/deny", json={"reason": "mine"})
    assert own.status_code == 403
    assert "filed appeal" in own.json()["message"]

    filed = (
        await api.client.post("/v1/appeals", json=appeal_body(subject), headers=support)
    ).json()
    by_support = await api.client.post(
        f"/v1/appeals/{filed['id']}/deny", json={"reason": "no"}, headers=support
    )
    assert by_support.status_code == 403
    listed = await api.client.get("/v1/appeals", params={"state": "open"}, headers=support)
    assert listed.status_code == 200
    assert filed["id"] in [a["id"] for a in listed.json()["items"]]


async def test_bad_appeals_name_the_field_and_store_nothing(api: Running) -> None:
    support = await api.token(Role.SUPPORT)
    subject = new_subject()
    bad_reference = await api.client.post(
        "/v1/appeals", json=appeal_body(subject, reference="TG-0000000000"), headers=support
    )
    assert bad_reference.status_code == 422
    assert bad_reference.json()["details"][0]["field"] == "reference"
    unknown_action = await api.client.post(
        "/v1/appeals", json=appeal_body(subject, action_ids=["act_nope"]), headers=support
    )
    assert unknown_action.status_code == 422
    assert unknown_action.json()["details"][0]["field"] == "action_ids[0]"
    listed = await api.client.get(
        "/v1/appeals", params={"subject": f"account:{subject['account_id']}"}
    )
    assert listed.json()["items"] == []
    bad_period = await api.client.post(
        "/v1/appeals/apl_x/uphold", json={"reason": "ok then", "exempt_for": "forever"}
    )
    assert bad_period.status_code == 422


async def test_a_reference_from_a_refusal_finds_the_action(api: Running) -> None:
    support = await api.token(Role.SUPPORT)
    subject = new_subject()
    [limit] = await enforce(api, verdict(subject=subject))
    assert limit["reference"].startswith("TG-")
    body = appeal_body(subject, reference=limit["reference"].lower())
    appeal = (await api.client.post("/v1/appeals", json=body, headers=support)).json()
    assert appeal["reference"] == limit["reference"]
    assert [c["action"]["id"] for c in appeal["actions"]] == [limit["id"]]


async def test_appeals_page_and_filter(api: Running) -> None:
    support = await api.token(Role.SUPPORT)
    subject = new_subject()
    await enforce(api, verdict(subject=subject))
    ids = [
        (await api.client.post("/v1/appeals", json=appeal_body(subject), headers=support)).json()[
            "id"
        ]
        for _ in range(3)
    ]
    wanted = {"subject": f"account:{subject['account_id']}", "limit": 2}
    first = (await api.client.get("/v1/appeals", params=wanted)).json()
    assert [a["id"] for a in first["items"]] == ids[::-1][:2]
    rest = (
        await api.client.get("/v1/appeals", params={**wanted, "cursor": first["next_cursor"]})
    ).json()
    assert [a["id"] for a in rest["items"]] == [ids[0]] and rest["next_cursor"] is None
    older = await api.client.get("/v1/appeals", params={**wanted, "age": "1h"})
    assert older.json()["items"] == []
    assert (await api.client.get("/v1/appeals", params={"subject": "planet"})).status_code == 422
