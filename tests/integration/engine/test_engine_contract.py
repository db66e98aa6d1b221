"""The `PolicyEngine` contract: the same assertions on the embedded engine and on the
remote engine (pushing to the OPA test server). What a decision is must not depend on
`TOLLGATE_ENGINE`."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.engine.base import NOT_YET, PolicyEngine
from controlplane.engine.bundle import PolicyBundle, load_bundle
from controlplane.engine.embedded import EmbeddedEngine
from controlplane.errors import PolicyError
from tests.integration.engine.conftest import ENGINES, Loader, make_bundle
from tests.support.escapes import escapes
from tests.support.listener import http_listener
from tests.support.opa_server import OpaTestServer
from tests.support.verdicts import DESIGN_VERDICT

REPO = Path(__file__).resolve().parents[3]

DESIGN_EXAMPLE: dict[str, Any] = {
    "verdict": DESIGN_VERDICT,
    "history": {"active_actions": [], "verdicts_30d": 3, "appeals": []},
    "context": {
        "exempt": False,
        "intel_matches": [{"cidr": "203.0.113.0/24", "source": "lab-b", "confidence": 0.9}],
    },
    "now": "2026-11-26T12:00:01Z",
}
"""The input of DESIGN.md, "The policy contract"."""

ECHO = """\
package echo

decision := {"n": input.n, "double": input.n * 2, "factor": data.echo.settings.factor} if {
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

# The engines probe their entrypoint with a representative verdict before use.
decision := {"probe": true, "root": data.flags.probe} if input.verdict.id == "probe"
"""

ECHO_DATA: list[tuple[str, Any]] = [("echo.settings", {"factor": 3}), ("", {"flags": {"probe": 1}})]


def echo_bundle() -> PolicyBundle:
    return make_bundle({"echo/echo.rego": ECHO}, ECHO_DATA)


@pytest.fixture(scope="module")
def repo_bundle() -> PolicyBundle:
    return load_bundle(REPO / "policies")


@pytest.fixture(scope="module")
def reference(repo_bundle: PolicyBundle) -> Iterator[dict[str, Any]]:
    """The DESIGN.md example's decision, from an embedded engine built directly."""
    engine = EmbeddedEngine(repo_bundle, "tollgate.decision")
    try:
        evaluation = engine.evaluate_sync(copy.deepcopy(DESIGN_EXAMPLE))
    finally:
        engine.close()
    assert evaluation.ok, evaluation.error
    result: dict[str, Any] = evaluation.result
    yield result


@pytest.mark.parametrize("kind", ENGINES)
async def test_the_design_example_decides_the_same(
    kind: str, loader: Loader, repo_bundle: PolicyBundle, reference: dict[str, Any]
) -> None:
    engine = await loader(kind, repo_bundle)

    (evaluation,) = await engine.evaluate_many([copy.deepcopy(DESIGN_EXAMPLE)])

    assert evaluation.error is None
    assert evaluation.result == reference
    assert reference["shadow"] is False
    # The bundled library on DESIGN.md's example: a repeat without key or address
    # rotation is throttled (not revoked), the shared range blocked, the account reviewed.
    assert {(a["type"], a["target"]["value"]) for a in reference["actions"]} == {
        ("rate_limit", "key_3"),
        ("block", "203.0.113.0/24"),
        ("flag_review", "acct_9"),
    }
    assert evaluation.duration_ms > 0 and evaluation.started_ns > 0


@pytest.mark.parametrize("kind", ENGINES)
async def test_identity(kind: str, loader: Loader, repo_bundle: PolicyBundle) -> None:
    engine = await loader(kind, repo_bundle, entrypoint="data.tollgate.decision")

    assert engine.name == f"opa-{kind}"
    assert engine.revision == repo_bundle.revision
    assert engine.entrypoint == "tollgate.decision"
    assert engine.bundle is repo_bundle


@pytest.mark.parametrize("prestart", [True, False])
async def test_a_served_revision_starts_its_engine_processes_unless_told_not_to(
    loader: Loader, repo_bundle: PolicyBundle, prestart: bool
) -> None:
    engine = await loader("embedded", repo_bundle, engine_workers=2, engine_prestart=prestart)
    assert isinstance(engine, EmbeddedEngine)

    assert len(engine.process_ids()) == (2 if prestart else 0)
    evaluations = await engine.evaluate_many([DESIGN_EXAMPLE] * 2)
    assert all(e.ok for e in evaluations)
    assert len(engine.process_ids()) == 2


@pytest.mark.parametrize("kind", ENGINES)
async def test_evaluate_many_answers_in_the_order_of_its_inputs(kind: str, loader: Loader) -> None:
    engine = await loader(kind, echo_bundle(), entrypoint="echo.decision")
    inputs = [{"n": n} for n in range(40)]

    evaluations = await engine.evaluate_many(inputs)

    assert [e.result for e in evaluations] == [
        {"n": n, "double": 2 * n, "factor": 3} for n in range(40)
    ]
    assert await engine.evaluate_many([]) == []


@pytest.mark.parametrize("kind", ENGINES)
async def test_data_files_are_mounted_where_they_lie(kind: str, loader: Loader) -> None:
    engine = await loader(kind, echo_bundle(), entrypoint="echo.decision")

    (probe,) = await engine.evaluate_many([{"verdict": {"id": "probe"}}])

    assert probe.result == {"probe": True, "root": 1}


@pytest.mark.parametrize("kind", ENGINES)
async def test_a_runtime_error_fails_only_its_evaluation(kind: str, loader: Loader) -> None:
    engine = await loader(kind, echo_bundle(), entrypoint="echo.decision")

    first, conflict, last = await engine.evaluate_many([{"n": 1}, {"n": 101}, {"n": 2}])

    assert first.ok and last.ok
    assert not conflict.ok and conflict.result is None
    assert conflict.error is not None and "eval_conflict_error" in conflict.error


@pytest.mark.parametrize("kind", ENGINES)
async def test_an_undefined_decision_is_an_error(kind: str, loader: Loader) -> None:
    engine = await loader(kind, echo_bundle(), entrypoint="echo.decision")

    (evaluation,) = await engine.evaluate_many([{"n": "not a number"}])

    assert evaluation.result is None
    assert evaluation.error == "data.echo.decision is undefined for this input"


@pytest.mark.parametrize("kind", ENGINES)
async def test_an_undefined_entrypoint_fails_the_load(kind: str, loader: Loader) -> None:
    with pytest.raises(PolicyError) as raised:
        await loader(kind, echo_bundle(), entrypoint="echo.nothing_here")

    assert "data.echo.nothing_here is undefined" in raised.value.message
    assert "TOLLGATE_ENTRYPOINT" in raised.value.message


@pytest.mark.parametrize("kind", ENGINES)
async def test_a_probe_error_fails_the_load(kind: str, loader: Loader) -> None:
    broken = ECHO + 'decision := {"other": true} if input.verdict.id == "probe"\n'
    bundle = make_bundle({"echo/echo.rego": broken}, ECHO_DATA)

    with pytest.raises(PolicyError) as raised:
        await loader(kind, bundle, entrypoint="echo.decision")

    assert "probe evaluation" in raised.value.message
    assert "eval_conflict_error" in raised.value.message


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str]]]:
    with http_listener() as running:
        yield running


