"""`GET /v1/actions`: filters and cursor pagination."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.app import Running
from tests.support.store import add, indicator
from tests.support.verdicts import new_subject, unique, verdict


async def list_all(api: Running, **query: Any) -> list[dict[str, Any]]:
    response = await api.client.get("/v1/actions", params={"limit": 500, **query})
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_cursor"] is None
    items: list[dict[str, Any]] = page["items"]
    return items


@pytest.fixture(scope="module")
async def seeded(api: Running) -> dict[str, Any]:
    """One provider of its own with a known mix of actions: per subject a rate limit,
    then a revoke and a review on the repeat; and a CIDR block from intel."""
    provider = unique("p")
    cidr = "198.18.7.0/24"
    await add(api.runtime.db, indicator(cidr))
    subjects = [new_subject() for _ in range(4)]
    first = [verdict(subject=s, provider=provider) for s in subjects]
    repeats = [verdict(subject=s, provider=provider) for s in subjects[:2]]
    ranged = verdict(subject={"ips": ["198.18.7.9"]}, provider=provider, score=0.6)
    await api.submit({"verdicts": first})
    await api.submit({"verdicts": [*repeats, ranged]})
    return {"provider": provider, "subjects": subjects, "cidr": cidr}


async def test_provider_filter_lists_exactly_its_actions(
    api: Running, seeded: dict[str, Any]
) -> None:
    items = await list_all(api, provider=seeded["provider"])

    assert sorted(a["type"] for a in items) == sorted(
        ["rate_limit"] * 4 + ["revoke_key"] * 2 + ["flag_review"] * 2 + ["block"]
    )
    assert {a["provider"] for a in items} == {seeded["provider"]}
    ids = [a["id"] for a in items]
    assert ids == sorted(ids, reverse=True), "newest first"
    assert await list_all(api, provider=unique("nobody")) == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"type": "rate_limit"}, 4),
        ({"type": "revoke_key"}, 2),
        ({"type": "block"}, 1),
        ({"state": "pending"}, 9),
        ({"state": "applied"}, 0),
        ({"target_kind": "api_key"}, 6),
        ({"target_kind": "account"}, 2),
        ({"target_kind": "cidr"}, 1),
        ({"type": "flag_review", "target_kind": "account"}, 2),
        ({"type": "rate_limit", "target_kind": "account"}, 0),
    ],
    ids=lambda value: (
        "&".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else str(value)
    ),
)
async def test_filters(
    api: Running, seeded: dict[str, Any], query: dict[str, str], expected: int
) -> None:
    items = await list_all(api, provider=seeded["provider"], **query)

    assert len(items) == expected
    for item in items:
        if "type" in query:
            assert item["type"] == query["type"]
        if "state" in query:
            assert item["state"] == query["state"]
        if "target_kind" in query:
            assert item["target"]["kind"] == query["target_kind"]


async def test_target_value_filter(api: Running, seeded: dict[str, Any]) -> None:
    key = seeded["subjects"][0]["api_key_id"]

    items = await list_all(api, target_value=key)

    assert sorted(a["type"] for a in items) == ["rate_limit", "revoke_key"]
    assert {a["target"]["value"] for a in items} == {key}
    [block] = await list_all(api, provider=seeded["provider"], target_value=seeded["cidr"])
    assert (block["type"], block["rule"]) == ("block", "intel.known_range")


@pytest.mark.parametrize("limit", [1, 2, 4])
async def test_cursor_pagination_walks_every_action_once(
    api: Running, seeded: dict[str, Any], limit: int
) -> None:
    expected = [a["id"] for a in await list_all(api, provider=seeded["provider"])]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"provider": seeded["provider"], "limit": limit}
        if cursor:
            params["cursor"] = cursor
        response = await api.client.get("/v1/actions", params=params)
        assert response.status_code == 200
        page = response.json()
        assert len(page["items"]) <= limit
        seen.extend(a["id"] for a in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert cursor == page["items"][-1]["id"]
        assert pages < 100, "pagination does not end"

    assert len(seen) == len(set(seen)), "an action came twice"
    assert seen == expected, "pages skipped or reordered actions"
    assert pages == -(-len(expected) // limit)


@pytest.mark.parametrize(
    "query",
    [
        pytest.param({"state": "bogus"}, id="state"),
        pytest.param({"type": "ban"}, id="type"),
        pytest.param({"target_kind": "planet"}, id="target_kind"),
        pytest.param({"limit": 0}, id="limit=0"),
        pytest.param({"limit": 501}, id="limit=501"),
    ],
)
async def test_bad_filter_is_422_naming_the_parameter(api: Running, query: dict[str, Any]) -> None:
    response = await api.client.get("/v1/actions", params=query)

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_input"
    assert [(d["field"], d["source"]) for d in body["details"]] == [(next(iter(query)), "query")]


async def test_one_action_by_id_and_404(api: Running) -> None:
    [result] = (await api.submit(verdict(subject=new_subject())))["results"]
    action = result["actions"][0]

    got = await api.client.get(f"/v1/actions/{action['id']}")
    missing = await api.client.get("/v1/actions/act_nope")

    assert got.status_code == 200 and got.json() == action
    assert missing.status_code == 404 and "act_nope" in missing.json()["message"]
