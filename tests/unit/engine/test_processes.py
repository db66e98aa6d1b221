"""Engine processes: inputs through child processes, one OPA engine each, and what
happens when one of them exits."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.engine.bundle import PolicyBundle
from controlplane.engine.processes import EngineProcesses, parse
from controlplane.errors import PolicyError
from controlplane.telemetry import metrics

SPIN = """\
package spin

import rego.v1

decision := {
	"n": input.n,
	"spun": count([x | some x in numbers.range(1, object.get(input, "spin", 1))]),
}
"""


def spin_bundle() -> PolicyBundle:
    return PolicyBundle(
        root=Path("/nowhere"), revision="test-spin", modules={"spin.rego": SPIN}, data=[]
    )


@pytest.fixture
def processes() -> Iterator[EngineProcesses]:
    pool = EngineProcesses(spin_bundle(), "spin.decision", 2)
    try:
        yield pool
    finally:
        pool.close()


def results(pool: EngineProcesses, inputs: list[dict[str, Any]]) -> list[Any]:
    return [e.result for e in pool.evaluate(inputs, len(inputs))]


def test_no_process_starts_before_the_first_call(processes: EngineProcesses) -> None:
    assert processes.pids() == []
    assert results(processes, [{"n": 1}, {"n": 2}]) == [
        {"n": 1, "spun": 1},
        {"n": 2, "spun": 1},
    ]
    assert len(processes.pids()) == 2


def test_start_starts_them_before_any_call(processes: EngineProcesses) -> None:
    processes.start()
    started = processes.pids()
    assert len(started) == 2
    assert all(Path(f"/proc/{pid}").exists() for pid in started)
    assert results(processes, [{"n": 3}]) == [{"n": 3, "spun": 1}]
    assert processes.pids() == started  # the call used them, none started again


def test_each_process_evaluates_the_warm_input_before_it_counts_as_started() -> None:
    pool = EngineProcesses(spin_bundle(), "spin.decision", 2, warm={"n": 0})
    try:
        pool.start()
        assert results(pool, [{"n": 4}]) == [{"n": 4, "spun": 1}]
    finally:
        pool.close()
    # A warm input the revision cannot evaluate: the processes refuse it at start, not
    # at the first batch.
    broken = EngineProcesses(spin_bundle(), "spin.decision", 2, warm={"n": 0, "spin": "x"})
    try:
        with pytest.raises(PolicyError, match="warm-up evaluation failed"):
            broken.start()
        assert broken.pids() == []
    finally:
        broken.close()


def test_a_process_that_exited_is_replaced_at_the_next_call(processes: EngineProcesses) -> None:
    results(processes, [{"n": 0}, {"n": 1}])
    gone = processes.pids()[0]
    os.kill(gone, signal.SIGKILL)
    while Path(f"/proc/{gone}").exists() and "zombie" not in _state(gone):
        time.sleep(0.01)

    for _ in range(2):  # one exit may show only during the call: replaced at the next
        assert results(processes, [{"n": n} for n in range(10)]) == [
            {"n": n, "spun": 1} for n in range(10)
        ]
    pids = processes.pids()
    assert len(pids) == 2 and gone not in pids


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


class KillAfter:
    """Inputs built as iterated; after `after` of them, the processes `pids` are killed
    while they evaluate (every input spins long enough to still be under way)."""

    def __init__(self, pids: list[int], inputs: list[dict[str, Any]], after: int) -> None:
        self.pids, self.inputs, self.after = pids, inputs, after

    def __len__(self) -> int:
        return len(self.inputs)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for n, given in enumerate(self.inputs):
            if n == self.after:
                time.sleep(0.05)  # the processes took their first inputs
                for pid in self.pids:
                    os.kill(pid, signal.SIGKILL)
            yield given


SPUN = 300_000


def test_inputs_under_way_on_a_killed_process_are_evaluated_again(
    processes: EngineProcesses,
) -> None:
    results(processes, [{"n": -1}, {"n": -2}])  # started
    inputs = [{"n": n, "spin": SPUN} for n in range(8)]
    built = KillAfter(processes.pids()[:1], inputs, after=4)
    exits = metrics.ENGINE_PROCESS_EXITS._value.get()

    evaluations = list(processes.evaluate(built, len(inputs)))

    assert metrics.ENGINE_PROCESS_EXITS._value.get() == exits + 1

    assert [e.result for e in evaluations] == [{"n": n, "spun": SPUN} for n in range(8)]
    assert built.pids[0] not in processes.pids()


def test_an_input_under_way_on_two_processes_that_exit_fails_alone() -> None:
    """What looks like an input that kills engines: each process it is sent to exits
    under it. On the second it fails (its provider's fallback is planned) rather than
    take down every process in turn; the next call is evaluated as usual."""
    pool = EngineProcesses(spin_bundle(), "spin.decision", 1)
    killed: list[int] = []

    def kill_twice() -> None:
        while len(killed) < 2:
            # Loaded processes only (they join the pool once they answered `ok`).
            alive = {p.process.pid for p in list(pool._processes)} - set(killed)
            if alive:
                time.sleep(0.1)  # under way on the input
                pid = alive.pop()
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.01)

    try:
        results(pool, [{"n": -1}])
        killer = threading.Thread(target=kill_twice)
        killer.start()
        (evaluation,) = pool.evaluate([{"n": 1, "spin": 5_000_000}], 1)
        killer.join()
        assert evaluation.error is not None, evaluation
        assert "2 engine processes exited" in evaluation.error
        assert results(pool, [{"n": 2}, {"n": 3}]) == [{"n": 2, "spun": 1}, {"n": 3, "spun": 1}]
    finally:
        pool.close()


def test_a_call_left_early_leaves_no_answer_for_the_next(processes: EngineProcesses) -> None:
    stream = processes.evaluate([{"n": n} for n in range(50)], 50)
    assert next(stream).result == {"n": 0, "spun": 1}
    stream.close()

    assert results(processes, [{"n": 100 + n} for n in range(5)]) == [
        {"n": 100 + n, "spun": 1} for n in range(5)
    ]


def test_an_input_that_is_not_utf8_fails_alone(processes: EngineProcesses) -> None:
    evaluations = list(processes.evaluate([{"n": 1}, {"n": "\udc80"}, {"n": 3}], 3))

    assert evaluations[0].result == {"n": 1, "spun": 1}
    assert evaluations[1].error is not None and "invalid_argument" in evaluations[1].error
    assert evaluations[2].result == {"n": 3, "spun": 1}


def test_close_stops_every_process(processes: EngineProcesses) -> None:
    results(processes, [{"n": 1}, {"n": 2}])
    pids = processes.pids()

    processes.close()

    for pid in pids:
        assert _state(pid) == "zombie" or not Path(f"/proc/{pid}").exists()


@pytest.mark.parametrize(
    ("envelope", "result", "error"),
    [
        (b'{"result":[{"expressions":[{"value":{"a":1}}]}]}', {"a": 1}, None),
        (b'{"result":[]}', None, "data.x.decision is undefined for this input"),
        (b'{"error":{"code":"eval_conflict_error","message":"m"}}', None, "eval_conflict_error: m"),
        (b"not json", None, "internal: unreadable answer from the engine"),
    ],
)
def test_parse_words_each_answer_as_the_in_process_engine_does(
    envelope: bytes, result: Any, error: str | None
) -> None:
    evaluation = parse(envelope, "x.decision", 5, 2_000_000)

    assert evaluation.result == result
    if error is None:
        assert evaluation.error is None and evaluation.duration_ms == 2.0
    else:
        assert evaluation.error is not None and evaluation.error.startswith(error)