@pytest.mark.parametrize("escape", sorted(escapes("http://127.0.0.1:1")))
@pytest.mark.parametrize("kind", ENGINES)
async def test_a_policy_that_can_leave_the_process_is_refused_before_it_runs(
    kind: str,
    escape: str,
    loader: Loader,
    server: OpaTestServer,
    repo_bundle: PolicyBundle,
    listener: tuple[str, list[str]],
) -> None:
    url, asked = listener
    bundle = make_bundle(escapes(url)[escape].apply(dict(repo_bundle.modules)), repo_bundle.data)

    with pytest.raises(PolicyError, match="which is not allowed"):
        await loader(kind, bundle)

    assert asked == []
    # The remote engine pushes nothing: the OPA server would run it.
    assert server.received("PUT", "/v1/policies") == []


@pytest.mark.parametrize("kind", ENGINES)
async def test_a_module_that_does_not_compile_fails_the_load(kind: str, loader: Loader) -> None:
    v0 = "package echo\n\ndecision { true }\n"

    with pytest.raises(PolicyError) as raised:
        await loader(kind, make_bundle({"echo/echo.rego": v0}), entrypoint="echo.decision")

    assert "`if` keyword is required" in raised.value.message
    assert "echo.rego" in raised.value.message


@pytest.mark.parametrize("kind", ENGINES)
async def test_evaluate_sync_matches_evaluate_many(kind: str, loader: Loader) -> None:
    engine = await loader(kind, echo_bundle(), entrypoint="echo.decision")

    on_a_thread = await asyncio.to_thread(engine.evaluate_sync, {"n": 7})
    on_the_loop = engine.evaluate_sync({"n": 8})
    (many,) = await engine.evaluate_many([{"n": 7}])

    assert on_a_thread.result == many.result == {"n": 7, "double": 14, "factor": 3}
    assert on_the_loop.result == {"n": 8, "double": 16, "factor": 3}


