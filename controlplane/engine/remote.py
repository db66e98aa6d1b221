"""The remote engine: a stock OPA server (a sidecar) that Tollgate pushes a revision to
and asks for decisions over its REST API (`controlplane.engine.opa_http` does the HTTP).

A load replaces the server's revision; it does not add one beside it. Policy ids are
namespaced by revision (`tollgate/<revision>/<path>`), but OPA compiles every module it
holds into one policy set, and two revisions of the same packages are not a valid one:
a `default` rule defined twice is a compile error, two values of a complete rule are an
`eval_conflict_error`, and partial rules (`contains`) union, so a rule the new revision
deleted would keep firing. So `RemoteEngine.load` deletes every other `tollgate/...`
module, uploads the data and the modules, and probes. The namespaced ids still pay: the
server's policy list says which revision it holds, a load finds leftovers of any earlier
revision (even of a process that died mid-push), and `retire()` removes one revision.

While a load runs the server holds a mix of two revisions. An engine of the revision
being replaced therefore refuses to evaluate from the moment the load starts (it raises
`EngineUnavailable`: its batch fails, the verdicts stay undecided and the recovery job
decides them again), and discards a batch that was in flight when the load started. A
load that fails (a module OPA refuses, a failed probe, the server going away) puts the
previous revision back, so it keeps deciding. This bookkeeping lives in this process:
run one Tollgate process per OPA server (the sidecar layout); two processes pushing to
one server would replace each other's revisions.

Data: `PUT /v1/data/{path}` replaces the document at the path, and all revisions share
one data tree. Policies read their data by absolute path (`data.tollgate.settings`), so
data cannot be namespaced per revision without rewriting the policies: the data of the
revision the server holds is the data, which is what a replacing load needs anyway. The
bundle's data files are deep-merged as the embedded engine does, then each top-level
document (`data.tollgate`) is uploaded whole, so Tollgate never replaces the root of the
tree (another tenant's documents, OPA's `data.system`). Top-level documents that the
previous revision pushed by this process had and the new one lacks are deleted; one
left by another process is unknown here and stays.

OPA keeps pushed policies in memory only: a sidecar that restarts comes back empty. An
undefined decision therefore makes the engine check that its modules are still there
and, if not, push its revision again (the batch fails and is decided again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from controlplane.engine.base import Evaluation
from controlplane.engine.bundle import PolicyBundle
from controlplane.engine.embedded import PROBE_INPUT
from controlplane.engine.opa_http import Answer, OpaHttp, OpaRejected, OpaTarget
from controlplane.errors import EngineUnavailable, PolicyError

log = logging.getLogger(__name__)

POLICY_ROOT = "tollgate"
"""Every module Tollgate pushes has an id under this prefix; others are left alone."""


def policy_id(revision: str, path: str) -> str:
    """`tollgate/<revision>/<path relative to the policy dir>`."""
    return f"{POLICY_ROOT}/{revision}/{path}"


@dataclass
class ServerState:
    """What this process last pushed to one OPA server."""

    revision: str | None = None
    """The revision the server holds whole and probed; None while a push runs, or
    after a push that failed and could not put the previous revision back."""
    bundle: PolicyBundle | None = None
    """The last revision pushed whole: what a failed load puts back."""
    entrypoint: str = ""
    generation: int = 0
    """Bumped when a push starts and ends: a batch that saw it change is discarded."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One push at a time per server."""

    def begin(self) -> None:
        self.revision = None
        self.generation += 1

    def serve(self, bundle: PolicyBundle, entrypoint: str) -> None:
        self.revision, self.bundle, self.entrypoint = bundle.revision, bundle, entrypoint
        self.generation += 1


_servers: dict[str, ServerState] = {}
_servers_lock = threading.Lock()


def server_state(url: str) -> ServerState:
    """The process's record of the OPA server at `url`."""
    with _servers_lock:
        return _servers.setdefault(url.rstrip("/"), ServerState())


def merged_data(bundle: PolicyBundle) -> dict[str, Any]:
    """The bundle's data files deep-merged into one tree, as the embedded engine's
    `add_data` does; a conflict is a `PolicyError` here as it is there."""
    tree: dict[str, Any] = {}
    for dotted, document in bundle.data:
        where = f"data.{dotted}" if dotted else "data"
        node: Any = tree
        keys = [key for key in dotted.split(".") if key]
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise PolicyError(f"data file mounted at {where}: {key} is not an object")
        if not keys:
            if not isinstance(document, dict):
                raise PolicyError(f"data file mounted at {where}: the root must be an object")
            _merge_into(tree, document, where)
        elif isinstance(node.get(keys[-1]), dict) and isinstance(document, dict):
            _merge_into(node[keys[-1]], document, where)
        elif keys[-1] in node:
            raise PolicyError(f"data file mounted at {where}: conflicts with another data file")
        else:
            node[keys[-1]] = document
    for key, value in tree.items():
        if not isinstance(value, dict):
            raise PolicyError(
                f"data.{key} is not an object: the remote engine uploads each top-level "
                "data document as a JSON object (opa-python-client accepts no other); "
                "move the value under a key"
            )
    return tree


