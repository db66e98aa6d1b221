"""The graduated response end to end: first offense, then a repeat, across and within requests."""

from __future__ import annotations

from typing import Any

from tests.support.app import Running
from tests.support.verdicts import action_types, legitimate, new_subject, verdict


async def decision(api: Running, decision_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/v1/decisions/{decision_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_first_verdict_rate_limits_the_key_and_a_later_repeat_revokes_it(
    api: Running,
) -> None:
    subject = new_subject()

    [first] = (await api.submit(verdict(subject=subject)))["results"]
    [repeat] = (await api.submit(verdict(subject=subject)))["results"]

    [limit] = first["actions"]
    assert (limit["type"], limit["rule"]) == ("rate_limit", "graduated.first_offense")
    assert limit["target"] == {"kind": "api_key", "value": subject["api_key_id"]}
    assert action_types(repeat) == ["flag_review", "revoke_key"]
    by_type = {a["type"]: a for a in repeat["actions"]}
    assert by_type["revoke_key"]["target"] == {"kind": "api_key", "value": subject["api_key_id"]}
    assert by_type["revoke_key"]["rule"] == "graduated.repeat_offense"
    assert by_type["revoke_key"]["ttl_seconds"] == 30 * 86400
    assert by_type["flag_review"]["target"] == {"kind": "account", "value": subject["account_id"]}
    assert by_type["flag_review"]["ttl_seconds"] is None
    assert by_type["flag_review"]["expires_at"] is None

    given = (await decision(api, repeat["decision_id"]))["input"]["history"]
    assert given["verdicts_30d"] == 1
    assert [a["id"] for a in given["active_actions"]] == [limit["id"]]


async def test_repeat_inside_one_batch_sees_the_first_ones_actions(api: Running) -> None:
    subject = new_subject()
    other = new_subject()
    batch = [verdict(subject=subject), verdict(subject=other), verdict(subject=subject)]

    first, unrelated, repeat = (await api.submit({"verdicts": batch}))["results"]

    assert action_types(first) == ["rate_limit"]
    assert action_types(unrelated) == ["rate_limit"]
    assert action_types(repeat) == ["flag_review", "revoke_key"]
    history = (await decision(api, repeat["decision_id"]))["input"]["history"]
    assert [a["id"] for a in history["active_actions"]] == [first["actions"][0]["id"]]
    assert history["verdicts_30d"] == 1
    unrelated_history = (await decision(api, unrelated["decision_id"]))["input"]["history"]
    assert unrelated_history == {**unrelated_history, "active_actions": [], "verdicts_30d": 0}


async def test_a_shared_ip_alone_does_not_make_a_repeat(api: Running) -> None:
    """Two customers behind one NAT address: each gets its own first offense."""
    ip = "192.0.2.150"
    one, two = new_subject(ips=[ip]), new_subject(ips=[ip])

    results = (await api.submit({"verdicts": [verdict(subject=one), verdict(subject=two)]}))[
        "results"
    ]

    assert [action_types(r) for r in results] == [["rate_limit"], ["rate_limit"]]


async def test_legitimate_heavy_user_is_never_touched(api: Running) -> None:
    subject = new_subject()

    results = [(await api.submit(legitimate(subject=subject)))["results"][0] for _ in range(3)] + (
        await api.submit({"verdicts": [legitimate(subject=subject) for _ in range(3)]})
    )["results"]

    assert all(r["decision_status"] == "ok" and r["actions"] == [] for r in results)


async def test_verdicts_older_than_30_days_are_not_counted(api: Running) -> None:
    subject = new_subject()
    old = verdict(subject=subject, observed_at="2026-09-01T12:00:00Z")
    await api.submit(old)
    # The old verdict's rate limit is still active (its TTL runs from the decision), so
    # this is still a repeat; the 30-day window shows in the count of earlier verdicts.
    [now] = (await api.submit(verdict(subject=subject)))["results"]

    history = (await decision(api, now["decision_id"]))["input"]["history"]
    assert history["verdicts_30d"] == 0
    assert len(history["active_actions"]) == 1
