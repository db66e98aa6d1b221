"""Engine processes: a revision evaluated in child processes, one OPA engine each.

In one process, an engine's native call releases the GIL but each evaluation takes
it back twice (to encode the input, to read the result); while the decide thread
runs Python, every take waits out a switch interval, and an evaluation took 1.6 ms
instead of 0.65. An engine process has its own interpreter: the server encodes
each input once, writes it to a pipe and reads the answer; the evaluator never
waits for the server's Python.

The caller's thread does all the pipe work itself (no thread of ours takes the
GIL): it writes each input as it is built, to the process with the fewest
waiting, reads whatever answers are ready meanwhile, then gives the evaluations
in order, each as soon as it is read. A process that exits (killed, crashed)
hands its inputs to the others and is replaced at the next call. The input it was
evaluating may be what killed it: when a second process exits under the same input,
that input fails, as an evaluation error (its provider's fallback is planned: an
input that kills engines never passes untouched, nor takes them all down).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import os
import pickle
import selectors
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from controlplane.engine.base import NOT_YET, Evaluation
from controlplane.engine.bundle import PolicyBundle
from controlplane.engine.worker import ANSWER, HEADER
from controlplane.errors import EngineUnavailable, PolicyError
from controlplane.telemetry import metrics

log = logging.getLogger(__name__)

READY_SECONDS = 60.0
"""How long a new process may take to load a revision before it counts as failed."""
PIPE_BYTES = 1 << 20
"""Pipe capacity asked for (Linux; the default is 64 KiB): a wave's inputs and answers
flow without the caller having to read between writes."""
KILLS_TO_FAIL = 2
"""Processes an input may be under way on when they exit before it fails."""
_F_SETPIPE_SZ = 1031


_encode = msgspec.json.Encoder().encode
"""An input's JSON as the evaluator takes it: UTF-8, non-ASCII as is (several times
faster than `json.dumps`). A lone surrogate (which Go would turn into U+FFFD, making
two inputs alike) raises `UnicodeEncodeError`, as with the in-process engine."""
_decode = msgspec.json.Decoder().decode
_END: Any = object()


def parse(envelope: bytes, entrypoint: str, started_ns: int, duration_ns: int) -> Evaluation:
    """The evaluation an evaluator's envelope holds: the entrypoint's value, or the
    error that stopped it (as the in-process engine words it)."""
    duration_ms = duration_ns / 1e6
    try:
        body = _decode(envelope)
    except msgspec.DecodeError as exc:
        return Evaluation(None, f"internal: unreadable answer from the engine: {exc}", duration_ms)
    error = body.get("error")
    if error:
        return Evaluation(
            None,
            f"{error.get('code', 'unknown')}: {error.get('message', '')}",
            duration_ms,
            started_ns,
        )
    for printed in body.get("prints") or []:
        log.info("policy print at %s: %s", printed.get("location"), printed.get("message"))
    rows = body.get("result")
    if not rows or not rows[0].get("expressions"):
        undefined = f"data.{entrypoint} is undefined for this input"
        return Evaluation(None, undefined, duration_ms, started_ns)
    return Evaluation(rows[0]["expressions"][0]["value"], None, duration_ms, started_ns)


@dataclass
class _Process:
    process: subprocess.Popen[bytes]
    waiting: collections.deque[tuple[int, bytes, int]] = field(default_factory=collections.deque)
    """(index, frame, processes it was under way on before) of each input written and
    not answered yet, in order."""
    unsent: bytearray = field(default_factory=bytearray)
    received: bytearray = field(default_factory=bytearray)
    answered: int = 0

    @property
    def stdin(self) -> int:
        assert self.process.stdin is not None
        return self.process.stdin.fileno()

    @property
    def stdout(self) -> int:
        assert self.process.stdout is not None
        return self.process.stdout.fileno()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


class EngineProcesses:
    """`count` engine processes holding one revision, started by `start` or at the first
    call, each having evaluated `warm` (if given) before it counts as started: an
    engine's first evaluation plans the policy's queries (~130 ms), which the first
    batch would otherwise wait for. One caller at a time (others wait): each call has
    every process to itself."""

    def __init__(
        self,
        bundle: PolicyBundle,
        entrypoint: str,
        count: int,
        warm: dict[str, Any] | None = None,
    ) -> None:
        self._spec = pickle.dumps((bundle, entrypoint, _encode(warm) if warm else None))
        self._entrypoint = entrypoint
        self._count = count
        self._processes: list[_Process] = []
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        """Start the processes now rather than at the first call."""
        with self._lock:
            if self._closed:
                raise EngineUnavailable("this policy revision's engine is closed")
            self._start()

    def evaluate(self, inputs: Iterable[dict[str, Any] | None], count: int) -> Iterator[Evaluation]:
        """Each of `count` inputs' evaluation, in the order given, each as soon as it is
        read. `inputs` is iterated once, as far as needed: each input is written as it
        is built (a lazy collection is built as the processes evaluate the first
        inputs); on `NOT_YET` the next evaluation due is given before more are asked."""
        with self._lock:
            if self._closed:
                raise EngineUnavailable("this policy revision's engine is closed")
            self._start()
            run = _Run(self, count)
            given = iter(inputs)
            try:
                for index in range(count):
                    while run.sent < count:
                        one = next(given, _END)
                        if one is _END:
                            raise ValueError(f"{run.sent} inputs given for {count}")
                        if one is NOT_YET:
                            break
                        run.send(run.sent, one)
                    if index >= run.sent:
                        raise ValueError(
                            f"no input ready and none under way, after {index} of {count}"
                        )
                    yield run.result(index)
            finally:
                run.close()

    def answered(self) -> list[int]:
        """How many inputs each live process answered."""
        with self._lock:
            return [p.answered for p in self._processes]

    def pids(self) -> list[int]:
        """The live processes' ids."""
        with self._lock:
            return [p.process.pid for p in self._processes]

    def close(self) -> None:
        """Stop the processes (after the call under way, if any)."""
        with self._lock:
            self._closed = True
            for process in self._processes:
                process.close()
            self._processes.clear()

    def _start(self) -> None:
        """Replace the processes that exited; start them all at once, then wait for each."""
        alive = []
        for process in self._processes:
            if process.process.poll() is None:
                alive.append(process)
            else:
                process.close()
        started = [self._spawn() for _ in range(self._count - len(alive))]
        try:
            for process in started:
                self._ready(process)
        except BaseException:
            for process in started:
                process.close()
            raise
        self._processes = alive + started

    def _spawn(self) -> _Process:
        try:
            child = subprocess.Popen(
                [sys.executable, "-m", "controlplane.engine.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                bufsize=0,
            )
        except OSError as exc:
            raise EngineUnavailable(f"cannot start an engine process: {exc}") from None
        process = _Process(child)
        for fd in (process.stdin, process.stdout):
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)
        process.unsent += HEADER.pack(len(self._spec)) + self._spec
        return process

    def _ready(self, process: _Process) -> None:
        """Write the revision, then read the process's `ok` (or why it could not load)."""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            view = memoryview(bytes(process.unsent))
            process.unsent.clear()
            while view:
                try:
                    view = view[os.write(process.stdin, view) :]
                except BrokenPipeError:
                    break
            answer = bytearray()
            while (
                len(answer) < HEADER.size
                or len(answer) < HEADER.size + HEADER.unpack_from(answer)[0]
            ):
                if not selector.select(READY_SECONDS):
                    raise EngineUnavailable(
                        f"an engine process did not load the revision in {READY_SECONDS:.0f} s"
                    )
                chunk = os.read(process.stdout, 1 << 16)
                if not chunk:
                    code = process.process.wait()
                    raise EngineUnavailable(
                        f"an engine process exited (status {code}) while loading the revision; "
                        "its error is in the server's log"
                    )
                answer += chunk
        message = bytes(answer[HEADER.size :]).decode(errors="replace")
        if message != "ok":
            raise PolicyError(f"an engine process refused the revision: {message}")
        os.set_blocking(process.stdin, False)
        os.set_blocking(process.stdout, False)