def _merge_into(target: dict[str, Any], source: dict[str, Any], where: str) -> None:
    for key, value in source.items():
        if isinstance(target.get(key), dict) and isinstance(value, dict):
            _merge_into(target[key], value, where)
        elif key in target:
            raise PolicyError(f"data file mounted at {where}: {key} conflicts with other data")
        else:
            target[key] = value


async def settle(
    items: Sequence[str], apply: Callable[[str], Awaitable[None]]
) -> dict[str, OpaRejected]:
    """Apply `apply` to every item, in rounds, and return what OPA still refuses.

    OPA compiles the whole policy set on every PUT and DELETE, so a module that calls a
    function of a module not uploaded yet is refused until that one is, and a module
    another one calls cannot be deleted before it. Rounds find that order without
    parsing Rego; they stop when one makes no progress (at most n rounds)."""
    pending = list(items)
    while pending:
        refused: dict[str, OpaRejected] = {}
        for item in pending:
            try:
                await apply(item)
            except OpaRejected as exc:
                refused[item] = exc
        if len(refused) == len(pending):
            return refused
        pending = list(refused)
    return {}


async def push(http: OpaHttp, bundle: PolicyBundle, previous: PolicyBundle | None) -> None:
    """Make the server hold `bundle` and nothing else under `tollgate/` (module docstring)."""
    url = http.target.url
    ours = {policy_id(bundle.revision, path): path for path in bundle.modules}
    held = await http.policy_ids()
    stale = [i for i in held if i.startswith(POLICY_ROOT + "/") and i not in ours]
    refused = await settle(stale, http.delete_policy)
    if refused:
        raise EngineUnavailable(
            f"OPA at {url} refuses to delete modules of an earlier revision, which other "
            f"modules on the server still use: {_describe(refused)}. Delete them by hand "
            "(DELETE /v1/policies/<id>) and load again"
        )
    documents = merged_data(bundle)
    if previous is not None:
        for key in sorted(merged_data(previous).keys() - documents.keys()):
            await http.delete_data(key)
    for key, document in documents.items():
        try:
            await http.put_data(key, document)
        except OpaRejected as exc:
            raise PolicyError(
                f"OPA at {url} refused the data of {bundle.root} at data.{key}: {exc.describe()}"
            ) from None
    refused = await settle(list(ours), lambda i: http.put_policy(i, bundle.modules[ours[i]]))
    if refused:
        files = "; ".join(f"{bundle.root / ours[i]}: {e.describe()}" for i, e in refused.items())
        raise PolicyError(
            f"OPA at {url} refused revision {bundle.revision}: {files}. Fix the modules "
            "(`tollgate policy check` compiles them the same way)",
            details=[{"field": ours[i], "message": exc.describe()} for i, exc in refused.items()],
        )


def _describe(refused: dict[str, OpaRejected]) -> str:
    return "; ".join(f"{i}: {exc.describe()}" for i, exc in refused.items())


async def probe(http: OpaHttp, bundle: PolicyBundle, entrypoint: str) -> None:
    """Evaluate `PROBE_INPUT`: an undefined entrypoint or an error fails the load."""
    url = http.target.url
    try:
        answer = await http.decide(entrypoint.replace(".", "/"), PROBE_INPUT)
    except OpaRejected as exc:
        raise PolicyError(f"OPA at {url} refused the probe evaluation: {exc.describe()}") from None
    if answer.error is not None:
        raise PolicyError(f"policy failed its probe evaluation on OPA at {url}: {answer.error}")
    if not answer.defined:
        raise PolicyError(
            f"entrypoint data.{entrypoint} is undefined on OPA at {url} with the policies "
            f"of {bundle.root}: check TOLLGATE_ENTRYPOINT and the package name of your "
            "decision policy"
        )


async def restore(http: OpaHttp, state: ServerState, failed: PolicyBundle) -> None:
    """Put the previous revision back after `failed` could not be loaded."""
    previous = state.bundle
    if previous is None:
        return  # Nothing decided from this server yet; the next load replaces what is there.
    try:
        await push(http, previous, failed)
        await probe(http, previous, state.entrypoint)
    except (EngineUnavailable, PolicyError) as exc:
        log.error(
            "revision %s could not be put back on OPA at %s after revision %s failed: %s",
            previous.revision,
            http.target.url,
            failed.revision,
            exc.message,
        )
        return
    state.serve(previous, state.entrypoint)
    log.warning(
        "revision %s is back on OPA at %s: revision %s failed to load",
        previous.revision,
        http.target.url,
        failed.revision,
    )


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
        """Push `bundle` to the server at `target`, replacing its revision, and probe it."""
        entrypoint = entrypoint.removeprefix("data.")
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
                                _describe(refused),
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
            with contextlib.suppress(Exception):
                future.result(timeout=self._http.target.timeout + 1)
        else:
            self._closed = True
