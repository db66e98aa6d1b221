"""The interface every policy engine implements, and what an evaluation returns."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from controlplane.engine.bundle import PolicyBundle


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluation of the entrypoint: a result, or the error that stopped it."""

    result: Any
    error: str | None
    duration_ms: float
    started_ns: int = 0
    """Wall-clock start (ns since epoch), for the evaluation's span."""

    @property
    def ok(self) -> bool:
        return self.error is None


class Inputs(Protocol):
    """What `evaluate_blocking` takes: a list of inputs, or a lazy collection that builds
    each as it is asked for (giving `NOT_YET` while none is ready)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[dict[str, Any] | None]: ...


class PolicyEngine(Protocol):
    """Evaluates one loaded policy revision. Built, probed, then swapped in whole."""

    @property
    def name(self) -> str:
        """Engine kind recorded on decisions, e.g. `opa-embedded`."""
        ...

    @property
    def revision(self) -> str:
        """The policy revision (git commit, `-dirty` when the tree has changes)."""
        ...

    @property
    def bundle(self) -> PolicyBundle:
        """The revision's modules and data (its shadow rules among them)."""
        ...

    @property
    def entrypoint(self) -> str:
        """The decision document's path without `data.`, e.g. `tollgate.decision`."""
        ...

    async def evaluate_many(self, inputs: Sequence[dict[str, Any]]) -> list[Evaluation]:
        """Evaluate the entrypoint once per input, in parallel where possible, in order."""
        ...

    def evaluate_sync(self, input: dict[str, Any]) -> Evaluation:
        """One evaluation on the calling thread (benchmarks, probes, explain)."""
        ...

    def evaluate_blocking(
        self, inputs: Inputs, loop: asyncio.AbstractEventLoop
    ) -> Generator[Evaluation, None, None]:
        """`evaluate_many` for a thread that is not `loop`'s (the decide thread): the
        evaluations in the order the inputs were given, in parallel where possible, each
        given as soon as it is done (the caller's work on one may overlap the evaluation
        of the next). `inputs` holds `len(inputs)` inputs and is iterated on the
        caller's thread, once, as far as needed: a lazy collection builds each as it is
        asked for, and gives `NOT_YET` (None) while nothing more is ready, until the
        caller has taken the next evaluation (its outcome may make more ready). See
        `in_rounds`."""
        ...

    def close(self) -> None: ...


NOT_YET = None
"""What a lazy collection of inputs gives while no input is ready: the engine gives the
caller the next evaluation due before it asks again."""

_END: Any = object()


def in_rounds(
    inputs: Inputs,
    evaluate: Callable[[list[dict[str, Any]]], Iterable[Evaluation]],
) -> Generator[Evaluation, None, None]:
    """`evaluate_blocking` for an engine that evaluates a list at a time: each round
    evaluates the inputs ready (up to `NOT_YET`, or all) and gives their evaluations,
    before the next round asks for more."""
    count = len(inputs)
    given = iter(inputs)
    done = 0
    while done < count:
        ready: list[dict[str, Any]] = []
        while done + len(ready) < count:
            one = next(given, _END)
            if one is _END:
                raise ValueError(f"{done + len(ready)} inputs given for {count}")
            if one is NOT_YET:
                break
            ready.append(one)
        if not ready:
            raise ValueError(f"no input ready and none under way, after {done} of {count}")
        for evaluation in evaluate(ready):
            yield evaluation
            done += 1
