"""The demo scenario (controlplane/demo/scenario.json) replayed through the API: each
verdict gets the action types its `expect` lists, in one batch or one per request."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from controlplane.store.models import ExemptionRow, IndicatorRow, new_id
from controlplane.store.types import utcnow
from tests.support.app import SCENARIO, Running
from tests.support.store import add
from tests.support.verdicts import action_types


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


async def seed(api: Running, scenario: dict[str, Any]) -> None:
    """The scenario's exemptions and indicators, straight into their tables."""
    rows: list[ExemptionRow | IndicatorRow] = [
        ExemptionRow(
            id=new_id("exm"),
            provider=e["provider"],
            subject_kind=e["subject"]["kind"],
            subject_value=e["subject"]["value"],
            owner=e["owner"],
            reason=e["reason"],
            expires_at=_when(e["expires_at"]),
            created_at=utcnow(),
        )
        for e in scenario["exemptions"]
    ]
    rows += [
        IndicatorRow(
            id=new_id("ind"),
            kind=i["kind"],
            value=i["value"],
            source=i["source"],
            confidence=i["confidence"],
            tlp=i["tlp"],
            expires_at=_when(i["expires_at"]),
            created_at=utcnow(),
        )
        for i in scenario["indicators"]
    ]
    await add(api.runtime.db, *rows)


@pytest.fixture
def scenario() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(SCENARIO.read_text(encoding="utf-8"))
    assert document["verdicts"], "the demo scenario has no verdicts"
    return document


def split(scenario: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """The verdicts as submitted (without `expect`) and the expected types by id."""
    verdicts, expected = [], {}
    for item in scenario["verdicts"]:
        item = dict(item)
        expected[item["id"]] = sorted(item.pop("expect"))
        verdicts.append(item)
    return verdicts, expected


def mismatches(results: list[dict[str, Any]], expected: dict[str, list[str]]) -> dict[str, Any]:
    return {
        r["verdict_id"]: {"got": action_types(r), "expected": expected[r["verdict_id"]]}
        for r in results
        if action_types(r) != expected[r["verdict_id"]] or r["decision_status"] != "ok"
    }


async def test_scenario_in_one_batch(fresh_api: Running, scenario: dict[str, Any]) -> None:
    await seed(fresh_api, scenario)
    verdicts, expected = split(scenario)

    results = (await fresh_api.submit({"verdicts": verdicts}))["results"]

    assert [r["verdict_id"] for r in results] == list(expected)
    assert mismatches(results, expected) == {}


async def test_scenario_one_verdict_per_request(
    fresh_api: Running, scenario: dict[str, Any]
) -> None:
    await seed(fresh_api, scenario)
    verdicts, expected = split(scenario)

    results = [(await fresh_api.submit(v))["results"][0] for v in verdicts]

    assert mismatches(results, expected) == {}
    assert any(expected.values()) and any(not e for e in expected.values()), (
        "the scenario should hold both enforced and untouched verdicts"
    )
