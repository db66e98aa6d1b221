"""`EmbeddedEngine`: the real OPA evaluator, in this process and in engine processes."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.engine.base import Evaluation
from controlplane.engine.bundle import PolicyBundle
from controlplane.engine.embedded import PROBE_INPUT, EmbeddedEngine
from controlplane.engine.runtime import EngineSlot
from controlplane.errors import EngineUnavailable

ECHO = """\
package echo

decision := {"n": input.n, "double": input.n * 2} if {
	is_number(input.n)
	input.n <= 100
}

# Above 100 both definitions hold: a conflict at evaluation time.
_size := "big" if input.n > 100

_size := "huge" if input.n > 100

decision := {"n": input.n, "size": _size} if {
	is_number(input.n)
	input.n > 100
}

# The engine probes its entrypoint with a representative verdict before use.
decision := {"probe": true} if input.verdict.id == "probe"
"""


def bundle(source: str = ECHO, data: list[tuple[str, Any]] | None = None) -> PolicyBundle:
    return PolicyBundle(
        root=Path("/nowhere"),
        revision="test-revision",
        modules={"echo.rego": source},
        data=data or [],
    )


@pytest.fixture(scope="module")
def engine() -> Iterator[EmbeddedEngine]:
    built = EmbeddedEngine(bundle(), "data.echo.decision", workers=2)
    try:
        yield built
    finally:
        built.close()


def test_properties(engine: EmbeddedEngine) -> None:
    assert engine.name == "opa-embedded"
    assert engine.revision == "test-revision"
    assert engine.entrypoint == "echo.decision"


def test_evaluate_sync(engine: EmbeddedEngine) -> None:
    evaluation = engine.evaluate_sync({"n": 21})

    assert evaluation.ok
    assert evaluation.result == {"n": 21, "double": 42}
    assert evaluation.error is None
    assert evaluation.duration_ms >= 0
    assert evaluation.started_ns > 1_700_000_000 * 10**9


@pytest.mark.parametrize("count", [1, 2, 7, 64])
async def test_evaluate_many_keeps_the_order_of_its_inputs(
    engine: EmbeddedEngine, count: int
) -> None:
    evaluations = await engine.evaluate_many([{"n": i} for i in range(count)])

    assert [e.result for e in evaluations] == [{"n": i, "double": 2 * i} for i in range(count)]


async def test_evaluate_many_splits_the_work_between_the_engine_processes(
    engine: EmbeddedEngine,
) -> None:
    processes = engine._processes
    assert processes is not None
    before = processes.answered()

    await engine.evaluate_many([{"n": i} for i in range(9)])

    after = processes.answered()
    assert len(after) == 2
    assert all(a - b >= 1 for a, b in zip(after, before, strict=True)), (before, after)
    assert sum(after) - sum(before) == 9


async def test_evaluate_many_of_nothing(engine: EmbeddedEngine) -> None:
    assert await engine.evaluate_many([]) == []


async def test_errors_are_returned_per_input_in_order(engine: EmbeddedEngine) -> None:
    evaluations = await engine.evaluate_many([{"n": 1}, {"n": 101}, {"n": "x"}, {"n": 2}])

    ok, conflict, undefined, after = evaluations
    assert ok.result == {"n": 1, "double": 2}
    assert conflict.result is None
    assert conflict.error is not None and "eval_conflict_error" in conflict.error
    assert not conflict.ok
    assert undefined.error == "data.echo.decision is undefined for this input"
    assert after.ok and after.result == {"n": 2, "double": 4}


def test_data_documents_are_mounted(tmp_path: Path) -> None:
    source = 'package limits\n\ndecision := {"rpm": data.tollgate.settings.rpm}\n'
    built = EmbeddedEngine(
        bundle(source, data=[("tollgate.settings", {"rpm": 60})]), "limits.decision"
    )
    try:
        assert built.evaluate_sync(PROBE_INPUT).result == {"rpm": 60}
    finally:
        built.close()


def test_missing_opa_bindings_is_engine_unavailable_naming_the_install_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opa_bindings", None)

    with pytest.raises(EngineUnavailable) as raised:
        EmbeddedEngine(bundle(), "echo.decision")

    assert "opa-golib-python-bindings" in raised.value.message
    assert "requirements/opa-engine.txt" in raised.value.message
    assert "--ignore-requires-python" in raised.value.message
    assert raised.value.status_code == 503


class FakeEngine:
    """A stand-in engine that only records whether it was closed."""

    name = "fake"
    revision = "r"
    entrypoint = "e"

    def __init__(self) -> None:
        self.closed = threading.Event()

    async def evaluate_many(self, inputs: Any) -> list[Evaluation]:
        return []

    def evaluate_sync(self, input: dict[str, Any]) -> Evaluation:
        return Evaluation(None, None, 0.0)

    def close(self) -> None:
        self.closed.set()


def test_engine_slot_swaps_and_retires_the_old_engine() -> None:
    slot = EngineSlot()
    assert not slot.loaded
    with pytest.raises(EngineUnavailable, match="no policy revision is loaded"):
        _ = slot.current

    old, new = FakeEngine(), FakeEngine()
    slot.swap(old)
    assert slot.loaded and slot.current is old
    slot.swap(new)
    assert slot.current is new
    assert old.closed.wait(5), "the old engine was not closed"
    assert not new.closed.is_set()
    slot.close()
    assert new.closed.is_set()
    assert not slot.loaded
