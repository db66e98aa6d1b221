"""Operations and verified customers through Tollgate to a real HAProxy that reads the
account from a header a trusted layer sets: a key-rotating operation is refused on a
key it never used once its account is suspended; a verified customer is served while
its review is open, and refused once a reviewer confirms it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.auth.roles import Role
from tests.integration.connectors.haproxy_fixtures import (  # noqa: F401 (fixtures)
    Gateway,
    haproxy_binary_fixture,
    haproxy_by_id_fixture,
    haproxy_id_fixture,
    model_stub_fixture,
)
from tests.support.app import Running, make_settings, serve
from tests.support.verdicts import operation_verdict, unique

OK, REVOKED, REFUSED = 200, 401, 403


@pytest.fixture
async def api(database_url: str, tmp_path: Path, haproxy_id: Gateway) -> AsyncIterator[Running]:
    connector = {
        "name": "edge",
        "type": "haproxy",
        "providers": ["lab-a"],
        "reconcile_seconds": 3600,
        "options": haproxy_id.connector_options(),
    }
    async with serve(make_settings(database_url, tmp_path, connectors=[connector])) as running:
        yield running


async def submit(api: Running, document: dict[str, Any]) -> list[dict[str, Any]]:
    [result] = (await api.submit(document))["results"]
    await api.runtime.enforcer.settle()
    actions: list[dict[str, Any]] = result["actions"]
    return actions


def caller(key: str, account: str, ip: str = "127.0.0.30") -> dict[str, str]:
    """Headers as the trusted layer in front sets them (127.0.0.1 may set the source)."""
    return {"x-api-key-id": key, "x-account-id": account, "x-forwarded-for": ip}


async def test_rotating_operation_is_refused_on_a_new_key_once_suspended(
    api: Running, haproxy_id: Gateway
) -> None:
    account, org = unique("acct_op"), unique("org_op")
    keys = [unique("key_op") for _ in range(3)]
    fresh = unique("key_op_next")  # never seen by any detector
    assert await haproxy_id.get(**caller(fresh, account)) == OK

    types: list[str] = []
    for n, key in enumerate(keys):
        actions = await submit(api, operation_verdict(account, key, org, f"192.0.2.{40 + n}"))
        types = sorted(a["type"] for a in actions)
    assert "suspend" in types  # the third key shows the rotation

    assert await haproxy_id.get(**caller(fresh, account)) == REFUSED
    assert await haproxy_id.get(**caller(keys[0], account)) in {REVOKED, REFUSED}
    # Another account behind the same proxy is served.
    assert await haproxy_id.get(**caller(unique("key_other"), unique("acct_other"))) == OK

    # Lifting the suspension gives the account back (its keys' revocations end with it).
    [suspension] = [
        a
        for a in (await api.client.get("/v1/actions", params={"type": "suspend"})).json()["items"]
        if a["target"]["value"] == account
    ]
    lifted = await api.client.post(
        f"/v1/actions/{suspension['id']}/lift", json={"reason": "test: operation gone"}
    )
    assert lifted.status_code == 200, lifted.text
    await api.runtime.enforcer.settle()
    assert await haproxy_id.get(**caller(fresh, account)) == OK


async def test_verified_customer_is_served_during_review_and_refused_after_confirm(
    api: Running, haproxy_id: Gateway
) -> None:
    account, org, key = unique("acct_vc"), unique("org_vc"), unique("key_vc")
    record = {"account_id": account, "org_id": org, "tier": "enterprise", "keys": [key]}
    imported = await api.client.post("/v1/customers", json={"customers": [record]})
    assert imported.status_code == 200, imported.text

    actions: list[dict[str, Any]] = []
    for n, k in enumerate([key, unique("key_vc"), unique("key_vc")]):
        actions += await submit(api, operation_verdict(account, k, org, f"192.0.2.{60 + n}"))
    assert {a["type"] for a in actions} == {"flag_review"}, actions

    reviews = (await api.client.get("/v1/reviews")).json()["reviews"]
    mine = [r for r in reviews if r["subject"]["value"] == account]
    assert {r["state"] for r in mine} == {"open"}
    # The first verdict withheld a rate limit; the rotation an escalation: a second review.
    [review] = [r for r in mine if "suspend" in {w["type"] for w in r["withheld"]}]
    assert await haproxy_id.get(**caller(key, account)) == OK  # served while under review

    reviewer = await api.token(Role.REVIEWER, name="reviewer-ana")
    confirmed = await api.client.post(
        f"/v1/reviews/{review['id']}/confirm",
        json={"note": "confirmed with the account team"},
        headers=reviewer,
    )
    assert confirmed.status_code == 200, confirmed.text
    body = confirmed.json()
    assert body["review"]["state"] == "confirmed"
    assert body["review"]["resolved_by"] == "reviewer-ana"
    assert "suspend" in {a["type"] for a in body["actions"]}
    # Planned through the plan step: each action its `action.planned` event, by the
    # reviewer, naming the review.
    planned = await api.client.get(
        "/v1/audit", params={"type": "action.planned", "actor": "reviewer-ana"}
    )
    events = planned.json()["items"]
    assert sorted(e["action_id"] for e in events) == sorted(a["id"] for a in body["actions"])
    assert {e["payload"]["review_id"] for e in events} == {review["id"]}
    await api.runtime.enforcer.settle()

    assert await haproxy_id.get(**caller(key, account)) in {REVOKED, REFUSED}
    assert await haproxy_id.get(**caller(unique("key_vc_new"), account)) == REFUSED
    again = await api.client.post(f"/v1/reviews/{review['id']}/confirm", headers=reviewer)
    assert again.status_code == 409