SPIN = """
package spin

import rego.v1

decision := {
	"n": object.get(input, "n", 0),
	"spun": count([x | some x in numbers.range(1, object.get(input, "spin", 1))]),
}
"""


def test_evaluate_blocking_gives_each_evaluation_while_the_next_are_evaluated() -> None:
    """The caller gets the first evaluation (and may decide on it) while the workers are
    still evaluating the others: its Python overlaps their native calls. Ordered by the
    engine's own clock, with a margin of whole evaluations, not by a timer."""
    engine = EmbeddedEngine(make_bundle({"spin/spin.rego": SPIN}, {}), "spin.decision", workers=2)
    try:
        inputs = [{"n": 0, "spin": 1}] + [{"n": n, "spin": 400_000} for n in range(1, 5)]
        loop = asyncio.new_event_loop()
        try:
            stream = engine.evaluate_blocking(inputs, loop)
            first = next(stream)
            given_first_ns = time.time_ns()
            rest = list(stream)
        finally:
            loop.close()
    finally:
        engine.close()
    assert [e.result for e in [first, *rest]] == [
        {"n": n, "spun": 1 if n == 0 else 400_000} for n in range(5)
    ]
    last_end_ns = max(e.started_ns + int(e.duration_ms * 1e6) for e in rest)
    assert given_first_ns < last_end_ns, "the first evaluation waited for the others"


class Built:
    """Inputs built as they are iterated, each after `pause` seconds (a slow build),
    noting when each was built."""

    def __init__(self, inputs: list[dict[str, Any]], pause: float, fail_at: int = -1) -> None:
        self.inputs, self.pause, self.fail_at = inputs, pause, fail_at
        self.built_ns: list[int] = []

    def __len__(self) -> int:
        return len(self.inputs)

    def __contains__(self, item: object) -> bool:
        return item in self.inputs

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for n, given in enumerate(self.inputs):
            if n == self.fail_at:
                raise RuntimeError("building an input failed")
            time.sleep(self.pause)
            self.built_ns.append(time.time_ns())
            yield given


def test_evaluate_blocking_evaluates_the_first_inputs_while_the_next_are_built() -> None:
    """A lazy collection is iterated on the caller's thread; the workers evaluate what is
    built meanwhile (ordered by the engine's own clock, not by a timer)."""
    engine = EmbeddedEngine(make_bundle({"spin/spin.rego": SPIN}, {}), "spin.decision", workers=2)
    try:
        inputs = Built([{"n": n, "spin": 1} for n in range(6)], pause=0.05)
        loop = asyncio.new_event_loop()
        try:
            evaluations = list(engine.evaluate_blocking(inputs, loop))
        finally:
            loop.close()
    finally:
        engine.close()
    assert [e.result for e in evaluations] == [{"n": n, "spun": 1} for n in range(6)]
    assert evaluations[0].started_ns < inputs.built_ns[-1], "nothing was evaluated meanwhile"


def test_a_build_that_fails_is_raised_and_leaves_the_engine_whole() -> None:
    engine = EmbeddedEngine(echo_bundle(), "echo.decision", workers=2)
    try:
        loop = asyncio.new_event_loop()
        try:
            failing = Built([{"n": n} for n in range(5)], pause=0.01, fail_at=3)
            with pytest.raises(RuntimeError, match="building an input failed"):
                list(engine.evaluate_blocking(failing, loop))
            # Both engines came back: the next batch is evaluated on both, and ends.
            again = list(engine.evaluate_blocking([{"n": n} for n in range(40)], loop))
        finally:
            loop.close()
        assert [e.result["n"] for e in again if e.result] == list(range(40))
    finally:
        engine.close()


