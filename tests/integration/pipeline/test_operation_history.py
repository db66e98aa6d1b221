"""`history.account` and `history.org` as policies see them: counted from each scope's
tally, the batch's own sightings and its flagged keys and accounts, across requests and
within one; the flags follow revocations and their lifts; the migration that brought
tallies and flags computes them from the sightings and actions already stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from controlplane.customers import repository as customers_repo
from controlplane.store.db import sync_url, upgrade
from tests.conftest import BACKENDS
from tests.support.app import Running
from tests.support.databases import PostgresServer, sqlite_url
from tests.support.verdicts import legitimate, unique, verdict


async def history_of(api: Running, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Submit `body`; the `history` of each verdict's decision input, in order."""
    found = []
    for result in (await api.submit(body))["results"]:
        decision = (await api.client.get(f"/v1/decisions/{result['decision_id']}")).json()
        found.append(decision["input"]["history"])
    return found


def subject(account: str, key: str, org: str, ip: str) -> dict[str, Any]:
    return {"account_id": account, "api_key_id": key, "org_id": org, "ips": [ip]}


async def test_counts_add_up_across_requests_and_within_one(api: Running) -> None:
    a, b, org = unique("acct_h"), unique("acct_h"), unique("org_h")
    keys = [unique("key_h") for _ in range(5)]
    for key, ip in zip(keys[:3], ["192.0.2.1", "198.51.100.1", "192.0.2.2"], strict=True):
        await history_of(api, legitimate(subject=subject(a, key, org, ip)))

    [again] = await history_of(api, legitimate(subject=subject(a, keys[0], org, "192.0.2.3")))
    assert again["account"] == {
        "keys_seen": 3,
        "networks_seen": 2,
        "networks": ["192.0.2.0/24", "198.51.100.0/24"],
        "keys_acted_on": 0,
    }
    assert (again["org"]["accounts_seen"], again["org"]["keys_seen"]) == (1, 3)

    # One request: a new key twice, a known key, another account of the org with its
    # own new key on a new network.
    batch = await history_of(
        api,
        {
            "verdicts": [
                legitimate(subject=subject(a, keys[3], org, "203.0.113.1")),
                legitimate(subject=subject(a, keys[3], org, "203.0.113.2")),
                legitimate(subject=subject(a, keys[1], org, "192.0.2.4")),
                legitimate(subject=subject(b, keys[4], org, "203.0.113.3")),
            ]
        },
    )
    assert [h["account"]["keys_seen"] for h in batch] == [4, 4, 4, 1]
    assert [h["account"]["networks_seen"] for h in batch] == [3, 3, 3, 1]
    assert [h["org"]["keys_seen"] for h in batch] == [4, 4, 4, 5]
    assert [h["org"]["accounts_seen"] for h in batch] == [1, 1, 1, 2]
    assert batch[3]["org"]["networks"] == ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"]

    [later] = await history_of(api, legitimate(subject=subject(b, keys[0], org, "192.0.2.5")))
    assert later["account"]["keys_seen"] == 2  # b now also used keys[0]
    assert (later["org"]["keys_seen"], later["org"]["accounts_seen"]) == (5, 2)


async def test_networks_listed_are_the_lowest_and_all_are_counted(api: Running) -> None:
    account, org = unique("acct_n"), unique("org_n")
    ips = [f"10.{i}.0.1" for i in range(70)]
    for part in (ips[35:], ips[:35]):  # the tally's list, then lower ones merged into it
        body = [legitimate(subject=subject(account, unique("key"), org, ip)) for ip in part]
        await history_of(api, {"verdicts": body})
    [one] = await history_of(api, legitimate(subject=subject(account, unique("key"), org, ips[0])))
    wanted = sorted(f"10.{i}.0.0/24" for i in range(70))[: customers_repo.FIRST_NETWORKS]
    assert one["account"]["networks_seen"] == 70
    assert one["account"]["networks"] == wanted


def acted_at(url: str, scope_id: str, value: str) -> list[datetime | None]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as connection:
            return [
                r.acted_at
                for r in connection.execute(
                    text("SELECT acted_at FROM sighting WHERE scope_id = :s AND value = :v"),
                    {"s": scope_id, "v": value},
                )
            ]
    finally:
        engine.dispose()


