"""Targets are canonical before anything stores or sends them, and no one enters wider
than the provider's prefix floor: at ingest a 422 names the field, in policy output the
decision is an error naming the rule (and the fallback flags the subject)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlmodel import col

from controlplane.store.models import ActionRow, ExemptionRow, IndicatorRow, VerdictRow
from tests.support.app import Running, make_settings, serve
from tests.support.store import add, count, fetch, indicator
from tests.support.verdicts import new_subject, unique, verdict

ZONE_ID = "fe80::%x;disable frontend model_api;/64"


def intel(value: str) -> dict[str, Any]:
    return {"kind": "cidr", "value": value, "source": unique("lab"), "confidence": 0.9}


def exempting(kind: str, value: str, provider: str = "lab-a") -> dict[str, Any]:
    return {
        "subject": {"kind": kind, "value": value},
        "provider": provider,
        "owner": "trust-and-safety@test",
        "reason": "contracted bulk processing",
    }


@pytest.mark.parametrize("value", ["0.0.0.0/0", "::/0", "192.0.2.77/0", "10.0.0.0/8"])
async def test_intel_wider_than_the_floor_is_refused_naming_the_field(
    api: Running, value: str
) -> None:
    good = intel("198.51.100.0/24")
    response = await api.client.post(
        "/v1/intel/indicators", json={"indicators": [good, intel(value)]}
    )

    assert response.status_code == 422, response.text
    body = response.json()
    assert [d["field"] for d in body["details"]] == ["indicators[1].value"]
    assert "covers more than a block may" in body["message"]
    # Nothing of the batch was stored.
    assert (
        await count(api.runtime.db, IndicatorRow, col(IndicatorRow.source) == good["source"]) == 0
    )


@pytest.mark.parametrize(
    "value",
    [ZONE_ID, "fe80::1%eth0/64", "192.0.2.0/24\n", " 192.0.2.0/24", "\u0661\u0669\u0662.0.2.0/24"],
)
async def test_intel_that_is_not_a_plain_cidr_is_refused(api: Running, value: str) -> None:
    response = await api.client.post("/v1/intel/indicators", json={"indicators": [intel(value)]})

    assert response.status_code == 422, response.text
    assert "is not a CIDR" in response.text


async def test_intel_is_stored_with_host_bits_cleared(api: Running) -> None:
    response = await api.client.post(
        "/v1/intel/indicators", json={"indicators": [intel("192.0.2.77/24")]}
    )

    assert response.status_code == 201, response.text
    assert response.json()[0]["value"] == "192.0.2.0/24"


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("cidr", "0.0.0.0/0", "covers more than a block may"),
        ("cidr", "::/0", "covers more than a block may"),
        ("cidr", ZONE_ID, "is not a CIDR"),
        ("ip", "fe80::1%eth0", "is not an IPv4 or IPv6 address"),
        ("ip", "192.0.2.7\n", "is not an IPv4 or IPv6 address"),
        ("account", "acct 9", "is not an id"),
        ("api_key", "key_3;disable frontend model_api", "is not an id"),
        ("org", "org_7\nadd acl x y", "is not an id"),
    ],
)
async def test_exemption_targets_are_canonical_and_not_too_wide(
    api: Running, kind: str, value: str, message: str
) -> None:
    owner_tag = unique("x")
    body = exempting(kind, value) | {"reason": owner_tag}

    response = await api.client.post("/v1/exemptions", json=body)

    assert response.status_code == 422, response.text
    assert message in response.text
    assert "subject" in response.text  # the field at fault is named
    assert await count(api.runtime.db, ExemptionRow, col(ExemptionRow.reason) == owner_tag) == 0


async def test_exemption_is_stored_as_verdicts_spell_it(api: Running) -> None:
    response = await api.client.post("/v1/exemptions", json=exempting("cidr", "198.18.200.77/24"))
    mapped = await api.client.post("/v1/exemptions", json=exempting("ip", "::ffff:198.18.201.7"))

    assert response.status_code == 201, response.text
    assert response.json()["subject"]["value"] == "198.18.200.0/24"
    assert mapped.json()["subject"]["value"] == "198.18.201.7"


async def test_a_verdict_ip_with_a_zone_id_is_refused_before_anything_is_stored(
    api: Running,
) -> None:
    document = verdict(subject=new_subject(ips=["192.0.2.10", "fe80::1%x;disable frontend api"]))

    response = await api.client.post("/v1/verdicts", json=document)

    assert response.status_code == 422, response.text
    assert [d["field"] for d in response.json()["details"]] == ["subject.ips"]
    assert await count(api.runtime.db, VerdictRow, col(VerdictRow.id) == document["id"]) == 0


@pytest.fixture
async def floors_api(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    """lab-wide may block a /12; every other provider keeps the default floor (/16)."""
    settings = make_settings(
        database_url,
        tmp_path_factory.mktemp("data"),
        providers={"lab-wide": {"min_prefix": {"ipv4": 12}}},
    )
    async with serve(settings) as running:
        yield running


async def test_policy_output_wider_than_the_providers_floor_is_a_decision_error(
    floors_api: Running,
) -> None:
    api = floors_api
    # Shared intel passes for the loosest provider; each provider's floor applies again
    # to what its policies ask for. One lab's intel blocks only with local evidence
    # (score >= intel.local_evidence_score), below the graduated response's bar.
    added = await api.client.post(
        "/v1/intel/indicators", json={"indicators": [intel("100.64.0.0/12")]}
    )
    assert added.status_code == 201, added.text
    subject = new_subject(ips=["100.64.1.2"])

    [narrow] = (await api.submit(verdict(subject=subject, score=0.6)))["results"]
    [wide] = (
        await api.submit(
            verdict(subject=new_subject(ips=["100.64.1.3"]), score=0.6, provider="lab-wide")
        )
    )["results"]

    assert narrow["decision_status"] == "error"
    assert "rule intel.known_range" in narrow["error"]
    assert "100.64.0.0/12 covers more than a block may" in narrow["error"]
    [fallback] = narrow["actions"]
    assert (fallback["type"], fallback["rule"]) == ("flag_review", "tollgate.fallback")
    assert fallback["target"] == {"kind": "account", "value": subject["account_id"]}
    assert "intel.known_range" in fallback["reason"]
    assert wide["decision_status"] == "ok"
    assert [(a["type"], a["target"]["value"]) for a in wide["actions"]] == [
        ("block", "100.64.0.0/12")
    ]


async def test_a_whole_internet_indicator_stored_earlier_never_becomes_a_block(
    fresh_api: Running,
) -> None:
    # As a database written before the floor existed holds it.
    await add(fresh_api.runtime.db, indicator("0.0.0.0/0"), indicator("::/0"))

    [result] = (await fresh_api.submit(verdict(subject=new_subject(), score=0.6)))["results"]

    assert result["decision_status"] == "error"
    assert "from rule intel.known_range" in result["error"]
    blocks = await fetch(fresh_api.runtime.db, ActionRow, col(ActionRow.type) == "block")
    assert blocks == []
    assert [a["rule"] for a in result["actions"]] == ["tollgate.fallback"]
