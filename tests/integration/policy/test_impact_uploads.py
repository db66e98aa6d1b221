"""An uploaded head that does not compile is the caller's mistake: a 422, not a 500."""

from __future__ import annotations

from tests.support.app import Running


async def test_an_uploaded_head_that_does_not_compile_is_422(api: Running) -> None:
    modules = {"tollgate/broken.rego": "package tollgate.broken\n\nimport rego.v1\n\nx if {"}

    response = await api.client.post(
        "/v1/policies/impact", json={"head_modules": modules, "head_data": []}
    )

    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith("head_modules: ")


async def test_an_uploaded_head_without_the_entrypoint_is_422(api: Running) -> None:
    modules = {"other.rego": "package other\n\nimport rego.v1\n\nx := 1\n"}

    response = await api.client.post(
        "/v1/policies/impact", json={"head_modules": modules, "head_data": []}
    )

    assert response.status_code == 422, response.text
    assert "entrypoint" in response.json()["message"]
