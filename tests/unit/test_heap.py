"""The heap is settled once per process: what is alive then is frozen out of the
cycle collector, young collections come less often, and a second runtime in the same
process leaves the collector as the first one set it."""

from __future__ import annotations

import json
import subprocess
import sys

from controlplane import heap

PROBE = """
import gc, json
from controlplane import heap

long_lived = [[i] for i in range(50_000)]  # lists: always tracked
before = gc.get_freeze_count()
heap.settle()
first = gc.get_freeze_count()
later = [[i] for i in range(1_000)]
heap.settle()
print(json.dumps({
    "before": before,
    "first": first,
    "second": gc.get_freeze_count(),
    "thresholds": gc.get_threshold(),
}))
"""


def test_settle_freezes_what_is_alive_once_and_sets_the_thresholds() -> None:
    # In a process of its own: freezing is process-wide.
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    seen = json.loads(done.stdout)
    assert seen["before"] == 0
    assert seen["first"] >= 50_000  # the long-lived lists are out of the collector's reach
    assert seen["second"] == seen["first"]  # the second call froze nothing more
    assert tuple(seen["thresholds"]) == heap.THRESHOLDS
    assert heap.THRESHOLDS[0] > 700  # fewer young collections than CPython's default
