"""The embedded engine: the real OPA Go evaluator in-process, one engine per worker thread.

One `OpaEngine` serialises its evaluations, and its native call releases the GIL,
so N engines on N threads evaluate in parallel. An engine cannot drop a policy
or replace data: a new revision is a new `EmbeddedEngine`, probed before use.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from controlplane.engine.base import Evaluation
from controlplane.engine.bundle import PolicyBundle
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
    """A loaded, probed revision, evaluated on `workers` threads with one engine each."""

    name = "opa-embedded"

    def __init__(self, bundle: PolicyBundle, entrypoint: str, workers: int = 1) -> None:
        self._bundle = bundle
        self._entrypoint = entrypoint.removeprefix("data.")
        self._opa = opa_module()
        self._workers = max(1, workers)
        self._engines: queue.SimpleQueue[Any] = queue.SimpleQueue()
        built = []
        try:
            for _ in range(self._workers):
                engine = new_engine(self._bundle)
                built.append(engine)
                self._probe(engine)
        except BaseException:
            for engine in built:
                engine.close()
            raise
        for engine in built:
            self._engines.put(engine)
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="opa-eval")

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

    def _eval_on(self, engine: Any, input: dict[str, Any]) -> Evaluation:
        started_ns = time.time_ns()
        start = time.perf_counter()
        try:
            result = engine.eval_document(self._entrypoint, input)
            error = None
        except self._opa.OpaUndefinedError:
            result, error = None, f"data.{self._entrypoint} is undefined for this input"
        except self._opa.OpaError as exc:
            result, error = None, f"{exc.code}: {exc.message}"
        return Evaluation(result, error, (time.perf_counter() - start) * 1000, started_ns)

    def _eval_chunk(self, inputs: Sequence[dict[str, Any]]) -> list[Evaluation]:
        engine = self._engines.get()
        try:
            return [self._eval_on(engine, item) for item in inputs]
        finally:
            self._engines.put(engine)

    def evaluate_sync(self, input: dict[str, Any]) -> Evaluation:
        return self._eval_chunk([input])[0]

    def evaluate_blocking(
        self, inputs: Collection[dict[str, Any]], loop: asyncio.AbstractEventLoop
    ) -> Iterator[Evaluation]:
        """Each input's evaluation, in order, each as soon as it is done: the caller
        works on one (its decision, its plan: Python, under the GIL) while the workers
        evaluate the next ones (the native call releases the GIL), and, when the one it
        waits for is not done, evaluates the next input nobody took instead of idling.
        `inputs` is iterated once, on the caller's thread, before the first evaluation
        is given: a lazy collection (its inputs built as they are iterated) has the
        workers evaluate the first inputs while the caller builds the next. So a batch's
        Python and its evaluations overlap on two cores, and even a group of two
        verdicts is evaluated on both. Every input is evaluated once, by the first
        thread to take it. The event loop is not involved."""
        count = len(inputs)
        if count <= 1 or self._workers == 1:
            yield from self._eval_chunk(list(inputs))
            return
        built: list[dict[str, Any]] = []
        results: list[Evaluation | None] = [None] * count
        taken = itertools.count()  # next() is atomic: each input is taken once
        finished = threading.Condition()
        """Guards `built` growing, `results` filling and `failures`."""
        failures: list[BaseException] = []

        def take(engine: Any) -> bool:
            """Evaluate the next input nobody took, once it is built; False when none is
            left (or the caller failed)."""
            i = next(taken)
            if i >= count:
                return False
            if i >= len(built):
                with finished:
                    while i >= len(built) and not failures:
                        finished.wait()
                    if failures:
                        return False
            evaluation = self._eval_on(engine, built[i])
            with finished:
                results[i] = evaluation
                finished.notify_all()
            return True

        def helper() -> None:
            engine = self._engines.get()
            try:
                while take(engine):
                    pass
            except BaseException as exc:  # the caller raises it: nothing is lost quietly
                with finished:
                    failures.append(exc)
                    finished.notify_all()
            finally:
                self._engines.put(engine)

        for _ in range(min(self._workers, count) - 1):
            self._pool.submit(helper)
        engine = self._engines.get()
        try:
            try:
                for given in inputs:
                    with finished:
                        built.append(given)
                        finished.notify_all()
            except BaseException as exc:  # the helpers stop waiting for inputs never built
                with finished:
                    failures.append(exc)
                    finished.notify_all()
                raise
            if len(built) != count:
                raise ValueError(f"{len(built)} inputs given for {count}")
            for i in range(count):
                while results[i] is None:
                    if failures:
                        raise failures[0]
                    if take(engine):
                        continue
                    with finished:  # every input is taken: wait for the one due next
                        while results[i] is None and not failures:
                            finished.wait()
                result = results[i]
                assert result is not None
                yield result
        finally:
            self._engines.put(engine)

    async def evaluate_many(self, inputs: Sequence[dict[str, Any]]) -> list[Evaluation]:
        if not inputs:
            return []
        loop = asyncio.get_running_loop()
        size = -(-len(inputs) // self._workers)
        chunks = [inputs[i : i + size] for i in range(0, len(inputs), size)]
        parts = await asyncio.gather(
            *(loop.run_in_executor(self._pool, self._eval_chunk, chunk) for chunk in chunks)
        )
        return [evaluation for part in parts for evaluation in part]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        while not self._engines.empty():
            self._engines.get().close()
