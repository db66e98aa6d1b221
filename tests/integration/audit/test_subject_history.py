"""`GET /v1/subjects/{kind}/{value}/history`: one subject's whole story, in time order."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.app import Running
from tests.support.verdicts import legitimate, new_subject, unique, verdict


async def history(api: Running, path: str, **query: Any) -> dict[str, Any]:
    response = await api.client.get(f"/v1/subjects/{path}/history", params=query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="module")
async def story(api: Running) -> dict[str, Any]:
    """A key reported three times (the second is below the bar); its first rate limit is
    then lifted by hand."""
    provider = unique("p")
    subject = new_subject(ips=["192.0.2.77"])
    results = []
    for document in (
        verdict(subject=subject, provider=provider),
        legitimate(subject=subject, provider=provider),
        verdict(subject=subject, provider=provider),
    ):
        results.append((await api.submit(document))["results"][0])
    [limit] = results[0]["actions"]
    lifted = await api.client.post(
        f"/v1/actions/{limit['id']}/lift", json={"reason": "appeal upheld: a batch job"}
    )
    assert lifted.status_code == 200, lifted.text
    return {"provider": provider, "subject": subject, "results": results, "lifted": limit}


async def test_a_keys_history_tells_the_whole_story_in_order(
    api: Running, story: dict[str, Any]
) -> None:
    key = story["subject"]["api_key_id"]
    results = story["results"]

    body = await history(api, f"api_key/{key}")

    assert body["subject"] == {"kind": "api_key", "value": key}
    assert [v["id"] for v in body["verdicts"]] == [r["verdict_id"] for r in results]
    assert [d["id"] for d in body["decisions"]] == [r["decision_id"] for r in results]
    assert body["verdicts"][0]["url"] == f"/v1/verdicts/{results[0]['verdict_id']}"
    planned = [a["id"] for r in results for a in r["actions"]]
    assert sorted(a["id"] for a in body["actions"]) == sorted(planned)
    states = {a["id"]: a["state"] for a in body["actions"]}
    assert states[story["lifted"]["id"]] == "lifted", "actions carry their state now"
    by_id = {a["id"]: a for a in body["actions"]}
    for result in results:
        for action in result["actions"]:
            aimed = action["target"] == {"kind": "api_key", "value": key}
            assert by_id[action["id"]]["targets_subject"] is aimed
    types = [e["type"] for e in body["events"]]
    assert types.count("verdict.received") == 3
    assert types.count("decision.recorded") == 3
    assert types[-1] == "action.lifted", "the lift is the latest step"
    seqs = [e["seq"] for e in body["events"]]
    assert seqs == sorted(seqs), "oldest first"
    assert body["truncated"] is False


async def test_an_ip_and_the_account_tell_the_same_story(
    api: Running, story: dict[str, Any]
) -> None:
    key = await history(api, f"api_key/{story['subject']['api_key_id']}")
    ip = await history(api, "ip/192.0.2.77", provider=story["provider"])
    account = await history(api, f"account/{story['subject']['account_id']}")

    assert [v["id"] for v in ip["verdicts"]] == [v["id"] for v in key["verdicts"]]
    assert [e["seq"] for e in account["events"]] == [e["seq"] for e in key["events"]]


async def test_limit_keeps_the_newest_and_says_so(api: Running, story: dict[str, Any]) -> None:
    full = await history(api, f"api_key/{story['subject']['api_key_id']}")
    cut = await history(api, f"api_key/{story['subject']['api_key_id']}", limit=2)

    assert cut["truncated"] is True
    assert [e["seq"] for e in cut["events"]] == [e["seq"] for e in full["events"][-2:]]
    assert [v["id"] for v in cut["verdicts"]] == [v["id"] for v in full["verdicts"][-2:]]


async def test_a_cidr_keeps_its_slash_in_the_path(api: Running) -> None:
    provider = unique("p")
    shared = await api.client.post(
        "/v1/intel/indicators",
        json={"indicators": [{"value": "198.18.90.0/24", "source": "lab-b", "confidence": 0.9}]},
    )
    assert shared.status_code == 201
    [result] = (
        await api.submit(verdict(subject={"ips": ["198.18.90.5"]}, provider=provider, score=0.6))
    )["results"]

    body = await history(api, "cidr/198.18.90.0/24")

    assert body["subject"] == {"kind": "cidr", "value": "198.18.90.0/24"}
    assert [v["id"] for v in body["verdicts"]] == [result["verdict_id"]]
    assert [a["targets_subject"] for a in body["actions"]] == [True]
    assert {e["type"] for e in body["events"]} == {"indicator.added", "action.planned"}


async def test_unknown_subjects_have_an_empty_story(api: Running) -> None:
    body = await history(api, f"org/{unique('org')}")
    assert (body["verdicts"], body["actions"], body["events"]) == ([], [], [])


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/v1/subjects/galaxy/x/history", 422, "kind"),
        ("/v1/subjects/ip/300.1.1.1/history", 422, "value"),
        ("/v1/subjects/api_key/key_1", 404, "/history"),
    ],
)
async def test_bad_paths_say_what_to_do(api: Running, path: str, status: int, words: str) -> None:
    response = await api.client.get(path)
    assert response.status_code == status, response.text
    assert words in response.json()["message"]
