"""Scoping: a connector holds only the providers, entry types and target kinds its
configuration names, whether changes reach it through the change log or a full
reconcile; an action counts as applied once the connectors that cover it hold it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlmodel import col

from connectors.memory import MemoryConnector
from controlplane.store.models import ActionRow
from tests.support.actions import Planned, plan
from tests.support.app import Running, make_settings, serve
from tests.support.store import fetch

CONNECTORS = [
    {
        "name": "edge-a",
        "type": "memory",
        "providers": ["lab-a"],
        "scope": {"types": ["block"], "target_kinds": ["ip", "cidr"]},
        "reconcile_seconds": 3600,
    },
    {
        "name": "keys",
        "type": "memory",
        "providers": ["*"],
        "scope": {"target_kinds": ["api_key"]},
        "reconcile_seconds": 3600,
    },
]
PLANNED = [
    Planned("block", "ip", "198.51.100.7"),
    Planned("block", "cidr", "198.51.100.0/24"),
    Planned("block", "cidr", "203.0.113.0/24", provider="lab-b"),
    Planned("revoke_key", "api_key", "key_scope_1"),
    Planned("rate_limit", "api_key", "key_scope_2", params={"requests_per_minute": 10}),
    Planned("revoke_key", "account", "acct_scope_1"),
]


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    settings = make_settings(database_url, tmp_path, connectors=CONNECTORS)
    async with serve(settings) as running:
        yield running


def held(api: Running, name: str) -> set[tuple[str, str, str]]:
    connector = api.runtime.enforcer._running[name].connector
    assert isinstance(connector, MemoryConnector)
    return set(connector.entries)


EDGE = {("block", "ip", "198.51.100.7"), ("block", "cidr", "198.51.100.0/24")}
KEYS = {
    ("revoke_key", "api_key", "key_scope_1"),
    ("rate_limit", "api_key", "key_scope_2"),
}


async def test_changes_reach_only_the_connectors_whose_scope_admits_them(api: Running) -> None:
    ids = await plan(api.runtime.db, *PLANNED)
    api.runtime.enforcer.wake()
    await api.runtime.enforcer.settle()

    assert held(api, "edge-a") == EDGE
    assert held(api, "keys") == KEYS
    states = {
        a.id: a.state for a in await fetch(api.runtime.db, ActionRow, col(ActionRow.id).in_(ids))
    }
    # Covered and held: applied. Nobody's to hold (lab-b's block, the account): pending.
    assert [states[i] for i in ids] == [
        "applied",
        "applied",
        "pending",
        "applied",
        "applied",
        "pending",
    ]


async def test_a_full_reconcile_pages_through_the_scoped_desired_state_only(
    api: Running,
) -> None:
    await plan(api.runtime.db, *PLANNED)  # no wake: the reconcile finds them
    edge = await api.runtime.enforcer.reconcile("edge-a")
    keys = await api.runtime.enforcer.reconcile("keys")

    assert (edge.desired, edge.applied, keys.desired, keys.applied) == (2, 2, 2, 2)
    assert held(api, "edge-a") == EDGE
    assert held(api, "keys") == KEYS
