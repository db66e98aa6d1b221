"""Appeals and exemptions at a real HAProxy: a revoked key's refusal quotes a reference,
an appeal quoting it is upheld and the key is served again; a denied appeal changes
nothing at the gateway; an exemption of one address inside a blocked range serves that
address while its neighbours stay refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.auth.roles import Role
from tests.integration.connectors.haproxy_fixtures import (  # noqa: F401 (fixtures)
    Gateway,
    fingerprint,
    haproxy_binary_fixture,
    haproxy_fixture,
    haproxy_session_fixture,
    model_stub_fixture,
)
from tests.support.app import Running, make_settings, serve
from tests.support.verdicts import new_subject, unique, verdict

OK = 200
WAIT = 10.0
"""Seconds a poll of the gateway may take before the test fails (a bound, not a figure)."""


@pytest.fixture
async def api(database_url: str, tmp_path: Path, haproxy: Gateway) -> AsyncIterator[Running]:
    connector = {
        "name": "edge",
        "type": "haproxy",
        "providers": ["lab-a"],
        "reconcile_seconds": 3600,
        "options": haproxy.connector_options(),
    }
    async with serve(make_settings(database_url, tmp_path, connectors=[connector])) as running:
        yield running


async def until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + WAIT
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {WAIT:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


async def refusal(haproxy: Gateway, source: str, raw_key: str) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(local_address=source), timeout=5.0
    ) as client:
        return await client.get(f"{haproxy.proxy.url}/v1/messages", headers={"x-api-key": raw_key})


async def revoked_subject(
    api: Running, haproxy: Gateway, source: str
) -> tuple[str, dict[str, Any]]:
    raw_key = unique("sk-appeal")
    subject = new_subject(ips=[source])
    subject["api_key_id"] = fingerprint(raw_key)
    severe = verdict(subject=subject, score=0.93, labels=["distillation.capability_sweep"])
    [result] = (await api.submit(severe))["results"]
    assert "revoke_key" in [a["type"] for a in result["actions"]]
    await api.runtime.enforcer.settle()
    return raw_key, subject


def appeal(subject: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "subject": {"kind": "account", "value": subject["account_id"]},
        "provider": "lab-a",
        "statement": "our evaluation harness, not distillation",
        "contact": "ops@customer.example",
        **extra,
    }


async def test_refused_before_an_uphold_and_served_after(api: Running, haproxy: Gateway) -> None:
    raw_key, subject = await revoked_subject(api, haproxy, "127.0.0.40")
    refused = await refusal(haproxy, "127.0.0.40", raw_key)
    assert refused.status_code == 401
    reference = refused.headers["x-tollgate-reference"]
    assert refused.json() == {"error": "api key revoked", "reference": reference}

    support = await api.token(Role.SUPPORT, "support")
    reviewer = await api.token(Role.REVIEWER, "reviewer")
    filed = await api.client.post(
        "/v1/appeals", json=appeal(subject, reference=reference), headers=support
    )
    assert filed.status_code == 201, filed.text
    # The revocation(s) the reference names: one entry, whichever rules asked for it.
    assert {c["action"]["type"] for c in filed.json()["actions"]} == {"revoke_key"}
    explained = await api.client.get(f"/v1/decisions/{reference}/explain")
    assert explained.status_code == 200, explained.text
    assert explained.json()["verdict_id"] == filed.json()["actions"][0]["action"]["verdict_id"]

    assert await haproxy.get("127.0.0.40", **{"x-api-key": raw_key}) == 401
    upheld = await api.client.post(
        f"/v1/appeals/{filed.json()['id']}/uphold",
        json={"reason": "confirmed evaluation workload"},
        headers=reviewer,
    )
    assert upheld.status_code == 200, upheld.text

    async def served() -> bool:
        return await haproxy.get("127.0.0.40", **{"x-api-key": raw_key}) == OK

    await until("the upheld key to be served", served)


async def test_a_denied_appeal_changes_nothing_at_the_gateway(
    api: Running, haproxy: Gateway
) -> None:
    raw_key, subject = await revoked_subject(api, haproxy, "127.0.0.41")
    support = await api.token(Role.SUPPORT, "support")
    reviewer = await api.token(Role.REVIEWER, "reviewer")
    revoked = haproxy.proxy.options.revoked_map
    before = await haproxy.runtime(f"show map {revoked}")
    filed = (await api.client.post("/v1/appeals", json=appeal(subject), headers=support)).json()
    denied = await api.client.post(
        f"/v1/appeals/{filed['id']}/deny", json={"reason": "sweep confirmed"}, headers=reviewer
    )
    assert denied.status_code == 200, denied.text
    await api.runtime.enforcer.settle()
    assert await haproxy.runtime(f"show map {revoked}") == before
    assert await haproxy.get("127.0.0.41", **{"x-api-key": raw_key}) == 401


async def test_an_exempt_address_inside_a_blocked_range_is_served_and_its_neighbours_are_not(
    api: Running, haproxy: Gateway
) -> None:
    indicator = {"kind": "cidr", "value": "127.0.6.0/24", "source": "lab-b", "confidence": 0.9}
    await api.client.post("/v1/intel/indicators", json={"indicators": [indicator]})
    # Local evidence (score >= 0.5) lets one lab's range drive a block.
    [result] = (await api.submit(verdict(subject=new_subject(ips=["127.0.6.9"]), score=0.6)))[
        "results"
    ]
    [block] = result["actions"]
    assert block["type"] == "block"
    await api.runtime.enforcer.settle()
    assert await haproxy.get("127.0.6.7") == 403
    refused = await refusal(haproxy, "127.0.6.8", "sk-any")
    assert refused.status_code == 403
    assert refused.headers["x-tollgate-reference"] == block["reference"]
    assert refused.json() == {"error": "blocked by policy", "reference": block["reference"]}

    body = {
        "subject": {"kind": "ip", "value": "127.0.6.7"},
        "provider": "lab-a",
        "owner": "noc",
        "reason": "the customer's egress address",
    }
    added = await api.client.post("/v1/exemptions", json=body)
    assert added.status_code == 201, added.text
    assert added.json()["carve_out"][0]["carved_out"] is True

    async def served() -> bool:
        return await haproxy.get("127.0.6.7") == OK

    await until("the exempt address to be served", served)
    assert await haproxy.get("127.0.6.8") == 403, "its neighbours are still refused"
    assert await haproxy.get("127.0.6.9") == 403
