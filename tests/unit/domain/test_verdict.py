"""`Verdict`: what a detector may send, normalised as policies will see it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from controlplane.domain.verdict import Subject, Verdict, VerdictBatch
from tests.support.verdicts import DESIGN_VERDICT, verdict


def errors(document: dict[str, Any], model: type[Verdict | VerdictBatch] = Verdict) -> set[str]:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(document)
    return {".".join(str(p) for p in e["loc"]) for e in raised.value.errors()}


def test_design_example_is_valid() -> None:
    parsed = Verdict.model_validate(DESIGN_VERDICT)

    assert parsed.observed_at == datetime(2026, 11, 26, 12, tzinfo=UTC)
    assert parsed.signals == {"requests_24h": 1200000.0, "prompt_template_reuse": 0.91}
    assert parsed.evidence == []
    document = parsed.document()
    assert document["observed_at"] == "2026-11-26T12:00:00Z"
    assert document["subject"]["ips"] == ["203.0.113.7"]


def test_minimal_verdict_needs_only_one_subject_field() -> None:
    for subject in ({"account_id": "a"}, {"api_key_id": "k"}, {"org_id": "o"}, {"ips": ["::1"]}):
        parsed = Verdict.model_validate(verdict(subject=subject))
        assert parsed.subject.targets


def test_ips_are_normalised() -> None:
    parsed = Verdict.model_validate(
        verdict(subject={"ips": ["2001:DB8:0:0::1", "192.0.2.1", "2001:db8:0:0:0:0:0:a"]})
    )
    assert parsed.subject.ips == ["2001:db8::1", "192.0.2.1", "2001:db8::a"]


def test_ipv4_mapped_ipv6_is_the_ipv4_address() -> None:
    # Otherwise ::ffff:203.0.113.7 would slip past a 203.0.113.0/24 block or indicator.
    parsed = Verdict.model_validate(verdict(subject={"ips": ["::ffff:203.0.113.7"]}))
    assert parsed.subject.ips == ["203.0.113.7"]


@pytest.mark.parametrize(
    "ip",
    [
        "fe80::%x;disable frontend model_api;/64",
        "fe80::1%eth0",
        "fe80::1%1",
        "192.0.2.7\n",
        " 192.0.2.7",
        "\u0661\u0669\u0662.\u0660.\u0662.\u0667",
    ],
)
def test_zone_ids_spaces_and_foreign_digits_are_not_addresses(ip: str) -> None:
    # A zone id makes one address many subjects, and carries text to the gateways.
    assert errors(verdict(subject={"ips": ["192.0.2.1", ip]})) == {"subject.ips"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"subject": None}, "subject"),
        ({"subject": {}}, "subject"),
        ({"subject": {"account_id": None, "ips": []}}, "subject"),
        ({"subject": {"ips": ["203.0.113.0/24"]}}, "subject.ips"),
        ({"subject": {"ips": ["host.example"]}}, "subject.ips"),
        ({"subject": {"ips": ["192.0.2.1"] * 257}}, "subject.ips"),
        ({"subject": {"account_id": ""}}, "subject.account_id"),
        ({"subject": {"api_key_id": "key with spaces"}}, "subject.api_key_id"),
        ({"subject": {"org_id": "-org"}}, "subject.org_id"),
        ({"observed_at": "2026-11-26T12:00:00"}, "observed_at"),
        ({"observed_at": "yesterday"}, "observed_at"),
        ({"score": 1.01}, "score"),
        ({"score": -0.01}, "score"),
        ({"confidence": "high"}, "confidence"),
        ({"provider": "Lab A"}, "provider"),
        ({"provider": "x" * 64}, "provider"),
        ({"id": ""}, "id"),
        ({"id": "x" * 201}, "id"),
        ({"detector": {"name": "sweep"}}, "detector.version"),
        ({"detector": {"name": "sweep", "version": "1", "vendor": "acme"}}, "detector.vendor"),
        ({"signals": {"rate": "fast"}}, "signals.rate"),
        ({"labels": ["x" * 201]}, "labels.0"),
        ({"labels": ["l"] * 101}, "labels"),
        ({"evidence": list(range(101))}, "evidence"),
        ({"severity": "high"}, "severity"),
    ],
)
def test_invalid_field_is_named(change: dict[str, Any], field: str) -> None:
    assert field in errors({**verdict(), **change})


@pytest.mark.parametrize(
    "missing", ["id", "detector", "provider", "observed_at", "subject", "score", "confidence"]
)
def test_required_fields(missing: str) -> None:
    document = verdict()
    del document[missing]
    assert errors(document) == {missing}


def test_naive_datetime_is_refused_but_any_offset_is_accepted() -> None:
    parsed = Verdict.model_validate(verdict(observed_at="2026-11-26T14:00:00+02:00"))
    assert parsed.observed_at == datetime(2026, 11, 26, 12, tzinfo=UTC)
    assert "observed_at" in errors(verdict(observed_at="2026-11-26 12:00:00"))


def test_verdict_is_immutable() -> None:
    parsed = Verdict.model_validate(verdict())
    with pytest.raises(ValidationError):
        parsed.score = 0.1  # type: ignore[misc]


def test_content_hash_is_canonical() -> None:
    document = verdict()
    reordered = dict(reversed(list(document.items())))
    same = Verdict.model_validate(document).content_hash()

    assert Verdict.model_validate(reordered).content_hash() == same
    assert len(same) == 64
    changed = Verdict.model_validate({**document, "score": 0.79}).content_hash()
    assert changed != same


def test_subject_targets_in_order() -> None:
    subject = Subject(account_id="a", api_key_id="k", org_id="o", ips=["192.0.2.1", "::1"])
    assert subject.targets == (
        ("account", "a"),
        ("api_key", "k"),
        ("org", "o"),
        ("ip", "192.0.2.1"),
        ("ip", "::1"),
    )


def test_batch_holds_1_to_1000_verdicts() -> None:
    assert len(VerdictBatch.model_validate({"verdicts": [verdict()] * 1000}).verdicts) == 1000
    assert errors({"verdicts": []}, VerdictBatch) == {"verdicts"}
    assert errors({"verdicts": [verdict()] * 1001}, VerdictBatch) == {"verdicts"}
    assert errors({"verdicts": [verdict(), {**verdict(), "score": 2}]}, VerdictBatch) == {
        "verdicts.1.score"
    }
    assert errors({"verdicts": [verdict()], "dry_run": True}, VerdictBatch) == {"dry_run"}
