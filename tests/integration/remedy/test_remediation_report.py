"""The remediation report: per rule and per detector, appeals filed, upheld, denied, the
overturn rate and the median times; as JSON, CSV and markdown, and in /metrics."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controlplane.auth.roles import Role
from controlplane.remedy import report
from controlplane.telemetry import metrics as prometheus
from tests.support.app import Running, make_settings, serve
from tests.support.verdicts import new_subject, verdict

CONNECTOR = {"name": "edge", "type": "memory", "providers": ["lab-a"], "reconcile_seconds": 3600}


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    async with serve(make_settings(database_url, tmp_path, connectors=[CONNECTOR])) as running:
        yield running


async def appealed(api: Running, outcome: str, detector: str) -> None:
    """One verdict enforced (a first-offense rate limit), appealed and decided."""
    subject = new_subject()
    document = verdict(subject=subject, detector={"name": detector, "version": "1"})
    await api.submit(document)
    await api.runtime.enforcer.settle()
    support = await api.token(Role.SUPPORT, "support")
    reviewer = await api.token(Role.REVIEWER, "reviewer")
    body = {
        "subject": {"kind": "account", "value": subject["account_id"]},
        "provider": "lab-a",
        "statement": "legitimate",
        "contact": "c@example.com",
    }
    filed = (await api.client.post("/v1/appeals", json=body, headers=support)).json()
    if outcome != "open":
        decided = await api.client.post(
            f"/v1/appeals/{filed['id']}/{outcome}", json={"reason": "checked"}, headers=reviewer
        )
        assert decided.status_code == 200, decided.text
    await api.runtime.enforcer.settle()


def figures(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(f for f in items if f["name"] == name)


async def test_figures_per_rule_and_detector_in_every_format(
    api: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prometheus, "REMEDIATION_REFRESH", timedelta(0))  # figures of now
    await appealed(api, "uphold", "sweep")
    await appealed(api, "deny", "sweep")
    await appealed(api, "deny", "volume")
    await appealed(api, "open", "volume")

    response = await api.client.get("/v1/reports/remediation")
    assert response.status_code == 200, response.text
    report = response.json()
    rule = figures(report["rules"], "graduated.first_offense")
    assert (rule["appeals"], rule["upheld"], rule["denied"], rule["open"]) == (4, 1, 2, 1)
    assert rule["actions"] == 4 and rule["overturn_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert rule["median_action_to_appeal_seconds"] >= 0
    assert rule["median_appeal_to_decision_seconds"] >= 0
    assert rule["median_decision_to_lift_seconds"] >= 0, "the memory gateway took it off"
    sweep = figures(report["detectors"], "sweep")
    assert (sweep["appeals"], sweep["upheld"], sweep["overturn_rate"]) == (2, 1, 0.5)
    volume = figures(report["detectors"], "volume")
    assert (volume["upheld"], volume["denied"], volume["overturn_rate"]) == (0, 1, 0.0)
    assert report["totals"]["appeals"] == 4 and report["totals"]["upheld"] == 1

    text = (await api.client.get("/v1/reports/remediation", params={"format": "csv"})).text
    rows = list(csv.DictReader(io.StringIO(text)))
    by_name = {(r["by"], r["name"]): r for r in rows}
    assert by_name[("detector", "sweep")]["overturn_rate"] == "0.5"
    assert by_name[("total", "(all)")]["appeals"] == "4"

    markdown = await api.client.get("/v1/reports/remediation", params={"format": "markdown"})
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert "| 4 | 3 | 1 | 2 | 1 | 33% |" in markdown.text
    assert "| graduated.first_offense | 4 | 4 | 1 | 2 | 33% |" in markdown.text

    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    empty = (await api.client.get("/v1/reports/remediation", params={"since": future})).status_code
    assert empty == 422, "since after until"

    metrics = (await api.client.get("/metrics")).text
    assert 'tollgate_remediation_appeals{by="detector",name="sweep",state="upheld"} 1.0' in metrics
    assert 'tollgate_remediation_overturn_ratio{by="detector",name="sweep"} 0.5' in metrics
    assert (
        'tollgate_remediation_median_seconds{by="rule",name="graduated.first_offense",' in metrics
    )


async def test_scrapes_compute_the_30_day_figures_once_per_refresh(
    api: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scrape every 15 s does not aggregate 30 days of history each time."""
    computed: list[datetime] = []
    remediation = report.remediation

    async def counting(*args: Any) -> Any:
        computed.append(datetime.now(UTC))
        return await remediation(*args)

    monkeypatch.setattr(report, "remediation", counting)
    monkeypatch.setattr(prometheus, "REMEDIATION_REFRESH", timedelta(0))
    assert (await api.client.get("/metrics")).status_code == 200
    assert len(computed) == 1
    monkeypatch.setattr(prometheus, "REMEDIATION_REFRESH", timedelta(minutes=5))
    for _ in range(3):
        answer = await api.client.get("/metrics")
        assert "tollgate_remediation_actions" in answer.text
    assert len(computed) == 1, "the figures were aggregated again within the refresh"
