"""The OpenAPI document states what the server does (bearer auth, the real error shape,
every status), and its docs page works without the internet."""

from __future__ import annotations

import re
from typing import Any

from tests.support.app import Running

ERROR_REF = "#/components/schemas/ErrorBody"


async def _document(api: Running) -> dict[str, Any]:
    response = await api.client.get("/schema/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


async def test_a_bearer_scheme_guards_the_api_and_not_the_probes(api: Running) -> None:
    document = await _document(api)

    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    paths = document["paths"]
    assert paths["/v1/verdicts"]["post"]["security"] == [{"bearer": []}]
    assert paths["/v1/actions"]["get"]["security"] == [{"bearer": []}]
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert "security" not in paths[probe]["get"], probe


async def test_errors_are_documented_with_their_real_shape_and_statuses(api: Running) -> None:
    document = await _document(api)
    paths = document["paths"]

    error = document["components"]["schemas"]["ErrorBody"]
    assert {"error", "message"} <= set(error["required"])
    assert "details" in error["properties"]
    for item in paths.values():
        for method, operation in item.items():
            assert "400" not in operation["responses"], (method, operation.get("operationId"))
    submit = paths["/v1/verdicts"]["post"]["responses"]
    assert {"202", "401", "403", "409", "413", "415", "422", "503"} <= set(submit)
    assert submit["422"]["content"]["application/json"]["schema"]["$ref"] == ERROR_REF
    assert "Retry-After" in submit["503"]["headers"]
    lift = paths["/v1/actions/{action_id}/lift"]["post"]["responses"]
    assert {"401", "403", "404", "409", "413", "415", "422", "503"} <= set(lift)
    assert set(paths["/healthz"]["get"]["responses"]) == {"200"}
    assert "ErrorBody" not in str(paths["/readyz"]["get"]["responses"]["503"])


async def test_request_bodies_are_documented_as_strictly_as_they_are_validated(
    api: Running,
) -> None:
    document = await _document(api)
    schemas = document["components"]["schemas"]

    assert schemas["LiftIn"]["additionalProperties"] is False
    single, _ = document["paths"]["/v1/verdicts"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]["oneOf"]
    subject = single["properties"]["subject"]
    assert len(subject["anyOf"]) == 4, "a subject names at least one of its four fields"
    assert subject["properties"]["ips"]["items"]["anyOf"] == [
        {"format": "ipv4"},
        {"format": "ipv6"},
    ]


async def test_the_docs_page_serves_its_assets_itself(api: Running) -> None:
    page = await api.client.get("/schema/swagger")

    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', page.text)
    assert assets, page.text[:500]
    assert not [a for a in assets if "://" in a or a.startswith("//")], assets
    for asset in assets:
        served = await api.client.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 100, asset
    bundle = next(a for a in assets if a.endswith("swagger-ui-bundle.js"))
    assert "SwaggerUIBundle" in (await api.client.get(bundle)).text


async def test_options_name_every_method_of_a_path(api: Running) -> None:
    response = await api.client.options("/v1/exemptions")

    assert response.status_code == 204
    assert response.headers["allow"] == "GET, OPTIONS, POST"


async def test_no_made_up_examples(api: Running) -> None:
    """Litestar fills a response's `examples` with random values unless told not to
    (negative medians, a `since` after its `until`): a document that shows those is not
    true. None of ours has examples; `generate_examples=False` on a `ResponseSpec`."""
    found: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("example", "examples"):
                    found.append(path)
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(await _document(api), "")
    assert found == []
