"""`subject_dependencies`: a verdict is decided after every earlier verdict of its batch
that shares a subject key with it, and waits for nothing else."""

from __future__ import annotations

from typing import Any

from controlplane.domain.verdict import Verdict
from controlplane.evaluate.context import subject_dependencies
from tests.support.verdicts import verdict


def v(provider: str = "lab-a", **subject: Any) -> Verdict:
    return Verdict.model_validate(verdict(subject=subject, provider=provider))


def test_empty_batch() -> None:
    assert subject_dependencies([]) == []


def test_unrelated_verdicts_wait_for_nothing() -> None:
    batch = [v(account_id="a"), v(account_id="b"), v(api_key_id="k")]
    assert subject_dependencies(batch) == [[], [], []]


def test_a_repeat_waits_for_the_first() -> None:
    batch = [v(account_id="a"), v(account_id="b"), v(account_id="a")]
    assert subject_dependencies(batch) == [[], [], [0]]


def test_every_subject_kind_links_verdicts() -> None:
    for first, second in (
        ({"account_id": "a"}, {"account_id": "a", "api_key_id": "k2"}),
        ({"api_key_id": "k"}, {"api_key_id": "k"}),
        ({"org_id": "o", "account_id": "a1"}, {"org_id": "o", "account_id": "a2"}),
        ({"ips": ["192.0.2.1"]}, {"ips": ["192.0.2.9", "192.0.2.1"]}),
    ):
        assert subject_dependencies([v(**first), v(**second)]) == [[], [0]], (first, second)


def test_a_verdict_waits_for_the_latest_of_each_key() -> None:
    """The latest earlier verdict of each of its keys, which waited for the one before:
    three repeats form a chain, not a fan."""
    batch = [
        v(account_id="a"),
        v(account_id="a"),
        v(account_id="a"),
        v(account_id="c"),
        v(account_id="c", api_key_id="k"),
        v(account_id="a", api_key_id="k"),
    ]
    assert subject_dependencies(batch) == [[], [0], [1], [], [3], [2, 4]]


def test_chains_through_shared_keys() -> None:
    batch = [
        v(account_id="a", api_key_id="k1"),
        v(account_id="b", api_key_id="k1"),
        v(account_id="b"),
        v(account_id="c"),
    ]
    assert subject_dependencies(batch) == [[], [0], [1], []]


def test_the_same_subject_at_two_providers_is_two_subjects() -> None:
    batch = [v("lab-a", account_id="a"), v("lab-b", account_id="a")]
    assert subject_dependencies(batch) == [[], []]
