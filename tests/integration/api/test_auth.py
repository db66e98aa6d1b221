"""Every endpoint but health needs a bearer token whose role may do the thing."""

from __future__ import annotations

import pytest
from sqlmodel import col

from controlplane.auth.roles import Role
from controlplane.auth.service import hash_token
from controlplane.store.models import ApiTokenRow, AuditEventRow
from tests.support.app import Running
from tests.support.store import fetch
from tests.support.verdicts import verdict


async def test_no_token_is_401_and_says_how_to_get_one(api: Running) -> None:
    response = await api.client.get("/v1/actions", headers={"Authorization": ""})
    assert response.status_code == 401
    assert "tollgate token create" in response.json()["message"]


async def test_unknown_token_is_401(api: Running) -> None:
    response = await api.client.get("/v1/actions", headers={"Authorization": "Bearer tg_nope"})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


async def test_health_needs_no_token(api: Running) -> None:
    for path in ("/healthz", "/readyz"):
        assert (await api.client.get(path, headers={"Authorization": ""})).status_code == 200


@pytest.mark.parametrize(
    ("role", "method", "path", "allowed"),
    [
        (Role.DETECTOR, "POST", "/v1/verdicts", True),
        (Role.DETECTOR, "GET", "/v1/actions", False),
        (Role.AUDITOR, "GET", "/v1/actions", True),
        (Role.AUDITOR, "POST", "/v1/verdicts", False),
        (Role.AUDITOR, "POST", "/v1/exemptions", False),
        (Role.REVIEWER, "POST", "/v1/exemptions", True),
        (Role.ENGINEER, "POST", "/v1/exemptions", False),
        (Role.ENGINEER, "POST", "/v1/intel/indicators", True),
        (Role.REVIEWER, "POST", "/v1/intel/indicators", False),
        (Role.ENGINEER, "GET", "/v1/policies", True),
    ],
)
async def test_roles(api: Running, role: Role, method: str, path: str, allowed: bool) -> None:
    bodies = {
        "/v1/verdicts": verdict(),
        "/v1/exemptions": {
            "subject": {"kind": "account", "value": "acct_auth"},
            "provider": "lab-a",
            "owner": "trust@lab-a",
            "reason": "contracted bulk use",
        },
        "/v1/intel/indicators": {
            "indicators": [{"value": "192.0.2.0/28", "source": "lab-b", "confidence": 0.5}]
        },
    }
    headers = await api.token(role)
    response = await api.client.request(method, path, json=bodies.get(path), headers=headers)
    if allowed:
        assert response.status_code in (200, 201, 202), response.text
    else:
        assert response.status_code == 403
        assert role.value in response.json()["message"]


async def test_tokens_are_stored_hashed_and_revocable(api: Running) -> None:
    token, row = await api.runtime.tokens.create("rotating", Role.AUDITOR, actor="tests")
    headers = {"Authorization": f"Bearer {token}"}
    assert (await api.client.get("/v1/actions", headers=headers)).status_code == 200

    [stored] = await fetch(api.runtime.db, ApiTokenRow, col(ApiTokenRow.id) == row.id)
    assert stored.token_hash == hash_token(token)
    assert token not in stored.model_dump_json()

    await api.runtime.tokens.revoke(row.id, actor="tests")
    assert (await api.client.get("/v1/actions", headers=headers)).status_code == 401


async def test_the_caller_is_the_actor_of_what_it_did(api: Running) -> None:
    headers = await api.token(Role.DETECTOR, name="sweep-detector@lab-a")
    document = verdict()
    assert (
        await api.client.post("/v1/verdicts", json=document, headers=headers)
    ).status_code == 202

    events = await fetch(
        api.runtime.db,
        AuditEventRow,
        col(AuditEventRow.verdict_id) == document["id"],
        col(AuditEventRow.type) == "verdict.received",
    )
    assert [e.actor for e in events] == ["sweep-detector@lab-a"]