@pytest.mark.parametrize("count", [0, 1, 2, 3, 17, 200])
def test_evaluate_blocking_shares_the_inputs_and_keeps_their_order(count: int) -> None:
    """Every input is evaluated once, on one of the engine processes, and answered in
    its place, errors included."""
    engine = EmbeddedEngine(echo_bundle(), "echo.decision", workers=2)
    try:
        inputs = [{"n": n % 90 if n % 7 else 101 + n} for n in range(count)]
        loop = asyncio.new_event_loop()
        try:
            evaluations = list(engine.evaluate_blocking(inputs, loop))
        finally:
            loop.close()
        assert len(evaluations) == count
        for n, evaluation in enumerate(evaluations):
            if n % 7:
                assert evaluation.result == {"n": n % 90, "double": 2 * (n % 90), "factor": 3}
            else:  # above 100: a conflict, an error of its own evaluation only
                assert evaluation.result is None and evaluation.error
    finally:
        engine.close()


class Chain:
    """`first` inputs ready at once, then one more each time the caller takes an
    evaluation (as a verdict waits for the earlier one of its subject to be decided):
    `NOT_YET` while none is ready."""

    def __init__(self, count: int, first: int, spins: list[int] | None = None) -> None:
        self.count, self.first = count, first
        self.spins = spins or [1] * count
        self.taken = 0
        self.built = 0

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[dict[str, Any] | None]:
        while True:
            if self.built >= self.first + self.taken:
                yield NOT_YET
                continue
            self.built += 1
            yield {"n": self.built - 1, "spin": self.spins[self.built - 1]}


@pytest.fixture(
    params=[("embedded", 1), ("embedded", 2), ("remote", 1)],
    ids=["embedded-1", "embedded-2", "remote"],
)
async def spin_engine(request: pytest.FixtureRequest, loader: Loader) -> PolicyEngine:
    """The spin policy on the embedded engine with one worker (in this process) and two
    (engine processes), and on the remote engine."""
    kind, workers = request.param
    return await loader(
        kind,
        make_bundle({"spin/spin.rego": SPIN}, {}),
        entrypoint="spin.decision",
        engine_workers=workers,
    )


def run_chain(engine: PolicyEngine, chain: Chain, loop: asyncio.AbstractEventLoop) -> list[Any]:
    """(a thread that is not `loop`'s) Each evaluation, noting it taken as it comes."""
    evaluations = []
    for evaluation in engine.evaluate_blocking(chain, loop):
        evaluations.append(evaluation)
        chain.taken += 1
    return evaluations


async def test_inputs_not_ready_yet_are_asked_for_again_after_each_evaluation(
    spin_engine: PolicyEngine,
) -> None:
    """A lazy collection gives more inputs as the caller takes evaluations; the engine
    asks again after each one, never for more than `len` inputs, and answers in the
    order the inputs were built."""
    loop = asyncio.get_running_loop()
    for first in (1, 3):
        chain = Chain(count=12, first=first)
        evaluations = await asyncio.to_thread(run_chain, spin_engine, chain, loop)
        assert [e.result for e in evaluations] == [{"n": n, "spun": 1} for n in range(12)]
        assert chain.built == 12


async def test_inputs_that_wait_with_nothing_under_way_are_an_error(
    spin_engine: PolicyEngine,
) -> None:
    """Nothing could ever make them ready: raised, not waited for."""
    loop = asyncio.get_running_loop()
    stuck = Chain(count=3, first=0)
    with pytest.raises(ValueError, match="no input ready and none under way"):
        await asyncio.to_thread(run_chain, spin_engine, stuck, loop)
    # The engine is whole for the next call.
    evaluations = await asyncio.to_thread(run_chain, spin_engine, Chain(count=4, first=4), loop)
    assert [e.result["n"] for e in evaluations] == [0, 1, 2, 3]


def test_an_input_made_ready_by_an_evaluation_is_evaluated_beside_the_others() -> None:
    """An input given after the caller took the first evaluation goes to an engine
    process while the others are still evaluated, not after them all: the first input
    is quick, three slow ones are shared by two processes, and the one made ready by
    the first starts before the last slow one ends (by the engine's own clock, with a
    margin of a whole evaluation)."""
    engine = EmbeddedEngine(make_bundle({"spin/spin.rego": SPIN}, {}), "spin.decision", workers=2)
    try:
        loop = asyncio.new_event_loop()
        try:
            chain = Chain(count=5, first=4, spins=[1, 400_000, 400_000, 400_000, 1])
            evaluations = run_chain(engine, chain, loop)
        finally:
            loop.close()
    finally:
        engine.close()
    assert [e.result["n"] for e in evaluations] == list(range(5))
    slow_end_ns = max(e.started_ns + int(e.duration_ms * 1e6) for e in evaluations[1:4])
    assert evaluations[4].started_ns < slow_end_ns, "it waited for the first inputs"
