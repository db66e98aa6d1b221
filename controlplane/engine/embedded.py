"""The embedded engine: the real OPA Go evaluator, in this process for single
evaluations and in engine processes (`controlplane.engine.processes`) for batches.

One `OpaEngine` serialises its evaluations; N engine processes evaluate in parallel,
never waiting for this process's GIL. An engine cannot drop a policy or replace
data: a new revision is a new `EmbeddedEngine`, probed before use.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator, Sequence
from typing import Any

from controlplane.engine.base import Evaluation, Inputs, in_rounds
from controlplane.engine.bundle import PolicyBundle
from controlplane.engine.processes import EngineProcesses
from controlplane.engine.sandbox import new_engine, opa_module
from controlplane.errors import PolicyError

PROBE_INPUT: dict[str, Any] = {
    "verdict": {
        "id": "probe",
        "provider": "probe",
        "score": 0.5,
        "confidence": 0.5,
        "detector": {"name": "probe", "version": "0"},
        "subject": {
            "account_id": "probe",
            "api_key_id": "probe",
            "org_id": "probe",
            "ips": ["192.0.2.1"],
        },
        "signals": {},
        "labels": [],
        "evidence": [],
        "observed_at": "2026-01-01T00:00:00Z",
    },
    "history": {"active_actions": [], "verdicts_30d": 0, "appeals": []},
    "context": {"exempt": False, "exemption": None, "intel_matches": []},
    "now": "2026-01-01T00:00:01Z",
}
"""A representative input: a type error or an undefined entrypoint shows at the probe."""


class EmbeddedEngine:
    """A loaded, probed revision: one engine in this process (single evaluations and
    the probe) and, with `workers` > 1, that many engine processes for batches."""

    name = "opa-embedded"

    def __init__(self, bundle: PolicyBundle, entrypoint: str, workers: int = 1) -> None:
        self._bundle = bundle
        self._entrypoint = entrypoint.removeprefix("data.")
        self._opa = opa_module()
        self._engine = new_engine(self._bundle)
        try:
            self._probe(self._engine)
        except BaseException:
            self._engine.close()
            raise
        self._processes = (
            EngineProcesses(bundle, self._entrypoint, workers, warm=PROBE_INPUT)
            if workers > 1
            else None
        )
        """Started by `start` (a serving revision, before it is swapped in) or at the
        first batch: a revision only ever probed or explained (`tollgate policy check`,
        an impact report) starts none."""

    def start(self) -> None:
        """Start the engine processes (if any) now: they load the revision, and a
        revision they cannot load raises here, before it decides anything."""
        if self._processes is not None:
            self._processes.start()

    def process_ids(self) -> list[int]:
        """The engine processes' ids (none before they start, or with one worker)."""
        return self._processes.pids() if self._processes is not None else []

    @property
    def revision(self) -> str:
        return self._bundle.revision

    @property
    def entrypoint(self) -> str:
        return self._entrypoint

    @property
    def bundle(self) -> PolicyBundle:
        return self._bundle

    def _probe(self, engine: Any) -> None:
        try:
            engine.eval_document(self._entrypoint, PROBE_INPUT)
        except self._opa.OpaUndefinedError:
            raise PolicyError(
                f"entrypoint data.{self._entrypoint} is undefined in {self._bundle.root}: "
                "check TOLLGATE_ENTRYPOINT and the package name of your decision policy"
            ) from None
        except self._opa.OpaError as exc:
            raise PolicyError(f"policy failed its probe evaluation: {exc.message}") from None

    def evaluate_sync(self, input: dict[str, Any]) -> Evaluation:
        """On this process's engine (the binding serialises its evaluations)."""
        started_ns = time.time_ns()
        start = time.perf_counter()
        try:
            result = self._engine.eval_document(self._entrypoint, input)
            error = None
        except self._opa.OpaUndefinedError:
            result, error = None, f"data.{self._entrypoint} is undefined for this input"
        except self._opa.OpaError as exc:
            result, error = None, f"{exc.code}: {exc.message}"
        return Evaluation(result, error, (time.perf_counter() - start) * 1000, started_ns)

    def evaluate_blocking(
        self, inputs: Inputs, loop: asyncio.AbstractEventLoop
    ) -> Generator[Evaluation, None, None]:
        """Each input's evaluation, in order, each as soon as it is done: the caller
        works on one (its decision, its plan) while the engine processes evaluate the
        next ones. `inputs` is iterated on the caller's thread, each input written to a
        process as soon as it is built: a lazy collection has the processes evaluate
        the first inputs while the caller builds the next, and may give more inputs as
        the caller takes evaluations (`NOT_YET` meanwhile). A single input (or a single
        worker) is evaluated here. The event loop is not involved."""
        if len(inputs) <= 1 or self._processes is None:
            yield from in_rounds(inputs, lambda ready: map(self.evaluate_sync, ready))
            return
        yield from self._processes.evaluate(inputs, len(inputs))

    async def evaluate_many(self, inputs: Sequence[dict[str, Any]]) -> list[Evaluation]:
        if not inputs:
            return []
        processes = self._processes
        if len(inputs) == 1 or processes is None:
            return await asyncio.to_thread(lambda: [self.evaluate_sync(i) for i in inputs])
        return await asyncio.to_thread(lambda: list(processes.evaluate(inputs, len(inputs))))

    def close(self) -> None:
        if self._processes is not None:
            self._processes.close()
        self._engine.close()
