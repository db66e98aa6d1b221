"""The active policy revision: load, probe, swap; evaluations always see a whole engine."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from controlplane.engine.base import PolicyEngine
from controlplane.engine.bundle import PolicyBundle, load_bundle
from controlplane.engine.embedded import EmbeddedEngine
from controlplane.errors import EngineUnavailable
from controlplane.settings import Settings

ENGINES = ("embedded", "remote")


def load_embedded(policy_dir: Path, entrypoint: str, workers: int) -> EmbeddedEngine:
    """Read the policy dir and build a probed embedded engine for it."""
    return EmbeddedEngine(load_bundle(policy_dir), entrypoint, workers)


async def load_engine(settings: Settings, bundle: PolicyBundle) -> PolicyEngine:
    """Build and probe the engine `TOLLGATE_ENGINE` names for `bundle`, ready to swap in.

    `embedded` builds and probes its OPA engine on a worker thread and starts its
    engine processes (at the first batch with `TOLLGATE_ENGINE_PRESTART=false`).
    `remote` pushes the revision to the OPA server at `TOLLGATE_OPA_URL`, replacing
    the one it held (see
    `controlplane.engine.remote`): call it on the event loop that will evaluate, since
    the engine's HTTP session belongs to that loop. Both raise `PolicyError` for a
    revision that does not load or probe, `EngineUnavailable` for an engine that
    cannot be used (not installed, server unreachable or too slow).
    """
    kind = settings.engine.strip().lower()
    if kind == "embedded":
        return await asyncio.to_thread(_serving, settings, bundle)
    if kind == "remote":
        # Imported here: its HTTP client and OPA library (about 20 MB) are loaded only
        # by a server that evaluates remotely.
        from controlplane.engine.opa_http import OpaTarget
        from controlplane.engine.remote import RemoteEngine

        target = OpaTarget(settings.opa_url, settings.opa_timeout, settings.opa_connect_timeout)
        return await RemoteEngine.load(
            bundle, settings.entrypoint, target, concurrency=settings.engine_workers
        )
    raise EngineUnavailable(
        f"TOLLGATE_ENGINE={settings.engine!r} is not an engine: use one of {', '.join(ENGINES)}"
    )


def _serving(settings: Settings, bundle: PolicyBundle) -> EmbeddedEngine:
    # Its shadow rules read from each module's METADATA (YAML), here rather than in the
    # first batch the revision decides (hundreds of ms on a slow machine).
    bundle.shadow  # noqa: B018
    engine = EmbeddedEngine(bundle, settings.entrypoint, settings.engine_workers)
    if settings.engine_prestart:
        try:
            engine.start()
        except BaseException:
            engine.close()
            raise
    return engine


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
