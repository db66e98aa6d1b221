"""An app per test module (per backend), started with the bundled policies."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.app import Running, make_settings, serve


@pytest.fixture(scope="module")
async def api(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    """The API over the module's database; tests use their own ids and subjects."""
    settings = make_settings(module_database_url, tmp_path_factory.mktemp("data"))
    async with serve(settings) as running:
        yield running


@pytest.fixture
async def fresh_api(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    """The API over a database of its own, for tests that need an empty history."""
    settings = make_settings(database_url, tmp_path_factory.mktemp("data"))
    async with serve(settings) as running:
        yield running
