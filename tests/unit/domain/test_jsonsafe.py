"""`jsonsafe`: values the engine or the database would refuse are named by their path;
`Verdict` refuses them too, whoever builds it (the API, the CLI, the demo)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from controlplane.domain.jsonsafe import MAX_DEPTH, MAX_PROBLEMS, problems
from controlplane.domain.verdict import Verdict
from tests.support.verdicts import verdict


def test_plain_json_has_no_problems() -> None:
    value = {"a": [1, 2.5, -0.0, "text ü 😀", None, True, {"b": []}], "": "empty key"}
    assert problems(value) == []


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ({"s": {"x": float("nan")}}, "s.x", "not a finite number"),
        ({"s": [1, float("inf")]}, "s[1]", "not a finite number"),
        ({"e": ["ok", "\ud800"]}, "e[1]", "lone surrogate"),
        ({"e": [{"q": "a\x00b"}]}, "e[0].q", "NUL"),
        ({"e": {"\udfff": 1}}, "e", "a key contains a lone surrogate"),
        (float("-inf"), "body", "not a finite number"),
    ],
)
def test_each_bad_value_is_named_by_its_path(value: Any, field: str, message: str) -> None:
    [found] = problems(value)
    assert found["field"] == field
    assert message in found["message"]


def test_nesting_is_bounded_and_named_where_it_goes_too_deep() -> None:
    fits: Any = 1
    for _ in range(MAX_DEPTH):
        fits = [fits]
    assert problems(fits) == []

    [found] = problems([fits])
    assert found["field"] == "[0]" * MAX_DEPTH
    assert f"deeper than {MAX_DEPTH}" in found["message"]


def test_a_hostile_body_gets_a_bounded_report() -> None:
    assert len(problems([float("nan")] * 10_000)) == MAX_PROBLEMS


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"signals": {"x": float("nan")}}, "signals.x"),
        ({"signals": {"x": float("inf")}}, "signals.x"),
        ({"evidence": [{"prompt": "\ud800"}]}, "evidence"),
        ({"evidence": ["a\x00"]}, "evidence"),
        ({"labels": ["a\x00"]}, "labels.0"),
        ({"detector": {"name": "d\x00", "version": "1"}}, "detector.name"),
    ],
)
def test_verdict_refuses_values_policies_cannot_see(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Verdict.model_validate({**verdict(), **change})
    assert field in {".".join(str(p) for p in e["loc"]) for e in raised.value.errors()}