class _Run:
    """One call's inputs through the processes: each input written as it comes (to the
    process with the fewest waiting), answers read as they are ready, a wait on the
    pipes only when the answer due next is not in."""

    def __init__(self, pool: EngineProcesses, count: int) -> None:
        self._pool = pool
        self._results: list[Evaluation | None] = [None] * count
        self._selector = selectors.DefaultSelector()
        self._writing: set[int] = set()
        """The stdin of each process with bytes unsent (watched for room)."""
        for process in self._processes:
            self._selector.register(process.stdout, selectors.EVENT_READ, process)
        self.sent = 0

    @property
    def _processes(self) -> list[_Process]:
        return self._pool._processes

    def send(self, index: int, given: dict[str, Any]) -> None:
        self.sent += 1
        try:
            body = _encode(given)
        except (UnicodeEncodeError, TypeError, ValueError, msgspec.EncodeError) as exc:
            error = f"invalid_argument: input is not JSON: {exc}"
            self._results[index] = Evaluation(None, error, 0)
            return
        # What is answered already first (never waits): the input goes to the process
        # with the fewest really waiting.
        for process in list(self._processes):
            if process.waiting and process in self._processes:
                self._read(process)
        self._queue(index, HEADER.pack(len(body)) + body, 0)

    def result(self, index: int) -> Evaluation:
        while (found := self._results[index]) is None:
            self._wait()
        return found

    def close(self) -> None:
        """Read every answer still due (a caller that stopped early leaves no answer
        behind for the next call to mistake for its own)."""
        try:
            while any(p.waiting for p in self._processes):
                self._wait()
        finally:
            self._selector.close()

    def _queue(self, index: int, frame: bytes, tries: int) -> None:
        if not self._processes:
            self._pool._start()
            for process in self._processes:
                self._selector.register(process.stdout, selectors.EVENT_READ, process)
        process = min(self._processes, key=lambda p: len(p.waiting))
        process.waiting.append((index, frame, tries))
        process.unsent += frame
        self._write(process)

    def _wait(self) -> None:
        """Wait for an answer (or room in a pipe), then take it."""
        for key, _ in self._selector.select():
            process = key.data
            if process not in self._processes:
                continue  # exited earlier in this loop
            if key.fd == process.stdin:
                self._write(process)
            else:
                self._read(process)

    def _write(self, process: _Process) -> None:
        try:
            written = os.write(process.stdin, process.unsent)
        except BlockingIOError:
            written = 0
        except BrokenPipeError:
            self._exited(process)
            return
        del process.unsent[:written]
        if process.unsent and process.stdin not in self._writing:
            self._selector.register(process.stdin, selectors.EVENT_WRITE, process)
            self._writing.add(process.stdin)
        elif not process.unsent and process.stdin in self._writing:
            self._selector.unregister(process.stdin)
            self._writing.discard(process.stdin)

    def _read(self, process: _Process) -> None:
        try:
            chunk = os.read(process.stdout, 1 << 20)
        except BlockingIOError:
            return
        if not chunk:
            self._exited(process)
            return
        buffer = process.received
        buffer += chunk
        while len(buffer) >= ANSWER.size:
            size, started_ns, duration_ns = ANSWER.unpack_from(buffer)
            if len(buffer) < ANSWER.size + size:
                break
            envelope = bytes(buffer[ANSWER.size : ANSWER.size + size])
            del buffer[: ANSWER.size + size]
            index, _, _ = process.waiting.popleft()
            process.answered += 1
            self._results[index] = parse(envelope, self._pool._entrypoint, started_ns, duration_ns)

    def _exited(self, process: _Process) -> None:
        """The process is gone: its inputs go to the others. The one it was evaluating
        may have killed it: on a second process gone under it, it fails (as an
        evaluation error: its provider's fallback is planned), so one input never
        takes every engine down, while an input under way when a process was killed for
        another reason is evaluated again."""
        self._processes.remove(process)
        self._selector.unregister(process.stdout)
        if process.stdin in self._writing:
            self._selector.unregister(process.stdin)
            self._writing.discard(process.stdin)
        code = process.process.wait()
        process.close()
        log.error("an engine process exited (status %s); it is replaced at the next batch", code)
        metrics.engine_process_exited()
        for position, (index, frame, tries) in enumerate(process.waiting):
            if position == 0 and tries + 1 >= KILLS_TO_FAIL:
                error = (
                    f"internal: {KILLS_TO_FAIL} engine processes exited (the last with status "
                    f"{code}) while evaluating this input"
                )
                self._results[index] = Evaluation(None, error, 0)
            else:
                self._queue(index, frame, tries + 1 if position == 0 else tries)