async def test_a_revoked_key_counts_for_its_account_until_lifted(
    api: Running, module_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    account, org, first = unique("acct_r"), unique("org_r"), unique("key_r")
    revoked: list[dict[str, Any]] = []
    for _ in range(3):  # the bundled policies revoke on a repeat
        [result] = (await api.submit(verdict(subject=subject(account, first, org, "192.0.2.9"))))[
            "results"
        ]
        revoked = [a for a in result["actions"] if a["type"] == "revoke_key"]
        if revoked:
            break
    assert revoked, "the repeated verdicts never revoked the key"
    assert all(at is not None for at in acted_at(module_database_url, account, first))

    [after] = await history_of(api, legitimate(subject=subject(account, unique("k"), org, "::1")))
    assert after["account"]["keys_acted_on"] == 1
    assert after["org"]["keys_acted_on"] == 1

    for action in revoked:
        lifted = await api.client.post(
            f"/v1/actions/{action['id']}/lift", json={"reason": "appeal upheld"}
        )
        assert lifted.status_code == 200, lifted.text
    # Flags older than the grace are cleared by the next batch about the scope.
    monkeypatch.setattr(customers_repo, "ACTED_GRACE", timedelta(0))
    [lift] = await history_of(api, legitimate(subject=subject(account, unique("k"), org, "::1")))
    assert lift["account"]["keys_acted_on"] == 0
    assert lift["org"]["keys_acted_on"] == 0
    assert acted_at(module_database_url, account, first) == [None]


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, no migration run."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    with server.database() as url:
        yield url


def test_the_migration_counts_and_flags_what_is_stored(empty_url: str) -> None:
    upgrade(empty_url, "0016")
    now = datetime.now(UTC)
    sightings = [
        ("account", "acct_m", "api_key", "key_m1"),
        ("account", "acct_m", "api_key", "key_m2"),
        *[("account", "acct_m", "network", f"10.{i}.0.0/24") for i in range(70)],
        ("org", "org_m", "api_key", "key_m1"),
        ("org", "org_m", "account", "acct_m"),
        ("org", "org_m", "account", "acct_m2"),
    ]
    actions = [  # (id, type, kind, value, state, shadow)
        ("a1", "revoke_key", "api_key", "key_m1", "applied", False),
        ("a2", "revoke_key", "api_key", "key_m2", "lifted", False),
        ("a3", "suspend", "account", "acct_m2", "pending", True),
        ("a4", "rate_limit", "account", "acct_m", "applied", False),
    ]
    engine = create_engine(sync_url(empty_url))
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO sighting (provider, scope, scope_id, kind, value, first_seen,"
                    " last_seen, verified) VALUES ('lab-a', :s, :i, :k, :v, :t, :t, false)"
                ),
                [dict(zip("sikv", row, strict=True), t=now) for row in sightings],
            )
            connection.execute(
                text(
                    "INSERT INTO verdict (id, provider, detector_name, detector_version, score,"
                    " confidence, observed_at, received_at, body, content_hash, status)"
                    " VALUES ('v', 'lab-a', 'd', '1', 0.9, 0.9, :t, :t, '{}', :h, 'decided')"
                ),
                {"t": now, "h": "0" * 64},
            )
            connection.execute(
                text(
                    "INSERT INTO decision (id, verdict_id, provider, policy_revision, entrypoint,"
                    " engine, status, shadow, input, result, duration_ms, decided_at) VALUES"
                    " ('d', 'v', 'lab-a', 'r', 'e', 'x', 'ok', false, '{}', '{}', 0, :t)"
                ),
                {"t": now},
            )
            connection.execute(
                text(
                    "INSERT INTO action (id, decision_id, verdict_id, provider, type, target_kind,"
                    " target_value, params, rule, reason, state, shadow, policy_revision,"
                    " created_at, updated_at) VALUES (:id, 'd', 'v', 'lab-a', :ty, :k, :v, '{}',"
                    " 'r', 'r', :st, :sh, 'r', :t, :t)"
                ),
                [
                    {"id": i, "ty": ty, "k": k, "v": v, "st": st, "sh": sh, "t": now}
                    for i, ty, k, v, st, sh in actions
                ],
            )
        upgrade(empty_url)
        with engine.connect() as connection:
            tallies = {
                (r.scope, r.scope_id): (r.keys, r.networks, r.accounts, r.first_networks)
                for r in connection.execute(text("SELECT * FROM sighting_tally"))
            }
            flagged = {
                (r.scope_id, r.value)
                for r in connection.execute(
                    text("SELECT scope_id, value FROM sighting WHERE acted_at IS NOT NULL")
                )
            }
    finally:
        engine.dispose()
    lowest = sorted(f"10.{i}.0.0/24" for i in range(70))[:64]
    account = tallies[("account", "acct_m")]
    assert account[:3] == (2, 70, 0)
    listed = account[3]
    assert (listed if isinstance(listed, list) else json.loads(listed)) == lowest
    org = tallies[("org", "org_m")]
    assert org[:3] == (1, 0, 2)
    # Only an active, non-shadow revocation or suspension flags (not a lifted one, a
    # shadow one or a rate limit).
    assert flagged == {("acct_m", "key_m1"), ("org_m", "key_m1")}
