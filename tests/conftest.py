"""Fixtures for the whole suite: databases on SQLite and on a real PostgreSQL, and spans.

`database_url` gives each test a fresh, migrated database; `module_database_url`
gives one per test module (cheaper: tests that share it use their own verdict ids,
subjects and providers). Both are parametrized `sqlite` / `postgresql`.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controlplane.engine.bundle import PolicyBundle, content_revision
from controlplane.policy import service as policy_service
from controlplane.telemetry.tracing import configure
from tests.support.databases import URL_ENV, PostgresServer, fresh_database, postgres_server

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="session", autouse=True)
def hermetic_settings() -> Iterator[None]:
    """Tests pass every setting they rely on; `TOLLGATE_*` variables of the shell that runs
    them (a developer's server settings) must not leak into the apps they start."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("TOLLGATE_") and name != URL_ENV:
                patch.delenv(name)
        yield


@pytest.fixture(autouse=True)
def root_logging_restored() -> Iterator[None]:
    """A test that runs a command the way `tollgate` does (`configure_logging`) replaces
    the root logger's handlers with one writing to the stream captured at that moment.
    Left in place, every later record (a library's cleanup thread logging at exit
    among them) was written to a closed capture: '--- Logging error ---' tracebacks
    after the test summary. The root logger is put back after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session", autouse=True)
def gate_each_content_once() -> Iterator[None]:
    """Gating a revision (its check and its Rego tests, seconds) is a function of its
    modules, data and entrypoint alone. Every app a test starts in this process on a
    fresh database gates the same policies again, so the outcome is kept per content:
    each distinct revision is still gated for real, once."""
    real = policy_service.gate
    outcomes: dict[tuple[str, str], tuple[list[str], dict[str, Any]]] = {}

    def gate(bundle: PolicyBundle, entrypoint: str) -> tuple[list[str], dict[str, Any]]:
        key = (content_revision(bundle.modules, bundle.data), entrypoint)
        if key not in outcomes:
            outcomes[key] = real(bundle, entrypoint)
        return copy.deepcopy(outcomes[key])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(policy_service, "gate", gate)
        yield


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """The session's PostgreSQL server; started only when a test needs it."""
    with postgres_server(tmp_path_factory.mktemp("postgres")) as server:
        yield server


def _server(request: pytest.FixtureRequest, backend: str) -> PostgresServer | None:
    if backend != "postgresql":
        return None
    server: PostgresServer = request.getfixturevalue("postgres")
    return server


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    directory = tmp_path_factory.mktemp("db")
    with fresh_database(request.param, directory, _server(request, request.param)) as url:
        yield url


@pytest.fixture(scope="module", params=BACKENDS)
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh, migrated database shared by the tests of one module."""
    directory = tmp_path_factory.mktemp("db")
    with fresh_database(request.param, directory, _server(request, request.param)) as url:
        yield url


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans finished during the test. The processor is added to Tollgate's provider and
    shut down afterwards (the SDK cannot remove a processor), so it records nothing later."""
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    configure().add_span_processor(processor)
    try:
        yield exporter
    finally:
        processor.shutdown()
