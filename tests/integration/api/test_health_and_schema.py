"""`/healthz`, `/readyz` and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import httpx

from controlplane.api.app import create_app
from controlplane.engine.bundle import load_bundle
from controlplane.runtime import Runtime
from tests.support.app import POLICY_DIR, Running, make_settings
from tests.support.databases import sqlite_url


async def test_healthz(api: Running) -> None:
    response = await api.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_database_and_loaded_revision(api: Running) -> None:
    response = await api.client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["policy"] == {
        "revision": load_bundle(POLICY_DIR).revision,
        "engine": "opa-embedded",
        "entrypoint": "tollgate.decision",
    }
    # One process: it leads the periodic jobs (on SQLite always; on PostgreSQL it took
    # the lock at start, no other replica holding it).
    assert body["checks"]["periodic_jobs"] == "leading"


async def test_readyz_is_503_until_a_policy_revision_is_loaded(tmp_path: Path) -> None:
    settings = make_settings(sqlite_url(tmp_path), tmp_path)
    runtime = Runtime.create(settings)
    app = create_app(settings, runtime)  # startup never runs: no revision is loaded
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://tollgate.test"
        ) as client:
            response = await client.get("/readyz")
            submitted = await client.post("/v1/verdicts", json={"verdicts": []})
    finally:
        await runtime.db.dispose()

    assert response.status_code == 503
    assert response.json()["status"] == "not ready"
    assert response.json()["checks"]["policy"] == "not loaded"
    assert submitted.status_code == 401, "no token: refused before anything else"


async def test_openapi_documents_the_paths(api: Running) -> None:
    response = await api.client.get("/schema/openapi.json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/healthz",
        "/readyz",
        "/v1/verdicts",
        "/v1/verdicts/{verdict_id}",
        "/v1/decisions/{decision_id}",
        "/v1/actions",
    ):
        assert path in paths, path
    assert paths["/v1/verdicts"]["post"]["operationId"] == "submitVerdicts"
    assert "202" in paths["/v1/verdicts"]["post"]["responses"]
    assert paths["/v1/actions"]["get"]["operationId"] == "listActions"
    query = {p["name"] for p in paths["/v1/actions"]["get"]["parameters"]}
    assert {"state", "type", "target_kind", "target_value", "provider", "cursor", "limit"} <= query


async def test_openapi_documents_the_verdict_request_body(api: Running) -> None:
    document = (await api.client.get("/schema/openapi.json")).json()
    body = document["paths"]["/v1/verdicts"]["post"]["requestBody"]

    assert body["required"] is True
    single, batch = body["content"]["application/json"]["schema"]["oneOf"]
    assert {"id", "detector", "provider", "observed_at", "subject", "score", "confidence"} <= set(
        single["required"]
    )
    assert single["additionalProperties"] is False
    assert single["properties"]["score"]["maximum"] == 1
    assert single["properties"]["score"]["minimum"] == 0
    assert single["properties"]["observed_at"]["format"] == "date-time"
    subject = single["properties"]["subject"]
    assert {"account_id", "api_key_id", "org_id", "ips"} <= set(subject["properties"])
    assert "$ref" not in str(body), "nested models are inlined"
    verdicts = batch["properties"]["verdicts"]
    assert (verdicts["minItems"], verdicts["maxItems"]) == (1, 1000)
    assert verdicts["items"]["properties"].keys() == single["properties"].keys()
