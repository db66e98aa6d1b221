"""`subject_overlaps`: a verdict is decided after every earlier verdict of its batch that
shares a subject key with it."""

from __future__ import annotations

from typing import Any

from controlplane.domain.verdict import Verdict
from controlplane.evaluate.context import subject_overlaps
from tests.support.verdicts import verdict


def v(provider: str = "lab-a", **subject: Any) -> Verdict:
    return Verdict.model_validate(verdict(subject=subject, provider=provider))


def test_empty_batch() -> None:
    assert subject_overlaps([]) == []


def test_unrelated_verdicts_share_the_first_wave() -> None:
    assert subject_overlaps([v(account_id="a"), v(account_id="b"), v(api_key_id="k")]) == [0, 0, 0]


def test_a_repeat_waits_for_the_first() -> None:
    assert subject_overlaps([v(account_id="a"), v(account_id="b"), v(account_id="a")]) == [0, 0, 1]


def test_every_subject_kind_links_verdicts() -> None:
    for first, second in (
        ({"account_id": "a"}, {"account_id": "a", "api_key_id": "k2"}),
        ({"api_key_id": "k"}, {"api_key_id": "k"}),
        ({"org_id": "o", "account_id": "a1"}, {"org_id": "o", "account_id": "a2"}),
        ({"ips": ["192.0.2.1"]}, {"ips": ["192.0.2.9", "192.0.2.1"]}),
    ):
        assert subject_overlaps([v(**first), v(**second)]) == [0, 1], (first, second)


def test_waves_chain_through_shared_keys() -> None:
    batch = [
        v(account_id="a", api_key_id="k1"),
        v(account_id="b", api_key_id="k1"),
        v(account_id="b"),
        v(account_id="c"),
    ]
    assert subject_overlaps(batch) == [0, 1, 2, 0]


def test_a_verdict_waits_for_the_latest_of_its_overlaps() -> None:
    batch = [
        v(account_id="a"),
        v(account_id="a"),
        v(account_id="a"),
        v(account_id="c"),
        v(account_id="c", api_key_id="k"),
        v(account_id="a", api_key_id="k"),
    ]
    assert subject_overlaps(batch) == [0, 1, 2, 0, 1, 3]


def test_the_same_subject_at_two_providers_is_two_subjects() -> None:
    assert subject_overlaps([v("lab-a", account_id="a"), v("lab-b", account_id="a")]) == [0, 0]
