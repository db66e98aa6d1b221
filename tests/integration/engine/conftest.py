"""Engines under test: the embedded one, and the remote one against the OPA test server
(`tests/support/opa_server.py`, which emulates OPA's REST API: no OPA binary runs here).

`load` builds an engine through `load_engine`, the function the server calls, so the
contract tests cover the `TOLLGATE_ENGINE` switch too; engines are closed afterwards.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controlplane.engine.base import PolicyEngine
from controlplane.engine.bundle import PolicyBundle
from controlplane.engine.remote import RemoteEngine
from controlplane.engine.runtime import load_engine
from controlplane.settings import Settings
from controlplane.telemetry.tracing import configure
from tests.support.opa_server import OpaTestServer, opa_test_server

ENGINES = [pytest.param("embedded", id="embedded"), pytest.param("remote", id="remote")]

Loader = Callable[..., Awaitable[PolicyEngine]]
"""`await loader(kind, bundle, **settings)`."""


def make_bundle(
    modules: dict[str, str],
    data: list[tuple[str, Any]] | None = None,
    root: Path = Path("/policies"),
) -> PolicyBundle:
    """A bundle whose revision is a hash of its content, so two bundles never share one."""
    content = json.dumps([sorted(modules.items()), data or []], sort_keys=True).encode()
    revision = "test-" + hashlib.sha256(content).hexdigest()[:12]
    return PolicyBundle(root=root, revision=revision, modules=modules, data=data or [])


def engine_settings(kind: str, opa_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "engine": kind,
        "opa_url": opa_url,
        "opa_timeout": 2.0,
        "opa_connect_timeout": 0.5,
        "engine_workers": 4,
        "entrypoint": "tollgate.decision",
        "otlp_endpoint": "",
    }
    values.update(overrides)
    return Settings(**values)


async def close(engine: PolicyEngine) -> None:
    if isinstance(engine, RemoteEngine):
        await engine.aclose()
    else:
        engine.close()


@pytest.fixture(scope="module")
def opa_server() -> Iterator[OpaTestServer]:
    """One OPA test server per module; each load replaces what the last one pushed."""
    with opa_test_server() as server:
        yield server


@pytest.fixture
def server(opa_server: OpaTestServer) -> Iterator[OpaTestServer]:
    """The module's server with no recorded requests, faults or delay."""
    opa_server.clear()
    yield opa_server
    opa_server.clear()


@pytest.fixture
async def loader(server: OpaTestServer) -> AsyncIterator[Loader]:
    """`await loader(kind, bundle, **settings)`: an engine of that kind, closed afterwards."""
    loaded: list[PolicyEngine] = []

    async def load(kind: str, bundle: PolicyBundle, **overrides: Any) -> PolicyEngine:
        overrides.setdefault("opa_url", server.url)
        engine = await load_engine(engine_settings(kind, **overrides), bundle)
        loaded.append(engine)
        return engine

    yield load
    for engine in loaded:
        await close(engine)


@pytest.fixture
def client_spans() -> Iterator[InMemorySpanExporter]:
    """Spans finished during the test, from Tollgate's tracer provider."""
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    configure().add_span_processor(processor)
    try:
        yield exporter
    finally:
        processor.shutdown()
