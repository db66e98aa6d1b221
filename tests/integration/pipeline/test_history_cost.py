"""A group's database work does not grow with history.

The decide thread's SQLite virtual-machine instructions for one group are counted on a
new database, then again after tens of thousands of rows of unrelated history in every
table a group reads (verdicts, decisions, actions, sightings, lifts, appeals,
exemptions, customers). Every lookup is asked by the batch's own subjects, so the
count stays put; a lookup that the planner answers by provider alone (or any other
scan) costs instructions for every row of history, and fails here long before it
shows up as latency. Counted, not timed: the figure is the same on a busy machine.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, insert
from sqlalchemy.engine import Connection

from controlplane.store.db import sync_url, upgrade
from controlplane.store.models import (
    ActionRow,
    AppealRow,
    CustomerRow,
    DecisionRow,
    ExemptionRow,
    LiftRow,
    SightingRow,
    SightingTallyRow,
    VerdictRow,
)
from tests.support.app import Running, make_settings, serve
from tests.support.databases import fresh_database, sqlite_url
from tests.support.verdicts import verdict

HISTORY = 40_000
"""Rows of history per table (actions, lifts, appeals and exemptions: a quarter)."""
STEP = 100
"""The progress handler runs every STEP instructions."""
GROUP = 8


@contextmanager
def counted(running: Running) -> Iterator[list[int]]:
    """Count the VM instructions the decide thread runs (in units of STEP)."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    def on_execute(conn: Connection, *_: Any) -> None:
        if threading.current_thread().name.startswith("tollgate-decide"):
            raw = conn.connection.dbapi_connection
            assert isinstance(raw, sqlite3.Connection)
            raw.set_progress_handler(tick, STEP)

    engine = running.runtime.db.blocking
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield steps
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


def group(tag: str) -> list[dict[str, Any]]:
    """GROUP verdicts on new subjects, some sharing an org and a network."""
    return [
        verdict(
            id=f"cost-{tag}-{i}",
            subject={
                "account_id": f"acct_cost_{tag}_{i}",
                "api_key_id": f"key_cost_{tag}_{i}",
                "org_id": f"org_cost_{tag}_{i % 3}",
                "ips": [f"198.51.100.{10 + i}"],
            },
            score=0.5 + i / 40,
        )
        for i in range(GROUP)
    ]


def verdict_row(
    verdict_id: str, account: str, key: str, org: str, observed: datetime
) -> dict[str, Any]:
    """A stored verdict of provider lab-a, received when it was observed."""
    return {
        "id": verdict_id,
        "provider": "lab-a",
        "detector_name": "history",
        "detector_version": "1",
        "account_id": account,
        "api_key_id": key,
        "org_id": org,
        "score": 0.6,
        "confidence": 0.8,
        "observed_at": observed,
        "received_at": observed,
        "body": {},
        "content_hash": "0" * 64,
        "status": "decided",
    }


