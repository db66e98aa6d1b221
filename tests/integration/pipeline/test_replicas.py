"""Several replicas on one PostgreSQL decide as one: a verdict's history includes what
another replica decided a moment before about the same subject."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from controlplane.engine.base import Evaluation
from controlplane.engine.embedded import EmbeddedEngine
from tests.support.app import make_settings, serve
from tests.support.databases import PostgresServer, fresh_database
from tests.support.verdicts import new_subject, verdict


@pytest.fixture
def postgres_url(postgres: PostgresServer, tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgresql", tmp_path / "db", postgres) as url:
        yield url


async def test_two_replicas_see_each_others_decisions(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluate = EmbeddedEngine.evaluate_many

    async def slow(self: EmbeddedEngine, inputs: Sequence[dict[str, Any]]) -> list[Evaluation]:
        # Both replicas have read their history before either has stored its decision,
        # unless deciding is serialised across replicas.
        await asyncio.sleep(0.2)
        return await evaluate(self, inputs)

    monkeypatch.setattr(EmbeddedEngine, "evaluate_many", slow)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    async with (
        serve(make_settings(postgres_url, tmp_path / "a")) as one,
        serve(make_settings(postgres_url, tmp_path / "b")) as two,
    ):
        for _ in range(3):
            # Two keys of one organisation: only the first decision's actions on the org
            # link them; their verdict histories do not.

            # What the second of two such verdicts gets when it sees the first: one
            # replica, one after the other.
            alone, after = pair()
            expected = sorted(
                [kinds_of(await one.submit(alone)), kinds_of(await one.submit(after))]
            )
            assert expected[0] != expected[1], "the policy must escalate the second"
            a, b = pair()
            answers = await asyncio.gather(one.submit(a), two.submit(b))
            # Whichever replica decided second saw what the other had just decided.
            assert sorted(kinds_of(answer) for answer in answers) == expected


def pair() -> tuple[dict[str, Any], dict[str, Any]]:
    """Verdicts about two keys of one organisation, from a key-farm detector."""
    first, other = new_subject(), new_subject()
    other["org_id"] = first["org_id"]
    farm = ["distillation.key_farm"]
    return verdict(subject=first, labels=farm), verdict(subject=other, labels=farm)


def kinds_of(answer: dict[str, Any]) -> list[str]:
    return sorted(a["type"] for a in answer["results"][0]["actions"])
