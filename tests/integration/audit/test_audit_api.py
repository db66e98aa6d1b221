"""`GET /v1/audit`: every filter, cursor pagination, links, roles and bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controlplane.auth.roles import Role
from tests.support.app import Running
from tests.support.verdicts import new_subject, unique, verdict

RANGE = "198.18.44.0/24"


async def audit(api: Running, **query: Any) -> list[dict[str, Any]]:
    """Every page of `GET /v1/audit` for `query`, in the order served."""
    items: list[dict[str, Any]] = []
    params = {"limit": 500, **query}
    while True:
        response = await api.client.get("/v1/audit", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        params["cursor"] = page["next_cursor"]


@pytest.fixture(scope="module")
async def seeded(api: Running) -> dict[str, Any]:
    """A provider of its own: one subject reported twice by a named detector (a rate
    limit, then a revocation and a review), and an IP in a shared-intel range (a block)."""
    provider = unique("p")
    detector = unique("detector")
    headers = await api.token(Role.DETECTOR, name=detector)
    shared = await api.client.post(
        "/v1/intel/indicators",
        json={"indicators": [{"value": RANGE, "source": "lab-b", "confidence": 0.9}]},
    )
    assert shared.status_code == 201, shared.text
    subject = new_subject(ips=["198.51.100.23"])
    started = datetime.now(UTC)
    first = (await api.submit(verdict(subject=subject, provider=provider), headers=headers))[
        "results"
    ][0]
    repeat = (await api.submit(verdict(subject=subject, provider=provider), headers=headers))[
        "results"
    ][0]
    ranged = (
        await api.submit(
            verdict(subject={"ips": ["198.18.44.9"]}, provider=provider, score=0.6),
            headers=headers,
        )
    )["results"][0]
    return {
        "provider": provider,
        "detector": detector,
        "subject": subject,
        "first": first,
        "repeat": repeat,
        "ranged": ranged,
        "started": started,
    }


def kinds(items: list[dict[str, Any]]) -> list[str]:
    return sorted(e["type"] for e in items)


async def test_events_about_a_key_are_its_verdicts_decisions_and_actions(
    api: Running, seeded: dict[str, Any]
) -> None:
    items = await audit(api, subject_kind="api_key", subject_value=seeded["subject"]["api_key_id"])

    planned = len(seeded["first"]["actions"]) + len(seeded["repeat"]["actions"])
    assert planned == 3
    assert kinds(items) == sorted(
        ["verdict.received"] * 2 + ["decision.recorded"] * 2 + ["action.planned"] * planned
    )
    assert {e["verdict_id"] for e in items} == {
        seeded["first"]["verdict_id"],
        seeded["repeat"]["verdict_id"],
    }
    seqs = [e["seq"] for e in items]
    assert seqs == sorted(seqs, reverse=True), "newest first"


@pytest.mark.parametrize("kind", ["account_id", "org_id"])
async def test_account_and_org_match_the_same_story(
    api: Running, seeded: dict[str, Any], kind: str
) -> None:
    by_key = await audit(api, subject_kind="api_key", subject_value=seeded["subject"]["api_key_id"])
    items = await audit(
        api, subject_kind=kind.removesuffix("_id"), subject_value=seeded["subject"][kind]
    )
    assert [e["seq"] for e in items] == [e["seq"] for e in by_key]


async def test_an_ip_matches_in_any_spelling(api: Running, seeded: dict[str, Any]) -> None:
    plain = await audit(api, subject_kind="ip", subject_value="198.51.100.23")
    mapped = await audit(api, subject_kind="ip", subject_value="::ffff:198.51.100.23")

    assert plain and [e["seq"] for e in plain] == [e["seq"] for e in mapped]
    assert {e["verdict_id"] for e in plain} == {
        seeded["first"]["verdict_id"],
        seeded["repeat"]["verdict_id"],
    }


async def test_a_cidr_matches_the_block_aimed_at_it_and_the_intel_behind_it(
    api: Running, seeded: dict[str, Any]
) -> None:
    [block] = seeded["ranged"]["actions"]
    assert block["target"] == {"kind": "cidr", "value": RANGE}

    items = await audit(api, subject_kind="cidr", subject_value="198.18.44.77/24")

    assert kinds(items) == ["action.planned", "indicator.added"]
    assert next(e for e in items if e["type"] == "action.planned")["action_id"] == block["id"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"type": "action.planned"}, ["action.planned"] * 4),
        ({"action_type": "block"}, ["action.planned"]),
        ({"action_type": "revoke_key"}, ["action.planned"]),
        ({"rule": "graduated.first_offense"}, ["action.planned"]),
        ({"rule": "intel.known_range", "action_type": "rate_limit"}, []),
        (
            {"type": "decision.recorded"},
            ["decision.recorded"] * 3,
        ),
    ],
)
async def test_filters_narrow_a_providers_events(
    api: Running, seeded: dict[str, Any], query: dict[str, str], expected: list[str]
) -> None:
    items = await audit(api, provider=seeded["provider"], **query)
    assert kinds(items) == expected
    assert {e["provider"] for e in items} <= {seeded["provider"]}


async def test_actor_is_the_token_that_acted(api: Running, seeded: dict[str, Any]) -> None:
    items = await audit(api, actor=seeded["detector"])

    assert kinds(items) == ["verdict.received"] * 3
    assert await audit(api, actor=unique("nobody")) == []


async def test_policy_revision_finds_its_decisions_actions_and_activation(
    api: Running, seeded: dict[str, Any]
) -> None:
    revision = seeded["first"]["policy_revision"]

    ours = await audit(api, policy_revision=revision, provider=seeded["provider"])
    everywhere = await audit(api, policy_revision=revision, type="policy.activated")

    assert kinds(ours) == sorted(["decision.recorded"] * 3 + ["action.planned"] * 4)
    assert [e["payload"]["revision"] for e in everywhere] == [revision]
    assert await audit(api, policy_revision="no-such-revision") == []


async def test_time_range(api: Running, seeded: dict[str, Any]) -> None:
    provider = seeded["provider"]
    later = datetime.now(UTC) + timedelta(hours=1)
    everything = await audit(api, provider=provider)

    assert await audit(api, provider=provider, since=later.isoformat()) == []
    assert await audit(api, provider=provider, until=seeded["started"].isoformat()) == []
    assert (
        await audit(
            api, provider=provider, since=seeded["started"].isoformat(), until=later.isoformat()
        )
        == everything
    )
    middle = everything[len(everything) // 2]["at"]
    newer = await audit(api, provider=provider, since=middle)
    assert 0 < len(newer) < len(everything)
    assert all(e["at"] >= middle for e in newer)


async def test_pages_cover_the_whole_answer_once_in_either_order(
    api: Running, seeded: dict[str, Any]
) -> None:
    provider = seeded["provider"]
    whole = await audit(api, provider=provider)
    paged = await audit(api, provider=provider, limit=2)
    oldest_first = await audit(api, provider=provider, limit=3, order="asc")

    assert len(whole) == 3 * 2 + 4
    assert [e["seq"] for e in paged] == [e["seq"] for e in whole]
    assert [e["seq"] for e in oldest_first] == [e["seq"] for e in reversed(whole)]


async def test_each_event_links_its_verdict_decision_action_and_trace(
    api: Running, seeded: dict[str, Any]
) -> None:
    [event] = await audit(api, provider=seeded["provider"], action_type="block")
    links = event["links"]

    assert links["verdict"] == {
        "id": seeded["ranged"]["verdict_id"],
        "url": f"/v1/verdicts/{seeded['ranged']['verdict_id']}",
    }
    assert links["action"]["id"] == event["action_id"]
    assert links["trace"]["id"] == event["trace_id"] == seeded["ranged"]["trace_id"]
    for name in ("verdict", "decision"):
        response = await api.client.get(links[name]["url"])
        assert response.status_code == 200, (name, response.text)
    assert len(event["hash"]) == len(event["prev_hash"]) == 64


async def test_auditors_may_read_detectors_may_not(api: Running) -> None:
    auditor = await api.token(Role.AUDITOR)
    detector = await api.token(Role.DETECTOR)

    assert (await api.client.get("/v1/audit", headers=auditor)).status_code == 200
    assert (await api.client.get("/v1/audit", headers=detector)).status_code == 403
    assert (await api.client.get("/v1/audit/verify", headers=detector)).status_code == 403
    anonymous = await api.client.get("/v1/audit", headers={"Authorization": ""})
    assert anonymous.status_code == 401


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"subject_kind": "api_key"}, "subject_value"),
        ({"subject_value": "key_1"}, "subject_kind"),
        ({"subject_kind": "ip", "subject_value": "not-an-ip"}, "subject_value"),
        ({"subject_kind": "cidr", "subject_value": "10.0.0.0/99"}, "subject_value"),
        ({"subject_kind": "galaxy", "subject_value": "x"}, "subject_kind"),
        ({"since": "2026-11-26T12:00:00"}, "since"),
        ({"cursor": "page-two"}, "cursor"),
        ({"limit": "0"}, "limit"),
    ],
)
async def test_bad_parameters_are_named(api: Running, query: dict[str, str], field: str) -> None:
    response = await api.client.get("/v1/audit", params=query)

    assert response.status_code == 422, response.text
    body = response.json()
    assert field in [d["field"] for d in body.get("details", [])] or field in body["message"]
