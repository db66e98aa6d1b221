"""CPython's cycle collector, kept from stopping the decide path.

The collector stops every thread while it walks the objects it tracks. A started
process holds some 200,000 of them for good (modules, classes, the schema, the
engines' bundles, the indexes the decider loads), and a full collection walked them
all about once per batch of 500 verdicts: 120 ms each, a fifth of the decide thread's
time. `settle` moves what is alive once the process has started out of the
collector's reach (`gc.freeze`) and lets the young generation grow before it is
walked: a verdict's inputs, results and rows are freed by reference counting, not by
the collector. A frozen object is still freed when released, unless it is part of a
reference cycle: then it stays, which for the state a process starts with (modules,
the schema, the first revision's engines) costs at most what it held.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

THRESHOLDS = (10_000, 10, 10)
"""Allocations before a young collection (CPython's default: 700, one every few
verdicts), then young collections per older one, as `gc.set_threshold` takes them."""

_settled = False


def settle() -> None:
    """Once per process, when it has started: collect what is garbage already, freeze
    the rest, set `THRESHOLDS`. Later calls (another runtime in the same process, as in
    tests) do nothing: objects they load stay with the collector."""
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    log.debug("heap settled: %d objects frozen", gc.get_freeze_count())
