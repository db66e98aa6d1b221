"""Bodies built to slip past the engine or break the database: non-finite numbers, lone
surrogates, NUL characters, deep nesting, other content types. Each is refused with a
4xx naming the field, and nothing of it is stored, on both databases."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.domain.jsonsafe import MAX_DEPTH
from tests.support.app import Running
from tests.support.verdicts import unique, verdict

SEVERE = 0.97


def _raw(document: Any) -> bytes:
    # json.dumps writes NaN and Infinity as bare words, and keeps lone surrogates
    # as \ud800 escapes: exactly what a hostile detector would send.
    return json.dumps(document).encode()


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def _hostile(kind: str) -> tuple[dict[str, Any], str]:
    """A severe verdict carrying one hostile value, and the field it must be named by."""
    document = verdict(score=SEVERE, evidence=[{"note": "ok"}, {"prompt": "a"}, "b"])
    if kind == "nan":
        document["signals"] = {"x": float("nan")}
        return document, "signals.x"
    if kind == "infinity":
        document["signals"] = {"x": float("-inf")}
        return document, "signals.x"
    if kind == "surrogate":
        document["evidence"][1]["prompt"] = "\ud800"
        return document, "evidence[1].prompt"
    if kind == "nul":
        document["evidence"][2] = "quote\x00d"
        return document, "evidence[2]"
    if kind == "nul-key":
        document["evidence"][0] = {"k\x00": 1}
        return document, "evidence[0]"
    if kind == "label":
        document["labels"] = ["fine", "dis\x00tillation"]
        return document, "labels[1]"
    assert kind == "deep-evidence"
    document["evidence"] = [_nested(900)]
    # body, verdicts, the verdict and evidence take four of the levels
    return document, "evidence[0]" + "[0]" * (MAX_DEPTH - 4)


KINDS = ["nan", "infinity", "surrogate", "nul", "nul-key", "label", "deep-evidence"]


@pytest.mark.parametrize("kind", KINDS)
async def test_hostile_values_are_422_naming_the_field_and_nothing_is_stored(
    api: Running, kind: str
) -> None:
    document, field = _hostile(kind)
    other = verdict(score=SEVERE)
    response = await api.client.post(
        "/v1/verdicts",
        content=_raw({"verdicts": [other, document]}),
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_input"
    assert f"verdicts[1].{field}" in {d["field"] for d in body["details"]}, body
    for verdict_id in (other["id"], document["id"]):
        assert (await api.client.get(f"/v1/verdicts/{verdict_id}")).status_code == 404


async def test_a_number_too_large_for_a_double_is_422(api: Running) -> None:
    raw = _raw(verdict(score=SEVERE, signals={"x": 1.5})).replace(b"1.5", b"1e999")

    response = await api.client.post(
        "/v1/verdicts", content=raw, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert [d["field"] for d in response.json()["details"]] == ["signals.x"]


async def test_json_nested_10000_deep_is_422_not_a_server_error(api: Running) -> None:
    raw = b"[" * 10_000 + b"]" * 10_000

    for path in ("/v1/verdicts", "/v1/intel/indicators", "/v1/exemptions"):
        response = await api.client.post(
            path, content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, (path, response.text)
        assert response.json()["details"][0]["field"] == "body"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/v1/intel/indicators",
            {"indicators": [{"kind": "cidr", "value": "203.0.113.0/24", "source": "lab\x00b"}]},
            "indicators[0].source",
        ),
        (
            "/v1/exemptions",
            {"kind": "account", "value": "acct_1", "owner": "me", "reason": "\ud800"},
            "reason",
        ),
        ("/v1/actions/act_x/lift", {"reason": "x\x00"}, "reason"),
    ],
    ids=["intel", "exemptions", "lift"],
)
async def test_every_json_endpoint_refuses_them(
    api: Running, path: str, body: dict[str, Any], field: str
) -> None:
    response = await api.client.post(
        path, content=_raw(body), headers={"content-type": "application/json"}
    )

    assert response.status_code == 422, response.text
    assert field in {d["field"] for d in response.json()["details"]}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
@pytest.mark.parametrize("path", ["/v1/verdicts", "/v1/intel/indicators"])
async def test_a_body_not_labelled_json_is_415(api: Running, path: str, content_type: str) -> None:
    document = verdict(id=unique("v415"))
    headers = {"content-type": content_type} if content_type else {}

    response = await api.client.post(path, content=_raw(document), headers=headers)

    assert response.status_code == 415, response.text
    assert response.json()["error"] == "unsupported_media_type"
    assert (await api.client.get(f"/v1/verdicts/{document['id']}")).status_code == 404


async def test_json_with_a_charset_or_a_json_suffix_is_accepted(api: Running) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.tollgate+json"):
        response = await api.client.post(
            "/v1/verdicts", content=_raw(verdict()), headers={"content-type": content_type}
        )
        assert response.status_code == 202, (content_type, response.text)
