"""`POST /v1/verdicts` and `GET /v1/verdicts/{id}`: acceptance, validation, idempotency."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from sqlmodel import col

from controlplane.store.models import ActionRow, AuditEventRow, DecisionRow, VerdictRow
from tests.support.app import Running
from tests.support.store import count
from tests.support.verdicts import legitimate, new_subject, verdict

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def fields(body: dict[str, Any]) -> set[str]:
    return {d["field"] for d in body.get("details", [])}


async def assert_not_stored(api: Running, *verdict_ids: str) -> None:
    for verdict_id in verdict_ids:
        response = await api.client.get(f"/v1/verdicts/{verdict_id}")
        assert response.status_code == 404, f"{verdict_id} was stored"
    assert await count(api.runtime.db, VerdictRow, col(VerdictRow.id).in_(verdict_ids)) == 0


async def test_single_verdict_is_stored_decided_and_answered(api: Running) -> None:
    document = verdict()
    response = await api.client.post("/v1/verdicts", json=document)

    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (1, 0)
    [result] = body["results"]
    assert result["verdict_id"] == document["id"]
    assert result["status"] == "decided"
    assert result["duplicate"] is False
    assert result["decision_id"].startswith("dec_")
    assert result["decision_status"] == "ok"
    assert result["error"] is None
    assert result["policy_revision"] == api.runtime.engines.current.revision
    assert HEX32.match(result["trace_id"])
    [action] = result["actions"]
    assert action["type"] == "rate_limit"
    assert action["target"] == {"kind": "api_key", "value": document["subject"]["api_key_id"]}
    assert action["params"] == {"requests_per_minute": 60, "tokens_per_minute": 20000}
    assert action["ttl_seconds"] == 24 * 3600
    assert action["rule"] == "graduated.first_offense"
    assert action["state"] == "pending"
    assert action["shadow"] is False
    assert action["decision_id"] == result["decision_id"]
    assert action["verdict_id"] == document["id"]
    assert action["provider"] == "lab-a"
    assert action["policy_revision"] == result["policy_revision"]


async def test_batch_answers_one_result_per_verdict_in_order(api: Running) -> None:
    ip_only = verdict(subject={"ips": ["192.0.2.99"]})
    batch = [verdict(), legitimate(), verdict(provider="lab-b"), ip_only]

    body = await api.submit({"verdicts": batch})

    assert (body["accepted"], body["duplicates"]) == (4, 0)
    assert [r["verdict_id"] for r in body["results"]] == [v["id"] for v in batch]
    assert all(r["status"] == "decided" and r["decision_status"] == "ok" for r in body["results"])
    assert len({r["decision_id"] for r in body["results"]}) == 4
    first, legit, lab_b, ips = body["results"]
    assert [a["type"] for a in first["actions"]] == ["rate_limit"]
    assert legit["actions"] == []
    # lab-b overrides the first-offense limits in policies/tollgate/settings/data.json.
    assert [a["params"]["requests_per_minute"] for a in lab_b["actions"]] == [30]
    # No account or key to limit: nothing the graduated response can target.
    assert ips["actions"] == []


async def test_get_verdict_shows_stored_verdict_decision_and_actions(api: Running) -> None:
    document = verdict(subject=new_subject(ips=["2001:DB8::0:1"]))
    [result] = (await api.submit(document))["results"]

    response = await api.client.get(f"/v1/verdicts/{document['id']}")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == document["id"]
    assert body["status"] == "decided"
    assert body["decision_id"] == result["decision_id"]
    assert body["decision_status"] == "ok"
    assert body["policy_revision"] == result["policy_revision"]
    assert body["trace_id"] == result["trace_id"]
    assert [a["id"] for a in body["actions"]] == [a["id"] for a in result["actions"]]
    # Stored normalised: the IPv6 address in its canonical form.
    assert body["verdict"]["subject"]["ips"] == ["2001:db8::1"]
    assert body["verdict"]["score"] == document["score"]


async def test_get_unknown_verdict_is_404(api: Running) -> None:
    response = await api.client.get("/v1/verdicts/no-such-verdict")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def _without(document: dict[str, Any], *path: str) -> dict[str, Any]:
    document = copy.deepcopy(document)
    target = document
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return document


INVALID = {
    "missing subject": (lambda v: _without(v, "subject"), "subject", "missing"),
    "empty subject": (lambda v: {**v, "subject": {"ips": []}}, "subject", "value_error"),
    "bad IP": (
        lambda v: {**v, "subject": {**v["subject"], "ips": ["203.0.113.300"]}},
        "subject.ips",
        "value_error",
    ),
    "CIDR as an IP": (
        lambda v: {**v, "subject": {**v["subject"], "ips": ["203.0.113.0/24"]}},
        "subject.ips",
        "value_error",
    ),
    "naive datetime": (
        lambda v: {**v, "observed_at": "2026-11-26T12:00:00"},
        "observed_at",
        "timezone_aware",
    ),
    "extra unknown field": (lambda v: {**v, "severity": "high"}, "severity", "extra_forbidden"),
    "extra field in subject": (
        lambda v: {**v, "subject": {**v["subject"], "email": "x@example.com"}},
        "subject.email",
        "extra_forbidden",
    ),
    "score above 1": (lambda v: {**v, "score": 1.5}, "score", "less_than_equal"),
    "negative confidence": (
        lambda v: {**v, "confidence": -0.1},
        "confidence",
        "greater_than_equal",
    ),
    "provider with capitals": (
        lambda v: {**v, "provider": "Lab-A"},
        "provider",
        "string_pattern_mismatch",
    ),
    "id with a space": (lambda v: {**v, "id": "v 1"}, "id", "string_pattern_mismatch"),
    "signal not a number": (
        lambda v: {**v, "signals": {"requests_24h": "many"}},
        "signals.requests_24h",
        "float_type",
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
async def test_invalid_verdict_is_422_naming_the_field_and_stores_nothing(
    api: Running, case: str
) -> None:
    mutate, field, expected = INVALID[case]
    document = mutate(verdict())

    response = await api.client.post("/v1/verdicts", json=document)

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_input"
    assert "nothing was stored" in body["message"]
    [detail] = [d for d in body["details"] if d["field"] == field]
    assert detail["expected"] == expected
    assert detail["message"]
    await assert_not_stored(api, document["id"])


async def test_batch_errors_name_each_field_with_its_index(api: Running) -> None:
    batch = [verdict(), verdict(score=7), verdict(), _without(verdict(), "detector", "version")]

    response = await api.client.post("/v1/verdicts", json={"verdicts": batch})

    assert response.status_code == 422
    assert fields(response.json()) == {"verdicts[1].score", "verdicts[3].detector.version"}
    await assert_not_stored(api, *(v["id"] for v in batch))


async def test_batch_with_one_bad_verdict_stores_none(api: Running) -> None:
    good, bad = verdict(), verdict(subject={"ips": ["not-an-ip"]})

    response = await api.client.post("/v1/verdicts", json={"verdicts": [good, bad]})

    assert response.status_code == 422
    assert fields(response.json()) == {"verdicts[1].subject.ips"}
    await assert_not_stored(api, good["id"], bad["id"])


async def test_batch_over_1000_is_422(api: Running) -> None:
    batch = [legitimate() for _ in range(1001)]

    response = await api.client.post("/v1/verdicts", json={"verdicts": batch})

    assert response.status_code == 422
    [detail] = response.json()["details"]
    assert (detail["field"], detail["expected"]) == ("verdicts", "too_long")
    await assert_not_stored(api, batch[0]["id"], batch[-1]["id"])


async def test_empty_batch_is_422(api: Running) -> None:
    response = await api.client.post("/v1/verdicts", json={"verdicts": []})
    assert response.status_code == 422
    assert fields(response.json()) == {"verdicts"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"id": "v-1",', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"", "not valid JSON"),
    ],
    ids=["truncated", "not utf-8", "empty"],
)
async def test_invalid_json_is_422(api: Running, raw: bytes, message: str) -> None:
    response = await api.client.post(
        "/v1/verdicts", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_input"
    assert message in body["message"]


async def test_json_that_is_not_an_object_is_422(api: Running) -> None:
    response = await api.client.post("/v1/verdicts", json=[verdict()])
    assert response.status_code == 422
    assert fields(response.json()) == {"body"}


async def test_repeat_returns_the_first_result_and_decides_nothing_new(api: Running) -> None:
    document = verdict()
    [first] = (await api.submit(document))["results"]
    db = api.runtime.db
    events_before = await count(db, AuditEventRow)
    actions_before = await count(db, ActionRow)

    body = await api.submit(json.loads(json.dumps(document)))

    assert (body["accepted"], body["duplicates"]) == (0, 1)
    [again] = body["results"]
    assert again["duplicate"] is True
    assert again["decision_id"] == first["decision_id"]
    assert [a["id"] for a in again["actions"]] == [a["id"] for a in first["actions"]]
    assert {k: v for k, v in again.items() if k != "duplicate"} == {
        k: v for k, v in first.items() if k != "duplicate"
    }
    assert await count(db, DecisionRow, col(DecisionRow.verdict_id) == document["id"]) == 1
    assert await count(db, AuditEventRow) == events_before
    assert await count(db, ActionRow) == actions_before


async def test_repeat_in_a_batch_with_new_verdicts(api: Running) -> None:
    known, new = verdict(), verdict()
    [first] = (await api.submit(known))["results"]

    body = await api.submit({"verdicts": [known, new]})

    assert (body["accepted"], body["duplicates"]) == (1, 1)
    again, fresh = body["results"]
    assert (again["duplicate"], again["decision_id"]) == (True, first["decision_id"])
    assert fresh["duplicate"] is False
    assert fresh["decision_id"] not in (None, first["decision_id"])


async def test_same_id_with_other_content_is_409_and_stores_nothing(api: Running) -> None:
    document = verdict()
    await api.submit(document)
    db = api.runtime.db
    events_before = await count(db, AuditEventRow)
    newcomer = verdict()

    response = await api.client.post(
        "/v1/verdicts", json={"verdicts": [newcomer, {**document, "score": 0.99}]}
    )

    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "conflict"
    assert fields(body) == {"verdicts[1].id"}
    stored = (await api.client.get(f"/v1/verdicts/{document['id']}")).json()
    assert stored["verdict"]["score"] == document["score"]
    await assert_not_stored(api, newcomer["id"])
    assert await count(db, AuditEventRow) == events_before
    assert await count(db, DecisionRow, col(DecisionRow.verdict_id) == document["id"]) == 1


async def test_409_names_the_index_in_the_request_after_exact_repeats(api: Running) -> None:
    stored, newcomer = verdict(), verdict()
    await api.submit(stored)

    response = await api.client.post(
        "/v1/verdicts", json={"verdicts": [newcomer, newcomer, {**stored, "score": 0.99}]}
    )

    assert response.status_code == 409
    assert fields(response.json()) == {"verdicts[2].id"}
    await assert_not_stored(api, newcomer["id"])


async def test_same_id_twice_in_a_batch_with_other_content_is_409(api: Running) -> None:
    document = verdict()
    batch = [document, verdict(), {**document, "confidence": 0.95}]

    response = await api.client.post("/v1/verdicts", json={"verdicts": batch})

    assert response.status_code == 409
    body = response.json()
    assert fields(body) == {"verdicts[2].id"}
    assert "verdicts[0]" in body["details"][0]["message"]
    await assert_not_stored(api, document["id"], batch[1]["id"])


async def test_same_verdict_twice_in_a_batch_is_decided_once(api: Running) -> None:
    document = verdict()

    body = await api.submit({"verdicts": [document, document]})

    assert (body["accepted"], body["duplicates"]) == (1, 0)
    first, second = body["results"]
    assert first["decision_id"] == second["decision_id"] is not None
    db = api.runtime.db
    assert await count(db, DecisionRow, col(DecisionRow.verdict_id) == document["id"]) == 1
