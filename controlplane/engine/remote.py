"""The remote engine: a stock OPA server (a sidecar) that Tollgate pushes a revision to
and asks for decisions over its REST API (`opa_http` does the HTTP, `opa_push` the push).

A load replaces the server's revision rather than adding one beside it, because OPA
cannot hold two revisions of the same packages (`controlplane.engine.opa_push`). While
a load runs the server holds a mix of two revisions. An engine of the revision being
replaced therefore refuses to evaluate from the moment the load starts (it raises
`EngineUnavailable`: its batch fails, the verdicts stay undecided and the recovery job
decides them again), and discards a batch that was in flight when the load started. A
load that fails (a module OPA refuses, a failed probe, the server going away) puts the
previous revision back, so it keeps deciding; if even that fails, the previous
revision's engine pushes it again before its next batch.

OPA keeps pushed policies in memory only: a sidecar that restarts comes back empty. An
undefined decision therefore makes the engine check that its modules are still there
and, if not, push its revision again (the batch fails and is decided again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from controlplane.engine.base import Evaluation, Inputs, in_rounds
from controlplane.engine.bundle import PolicyBundle
from controlplane.engine.opa_http import Answer, OpaHttp, OpaRejected, OpaTarget
from controlplane.engine.opa_push import (
    ServerState,
    describe_refused,
    policy_id,
    probe,
    push,
    restore,
    server_state,
    settle,
)
from controlplane.engine.sandbox import refuse_denied
from controlplane.errors import EngineUnavailable, PolicyError

__all__ = ["RemoteEngine", "policy_id"]

log = logging.getLogger(__name__)


class RemoteEngine:
    """A revision loaded into an OPA server and probed; evaluations are HTTP requests,
    at most `concurrency` in flight. Build it with `await RemoteEngine.load(...)` on the
    event loop that will evaluate with it (its HTTP session belongs to that loop)."""

    name = "opa-remote"

    def __init__(
        self,
        http: OpaHttp,
        bundle: PolicyBundle,
        entrypoint: str,
        state: ServerState,
        concurrency: int,
    ) -> None:
        self._http = http
        self._bundle = bundle
        self._entrypoint = entrypoint
        self._path = entrypoint.replace(".", "/")
        self._state = state
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._loop = asyncio.get_running_loop()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._closing: asyncio.Task[None] | None = None

    @classmethod
    async def load(
        cls, bundle: PolicyBundle, entrypoint: str, target: OpaTarget, *, concurrency: int = 8
    ) -> RemoteEngine:
        """Push `bundle` to the server at `target`, replacing its revision, and probe it.
        A revision that uses a builtin that leaves the process is refused before anything
        is pushed: an OPA server takes no capabilities over its REST API, and would run it."""
        entrypoint = entrypoint.removeprefix("data.")
        await asyncio.to_thread(refuse_denied, bundle.modules)
        state = server_state(target.url)
        http = OpaHttp(target, concurrency=concurrency)
        try:
            async with state.lock:
                state.begin()
                try:
                    await push(http, bundle, state.bundle)
                    await probe(http, bundle, entrypoint)
                except Exception:
                    await restore(http, state, bundle)
                    raise
                state.serve(bundle, entrypoint)
        except BaseException:
            await http.aclose()
            raise
        return cls(http, bundle, entrypoint, state, concurrency)

    @property
    def revision(self) -> str:
        return self._bundle.revision

    @property
    def entrypoint(self) -> str:
        return self._entrypoint

    @property
    def bundle(self) -> PolicyBundle:
        return self._bundle

    @property
    def url(self) -> str:
        return self._http.target.url

    def _generation(self) -> int:
        """The server's generation, if this engine may evaluate on it now."""
        if self._closed:
            raise EngineUnavailable(
                f"the remote engine for revision {self.revision} is closed: "
                "evaluate with the engine that replaced it"
            )
        state = self._state
        if state.revision != self.revision:
            raise EngineUnavailable(self._not_served(state))
        return state.generation

    async def _admit(self) -> int:
        """`_generation()`, after pushing this revision again if the server holds no
        complete revision and this one was the last pushed whole (a failed load that
        could not put it back, a server that lost it)."""
        state = self._state
        if not self._closed and state.revision is None and self._was_last_pushed():
            await self._repush()
        return self._generation()

    def _was_last_pushed(self) -> bool:
        last = self._state.bundle
        return last is not None and last.revision == self.revision

    async def _repush(self) -> None:
        state = self._state
        async with state.lock:
            if state.revision == self.revision:
                return
            if state.revision is not None or not self._was_last_pushed():
                raise EngineUnavailable(self._not_served(state))
            state.begin()
            try:
                await push(self._http, self._bundle, self._bundle)
                await probe(self._http, self._bundle, self._entrypoint)
            except (EngineUnavailable, PolicyError) as exc:
                raise EngineUnavailable(
                    f"OPA at {self.url} does not hold revision {self.revision} and pushing "
                    f"it again failed ({exc.message}): the verdicts are decided again later"
                ) from None
            state.serve(self._bundle, self._entrypoint)
        log.warning("revision %s was pushed to OPA at %s again", self.revision, self.url)

    def _check_generation(self, generation: int) -> None:
        if self._state.generation != generation:
            raise EngineUnavailable(
                f"OPA at {self.url} started loading another revision during this batch: "
                "its results are discarded and the verdicts are decided again"
            )

    def _not_served(self, state: ServerState) -> str:
        if state.revision is None:
            return (
                f"OPA at {self.url} holds no complete revision (one is loading, or the last "
                f"load failed and revision {self.revision} could not be put back): "
                "the verdicts are decided again once a revision is loaded"
            )
        return (
            f"OPA at {self.url} now holds revision {state.revision}, not {self.revision}: "
            "this engine was replaced; the verdicts are decided again with the new one"
        )

    def _evaluation(self, answer: Answer, started_ns: int, start: float) -> Evaluation:
        duration_ms = (time.perf_counter() - start) * 1000
        if answer.error is not None:
            return Evaluation(None, answer.error, duration_ms, started_ns)
        if not answer.defined:
            error = f"data.{self._entrypoint} is undefined for this input"
            return Evaluation(None, error, duration_ms, started_ns)
        return Evaluation(answer.result, None, duration_ms, started_ns)

    async def _evaluate(self, http: OpaHttp, input: dict[str, Any]) -> tuple[Evaluation, bool]:
        """One evaluation, and whether it came back undefined."""
        started_ns, start = time.time_ns(), time.perf_counter()
        try:
            answer = await http.decide(self._path, input)
        except OpaRejected as exc:
            answer = Answer(False, error=f"{exc.code}: {exc.describe()}")
        undefined = not answer.defined and answer.error is None
        return self._evaluation(answer, started_ns, start), undefined

    async def _evaluate_in_slot(self, input: dict[str, Any]) -> tuple[Evaluation, bool]:
        async with self._slots:
            return await self._evaluate(self._http, input)

    async def evaluate_many(self, inputs: Sequence[dict[str, Any]]) -> list[Evaluation]:
        if not inputs:
            return []
        generation = await self._admit()
        self._inflight += 1
        self._idle.clear()
        try:
            tasks = [asyncio.ensure_future(self._evaluate_in_slot(item)) for item in inputs]
            try:
                outcomes = await asyncio.gather(*tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            if any(undefined for _, undefined in outcomes):
                await self._ensure_loaded(generation)
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()
        self._check_generation(generation)
        return [evaluation for evaluation, _ in outcomes]

    async def _ensure_loaded(self, generation: int) -> None:
        """After an undefined decision: if the server lost this revision (OPA keeps
        pushed policies in memory, so a restarted sidecar comes back empty), push it
        again and fail the batch, whose answers came from an empty server."""
        witness = policy_id(self.revision, next(iter(self._bundle.modules), ""))
        if await self._http.has_policy(witness):
            return
        state = self._state
        if state.generation == generation and state.revision == self.revision:
            state.begin()
        await self._repush()
        raise EngineUnavailable(
            f"OPA at {self.url} had lost revision {self.revision} (did it restart?): it was "
            "pushed again; the verdicts of this batch are decided again"
        )

    def evaluate_blocking(
        self, inputs: Inputs, loop: asyncio.AbstractEventLoop
    ) -> Generator[Evaluation, None, None]:
        """On `loop`, whose HTTP session this engine uses: the inputs ready at a time
        all answered, then given."""
        yield from in_rounds(
            inputs,
            lambda ready: asyncio.run_coroutine_threadsafe(
                self.evaluate_many(ready), loop
            ).result(),
        )

    def evaluate_sync(self, input: dict[str, Any]) -> Evaluation:
        """One evaluation on the calling thread, over a short-lived connection of its own
        (the engine's session belongs to its event loop). Benchmarks, probes, explain."""
        generation = self._generation()

        async def once() -> Evaluation:
            http = OpaHttp(self._http.target, concurrency=1)
            try:
                evaluation, _ = await self._evaluate(http, input)
            finally:
                await http.aclose()
            return evaluation

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            evaluation = asyncio.run(once())
        else:  # Called from inside a loop: run ours on a thread rather than nest loops.
            with ThreadPoolExecutor(1, thread_name_prefix="opa-remote-sync") as pool:
                evaluation = pool.submit(asyncio.run, once()).result()
        self._check_generation(generation)
        return evaluation

    async def retire(self) -> None:
        """Take this revision's modules off the server unless it still serves them, then
        close. After a newer revision was loaded there is nothing left to take off (the
        load replaced this one), so this only closes; it does remove leftovers, and it
        takes a revision off a server that moved on without a replacing load."""
        try:
            state = self._state
            if state.revision != self.revision and not self._http.closed:
                async with state.lock:
                    if state.revision != self.revision:
                        prefix = policy_id(self.revision, "")
                        mine = [i for i in await self._http.policy_ids() if i.startswith(prefix)]
                        refused = await settle(mine, self._http.delete_policy)
                        if refused:
                            log.warning(
                                "OPA at %s keeps modules of revision %s: %s",
                                self.url,
                                self.revision,
                                describe_refused(refused),
                            )
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Refuse new work, let the batches in flight finish (up to the request timeout),
        close the HTTP session. The server keeps the revision."""
        self._closed = True
        if self._inflight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self._http.target.timeout)
        await self._http.aclose()

    def close(self) -> None:
        """`aclose()` from any thread (`EngineSlot.swap` closes the old engine on a thread
        of its own): on the engine's loop it is scheduled, from another thread it is run
        there and waited for. A loop that has stopped cannot close its session any more."""
        loop = self._loop
        if self._http.closed or loop.is_closed():
            self._closed = True
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._closing = loop.create_task(self.aclose())
        elif loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self.aclose(), loop)
            try:
                future.result(timeout=self._http.target.timeout + 1)
            except Exception:
                log.warning("closing the OPA client at %s failed", self.url, exc_info=True)
        else:
            self._closed = True
