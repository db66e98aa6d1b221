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
            # Two keys of one organisation: only the first decision's review of the
            # org (an active action) links them; their verdict histories do not.
            first, other = new_subject(), new_subject()
            other["org_id"] = first["org_id"]
            farm = ["distillation.key_farm"]
            answers = await asyncio.gather(
                one.submit(verdict(subject=first, labels=farm)),
                two.submit(verdict(subject=other, labels=farm)),
            )
            kinds = sorted(
                sorted(a["type"] for a in answer["results"][0]["actions"]) for answer in answers
            )
            # Whichever replica decided second saw the org under review and escalated.
            assert kinds == [
                ["flag_review", "flag_review", "revoke_key"],
                ["flag_review", "rate_limit"],
            ], kinds
