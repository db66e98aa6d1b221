"""The active policy revision: load, probe, swap; evaluations always see a whole engine."""

from __future__ import annotations

import threading
from pathlib import Path

from controlplane.engine.base import PolicyEngine
from controlplane.engine.bundle import load_bundle
from controlplane.engine.embedded import EmbeddedEngine
from controlplane.errors import EngineUnavailable


def load_embedded(policy_dir: Path, entrypoint: str, workers: int) -> EmbeddedEngine:
    """Read the policy dir and build a probed embedded engine for it."""
    return EmbeddedEngine(load_bundle(policy_dir), entrypoint, workers)


class EngineSlot:
    """Holds the engine decisions are made with. A new revision is built and probed
    by the caller, then swapped in; the old engine finishes its queued work and closes."""

    def __init__(self, engine: PolicyEngine | None = None) -> None:
        self._engine = engine
        self._lock = threading.Lock()

    @property
    def current(self) -> PolicyEngine:
        engine = self._engine
        if engine is None:
            raise EngineUnavailable("no policy revision is loaded yet; the server is starting")
        return engine

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def swap(self, engine: PolicyEngine) -> None:
        with self._lock:
            old, self._engine = self._engine, engine
        if old is not None and old is not engine:
            # Work already handed to the old engine's threads completes before it closes.
            threading.Thread(target=old.close, name="engine-retire", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
