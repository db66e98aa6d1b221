"""The interface every policy engine implements, and what an evaluation returns."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Generator, Sequence
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
        self, inputs: Collection[dict[str, Any]], loop: asyncio.AbstractEventLoop
    ) -> Generator[Evaluation, None, None]:
        """`evaluate_many` for a thread that is not `loop`'s (the decide thread): the
        evaluations in order, in parallel where possible, each given as soon as it is
        done (the caller's work on one may overlap the evaluation of the next). `inputs`
        is iterated once, on the caller's thread (a lazy collection builds them then)."""
        ...

    def close(self) -> None: ...
