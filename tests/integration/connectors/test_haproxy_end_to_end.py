"""Through Tollgate to a real HAProxy: a verdict is decided by the bundled policies,
its actions are pushed by the `haproxy` connector (found through its entry point,
configured in tollgate.yaml), and requests through the proxy are refused; drift is
repaired by a reconcile, and a lift gives access back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

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


async def decide(api: Running, document: dict[str, Any]) -> list[dict[str, Any]]:
    [result] = (await api.submit(document))["results"]
    await api.runtime.enforcer.settle()
    actions: list[dict[str, Any]] = result["actions"]
    return actions


async def test_verdicts_are_enforced_at_the_proxy_and_lifts_undo_them(
    api: Running, haproxy: Gateway
) -> None:
    raw_key = unique("sk-e2e")  # the proxy's request counters outlive a test
    subject = new_subject(ips=["127.0.0.20"])
    subject["api_key_id"] = fingerprint(raw_key)  # Tollgate never sees the raw key
    key = {"x-api-key": raw_key}

    [limited] = await decide(api, verdict(subject=subject))
    assert limited["type"] == "rate_limit"
    assert limited["params"]["requests_per_minute"] == 60  # tokens: beyond what HAProxy sees
    assert await haproxy.statuses(61, "127.0.0.20", **key) == [OK] * 60 + [429]
    assert await haproxy.get("127.0.0.21", **{"x-api-key": "sk-e2e-legit"}) == OK

    revoked = [a for a in await decide(api, verdict(subject=subject)) if a["type"] == "revoke_key"]
    assert revoked and await haproxy.get("127.0.0.20", **key) == 401

    [status] = (await api.client.get("/v1/connectors")).json()
    assert status["healthy"] and status["gateway"].startswith("haproxy 2.6")
    assert (status["state"], status["pending_changes"], status["failed"]) == ("healthy", 0, 0)
    await api.runtime.enforcer.reconcile("edge")
    [status] = (await api.client.get("/v1/connectors")).json()
    assert (status["desired"], status["applied"], status["failed"]) == (2, 2, 0)

    lift = await api.client.post(f"/v1/actions/{revoked[0]['id']}/lift", json={"reason": "e2e"})
    assert lift.status_code == 200
    await api.runtime.enforcer.settle()
    assert await haproxy.get("127.0.0.20", **key) == 429  # the rate limit is still active


async def test_an_intel_block_is_enforced_and_drift_is_repaired(
    api: Running, haproxy: Gateway
) -> None:
    indicator = {"kind": "cidr", "value": "127.0.3.0/24", "source": "lab-b", "confidence": 0.9}
    response = await api.client.post("/v1/intel/indicators", json={"indicators": [indicator]})
    assert response.status_code in (200, 201), response.text
    # One lab says so and the local verdict is evidence (score >= 0.5): a block.
    actions = await decide(api, verdict(subject=new_subject(ips=["127.0.3.9"]), score=0.6))
    assert [(a["type"], a["target"]["value"]) for a in actions] == [("block", "127.0.3.0/24")]
    assert await haproxy.get("127.0.3.9") == 403

    acl = haproxy.proxy.options.blocked_acl
    assert await haproxy.runtime(f"del acl {acl} 127.0.3.0/24") == ""  # removed by hand
    assert await haproxy.get("127.0.3.9") == OK

    report = (await api.client.post("/v1/connectors/edge/reconcile")).json()

    assert (report["added"], report["drift_repaired"], report["ok"]) == (1, 1, True)
    assert await haproxy.get("127.0.3.9") == 403