def seed_history(url: str, rows: int) -> None:
    """`rows` verdicts with their decisions and sightings, a quarter as many actions,
    lifts, appeals, exemptions and customers: all of provider lab-a, none on the
    subjects the measured groups use."""
    now = datetime.now(UTC)
    engine = create_engine(sync_url(url))
    quarter = range(0, rows, 4)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(VerdictRow),
                [
                    verdict_row(
                        f"hist-v{i}",
                        f"acct_hist_{i % 9000}",
                        f"key_hist_{i % 11000}",
                        f"org_hist_{i % 700}",
                        now - timedelta(minutes=i % 600),
                    )
                    for i in range(rows)
                ],
            )
            conn.execute(
                insert(DecisionRow),
                [
                    {
                        "id": f"hist-d{i}",
                        "verdict_id": f"hist-v{i}",
                        "provider": "lab-a",
                        "policy_revision": "history",
                        "entrypoint": "tollgate.decision",
                        "engine": "history",
                        "status": "ok",
                        "input": {},
                        "result": {},
                        "duration_ms": 0.0,
                        "decided_at": now,
                    }
                    for i in range(rows)
                ],
            )
            conn.execute(
                insert(SightingRow),
                [
                    {
                        "provider": "lab-a",
                        "scope": "account" if i % 2 else "org",
                        "scope_id": f"acct_hist_{i % 9000}" if i % 2 else f"org_hist_{i % 700}",
                        "kind": ("network", "api_key", "account")[i % 3],
                        "value": f"hist-{i}"
                        if i % 3
                        else f"10.{i // 65536 % 256}.{i // 256 % 256}.0/24",
                        "first_seen": now,
                        "last_seen": now,
                    }
                    for i in range(rows)
                ],
            )
            conn.execute(
                insert(ActionRow),
                [
                    {
                        "id": f"hist-a{i}",
                        "decision_id": f"hist-d{i}",
                        "verdict_id": f"hist-v{i}",
                        "provider": "lab-a",
                        "type": "revoke_key",
                        "target_kind": "api_key",
                        "target_value": f"key_hist_{i % 11000}",
                        "params": {},
                        "ttl_seconds": 86400.0,
                        "expires_at": now + timedelta(days=1),
                        "rule": "history",
                        "reason": "history",
                        "state": "applied" if i % 8 else "lifted",
                        "shadow": False,
                        "policy_revision": "history",
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in quarter
                ],
            )
            conn.execute(
                insert(LiftRow),
                [
                    {
                        "id": f"hist-l{i}",
                        "action_id": f"hist-a{i}",
                        "provider": "lab-a",
                        "type": "revoke_key",
                        "target_kind": "api_key",
                        "target_value": f"key_hist_{i % 11000}",
                        "rule": "history",
                        "score": 0.6,
                        "cause": "lifted",
                        "actor": "history",
                        "reason": "history",
                        "at": now - timedelta(hours=1),
                    }
                    for i in quarter
                ],
            )
            conn.execute(
                insert(AppealRow),
                [
                    {
                        "id": f"hist-p{i}",
                        "provider": "lab-a",
                        "subject_kind": "account",
                        "subject_value": f"acct_hist_{i % 9000}",
                        "statement": "history",
                        "contact": "history@example.com",
                        "state": "pending" if i % 2 else "denied",
                        "filed_by": "history",
                        "filed_at": now - timedelta(hours=1),
                    }
                    for i in quarter
                ],
            )
            conn.execute(
                insert(ExemptionRow),
                [
                    {
                        "id": f"hist-e{i}",
                        "provider": "lab-a",
                        "subject_kind": "account",
                        "subject_value": f"acct_hist_{i}",
                        "owner": "history",
                        "reason": "history",
                        "expires_at": now + timedelta(days=1),
                        "created_at": now,
                    }
                    for i in quarter
                ],
            )
            conn.execute(
                insert(CustomerRow),
                [
                    {
                        "account_id": f"acct_hist_{i}",
                        "org_id": f"org_hist_{i % 700}",
                        "tier": "enterprise",
                        "verified": True,
                        "keys": [],
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in quarter
                ],
            )
    finally:
        engine.dispose()


async def group_costs(
    tmp_path: Path,
    seed: Callable[[str], None],
    check: Callable[[Running, dict[str, Any]], Awaitable[None]] | None = None,
) -> tuple[int, int]:
    """SQLite instructions (in units of STEP) of the decide thread for a group, then for
    a like group after `seed(url)` added history (`check` is given the second group's
    answer)."""
    with fresh_database("sqlite", tmp_path / "db", None) as url:
        (tmp_path / "data").mkdir()
        settings = make_settings(url, tmp_path / "data")
        async with serve(settings) as running:
            await running.submit({"verdicts": group("warm")})  # statements compiled
            with counted(running) as before:
                await running.submit({"verdicts": group("before")})
            seed(url)
            with counted(running) as after:
                answer = await running.submit({"verdicts": group("after")})
            if check is not None:
                await check(running, answer)
    assert before[0] > 0, "the decide thread ran no SQLite instructions: nothing counted"
    return before[0], after[0]


async def test_a_groups_database_work_does_not_grow_with_history(tmp_path: Path) -> None:
    before, after = await group_costs(tmp_path, lambda url: seed_history(url, HISTORY))
    # The groups are alike; a lookup that scans history costs a step per row of it
    # (HISTORY rows: HISTORY / STEP = 400 units per scanned table).
    assert after <= before * 1.25 + 50, (
        f"a group cost {before * STEP:,} SQLite instructions on a new database and "
        f"{after * STEP:,} after {HISTORY:,} rows of unrelated history"
    )


def seed_old_history(url: str, tag: str, rows: int) -> None:
    """`rows` verdicts about the accounts and keys of `group(tag)`, all observed more
    than 30 days before them: outside their history window, so no lookup should read
    them."""
    observed = datetime.fromisoformat(group(tag)[0]["observed_at"])
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(VerdictRow),
                [
                    verdict_row(
                        f"old-{tag}-{i}",
                        f"acct_cost_{tag}_{i % GROUP}",
                        f"key_cost_{tag}_{i % GROUP}",
                        f"org_cost_{tag}_{i % 3}",
                        observed - timedelta(days=31, minutes=i),
                    )
                    for i in range(rows)
                ],
            )
    finally:
        engine.dispose()


async def test_a_subjects_verdicts_older_than_its_window_cost_nothing(tmp_path: Path) -> None:
    """A long-watched account: every verdict ever stored about it is still there, but a
    verdict's history is the 30 days before it, an index range on (account, time)."""
    before, after = await group_costs(tmp_path, lambda url: seed_old_history(url, "after", HISTORY))
    assert after <= before * 1.25 + 50, (
        f"a group cost {before * STEP:,} SQLite instructions on subjects without history "
        f"and {after * STEP:,} on subjects with {HISTORY:,} verdicts older than 30 days"
    )


def seed_shared_network(url: str, rows: int) -> None:
    """`rows` accounts seen on the network of `group`'s verdicts (a large NAT or a
    cloud egress range), none of them a verified customer."""
    now = datetime.now(UTC)
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(SightingRow),
                sighting_rows(
                    [
                        ("account", f"acct_nat_{i}", "network", "198.51.100.0/24")
                        for i in range(rows)
                    ],
                    now,
                ),
            )
    finally:
        engine.dispose()


