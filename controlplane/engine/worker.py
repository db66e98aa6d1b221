"""An engine process: one OPA engine evaluating the inputs its server sends it.

Started by `controlplane.engine.processes` as `python -m controlplane.engine.worker`;
speaks length-prefixed frames on its stdin and stdout and nothing else. The first
frame is the revision (a pickled `PolicyBundle` and the entrypoint, from the server
that started it, through a pipe only the two share); the engine is built as every
engine is (`new_engine`: denied builtins refused before anything is evaluated) and
the process answers `ok` or the one-line error. Then each frame is an input's JSON,
handed to the evaluator as it came (never decoded here), and each answer is the
evaluation's start (ns since the epoch), its duration (ns) and the evaluator's own
JSON envelope. The process ends when its stdin closes (its server stopped or died).

An engine process has its own interpreter, so its evaluations never wait for the
server's GIL: in-process, a worker thread back from each native call waited for
the decide thread's Python (about 1.6 ms per evaluation instead of 0.65).
"""

from __future__ import annotations

import ctypes
import json
import os
import pickle
import struct
import sys
import time
from typing import Any, BinaryIO

HEADER = struct.Struct("<I")
"""A frame: its length (4 bytes, little-endian), then its bytes."""
ANSWER = struct.Struct("<IQQ")
"""An answer: its envelope's length, the start (ns since the epoch), the duration (ns)."""


def _read(stream: BinaryIO, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _frame(stream: BinaryIO) -> bytes | None:
    head = _read(stream, HEADER.size)
    if head is None:
        return None
    return _read(stream, HEADER.unpack(head)[0])


def main() -> int:
    source = os.fdopen(0, "rb", buffering=0)
    sink = os.fdopen(1, "wb", buffering=0)
    sys.stdout = sys.stderr  # stdout carries frames only
    spec = _frame(source)
    if spec is None:
        return 0
    from controlplane.engine.sandbox import new_engine

    try:
        bundle, entrypoint, warm = pickle.loads(spec)
        engine = new_engine(bundle)
    except Exception as exc:  # answered to the server, which raises it: nothing is lost
        message = f"error: {exc}".encode(errors="replace")
        sink.write(HEADER.pack(len(message)) + message)
        return 1
    # The evaluator's own entry point, given the input's bytes as they came: decoding
    # and re-encoding them here would only cost time.
    lib, handle = engine._lib, engine._handle
    path = entrypoint.encode()
    if warm is not None:
        # The first evaluation plans the policy's queries: done before `ok`, not in the
        # first batch. Its answer is the server's probe's, which has passed already.
        envelope = _evaluate(lib, handle, path, warm)
        error = json.loads(envelope).get("error")
        if error:
            failed = f"error: the warm-up evaluation failed: {error}"[:1000].encode()
            sink.write(HEADER.pack(len(failed)) + failed)
            return 1
    sink.write(HEADER.pack(2) + b"ok")
    while (given := _frame(source)) is not None:
        started_ns = time.time_ns()
        start = time.perf_counter_ns()
        envelope = _evaluate(lib, handle, path, given)
        duration = time.perf_counter_ns() - start
        sink.write(ANSWER.pack(len(envelope), started_ns, duration) + envelope)
    return 0


def _evaluate(lib: Any, handle: Any, path: bytes, given: bytes) -> bytes:
    """The evaluator's JSON envelope for one input."""
    pointer = lib.OpaEvalDocument(handle, path, given, 0, 0)
    if not pointer:
        return b'{"error":{"code":"internal","message":"native call returned NULL"}}'
    try:
        return ctypes.string_at(pointer)
    finally:
        lib.OpaFreeString(pointer)


if __name__ == "__main__":
    sys.exit(main())