def sighting_rows(seen: list[tuple[str, str, str, str]], now: datetime) -> list[dict[str, Any]]:
    """Rows of lab-a's sighting table from (scope, scope id, kind, value)."""
    return [
        {
            "provider": "lab-a",
            "scope": scope,
            "scope_id": scope_id,
            "kind": kind,
            "value": value,
            "first_seen": now,
            "last_seen": now,
        }
        for scope, scope_id, kind, value in seen
    ]


async def test_a_network_everyone_uses_costs_what_its_verified_customers_do(
    tmp_path: Path,
) -> None:
    """Which verified customers use a verdict's networks is read from their sightings
    alone, not from every account ever seen on the network."""
    before, after = await group_costs(tmp_path, lambda url: seed_shared_network(url, HISTORY))
    assert after <= before * 1.25 + 50, (
        f"a group cost {before * STEP:,} SQLite instructions on a new network and "
        f"{after * STEP:,} on a network {HISTORY:,} other accounts were seen on"
    )


def seed_busy_operation(url: str, rows: int) -> None:
    """An org of `group("after")` seen with `rows` keys, networks and accounts in
    thirds, and one of its accounts with as many keys and networks (a busy enterprise,
    or an operation rotating its keys), with their tallies as the decide path keeps them."""
    now = datetime.now(UTC)
    third = rows // 3
    sightings = [
        ("org", "org_cost_after_0", kind, f"busy-{kind}-{i}")
        for kind in ("api_key", "account")
        for i in range(third)
    ]
    sightings += [
        ("account", "acct_cost_after_0", "api_key", f"busy-key-{i}") for i in range(third)
    ]
    networks = [f"10.{i // 256 % 256}.{i % 256}.0/24" for i in range(third)]
    for scope, scope_id in (("org", "org_cost_after_0"), ("account", "acct_cost_after_0")):
        sightings += [(scope, scope_id, "network", n) for n in networks]
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(insert(SightingRow), sighting_rows(sightings, now))
            conn.execute(
                insert(SightingTallyRow),
                [
                    {
                        "provider": "lab-a",
                        "scope": "org",
                        "scope_id": "org_cost_after_0",
                        "keys": third,
                        "networks": third,
                        "accounts": third,
                        "first_networks": sorted(networks)[:64],
                    },
                    {
                        "provider": "lab-a",
                        "scope": "account",
                        "scope_id": "acct_cost_after_0",
                        "keys": third,
                        "networks": third,
                        "accounts": 0,
                        "first_networks": sorted(networks)[:64],
                    },
                ],
            )
    finally:
        engine.dispose()


async def test_a_busy_org_costs_what_a_new_one_does(tmp_path: Path) -> None:
    """What an account and an org were seen with is counted from their tallies: a
    verdict about an org seen with tens of thousands of keys, networks and accounts
    reads one row for it, and its counts include them all."""

    async def counts(running: Running, answer: dict[str, Any]) -> None:
        first = answer["results"][0]["decision_id"]
        history = (await running.client.get(f"/v1/decisions/{first}")).json()["input"]["history"]
        third = HISTORY // 3
        assert history["org"]["keys_seen"] == third + 1
        assert history["org"]["accounts_seen"] == third + 1
        assert history["org"]["networks_seen"] == third + 1
        assert history["account"]["keys_seen"] == third + 1
        assert len(history["account"]["networks"]) == 64

    before, after = await group_costs(
        tmp_path, lambda url: seed_busy_operation(url, HISTORY), counts
    )
    assert after <= before * 1.25 + 50, (
        f"a group cost {before * STEP:,} SQLite instructions on new orgs and "
        f"{after * STEP:,} when one was seen with {HISTORY:,} keys, networks and accounts"
    )


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def test_planner_statistics_are_given_once_and_leave_an_analyze_standing(tmp_path: Path) -> None:
    """Every index gets statistics at upgrade; an upgrade again adds none twice, and
    what an operator's ANALYZE measured stays."""
    url = sqlite_url(tmp_path)
    upgrade(url)
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            stats = dict(
                ((t, i), s) for t, i, s in conn.exec_driver_sql("SELECT * FROM sqlite_stat1")
            )
            indexes = [
                (t, i)
                for t, i in conn.exec_driver_sql(
                    "SELECT tbl_name, name FROM sqlite_schema WHERE type = 'index'"
                )
            ]
            assert set(indexes) <= set(stats), "an index without planner statistics"
            assert (
                stats[("verdict", "ix_verdict_provider_account_observed")] == "1000000 500000 10 2"
            )
            conn.exec_driver_sql(
                "UPDATE sqlite_stat1 SET stat = '7 7 1 1' "
                "WHERE idx = 'ix_verdict_provider_account_observed'"
            )
        upgrade(url)
        with engine.connect() as conn:
            again = list(conn.exec_driver_sql("SELECT tbl, idx, stat FROM sqlite_stat1"))
    finally:
        engine.dispose()
    assert len(again) == len(stats)
    assert ("verdict", "ix_verdict_provider_account_observed", "7 7 1 1") in again
