"""Debian's real crowdsec-custom-bouncer enforcing Tollgate's blocks: a block planned in
Tollgate reaches the bouncer's script, a lift removes it, and a bouncer restarted after
changes made while it was down resyncs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controlplane.auth.jobs import Tokens
from controlplane.auth.roles import Role
from controlplane.store.db import Database, upgrade
from tests.integration.bouncers.crowdsec_fixtures import CustomBouncer, ensure_custom_bouncer
from tests.support.actions import Planned, plan
from tests.support.app import make_settings
from tests.support.server import tollgate_server


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[tuple[str, Database]]:
    ensure_custom_bouncer()
    (tmp_path / "data").mkdir()
    settings = make_settings(database_url, tmp_path / "data", crowdsec={"providers": ["*"]})
    upgrade(database_url)
    with tollgate_server(settings, tmp_path / "server.log") as url:
        yield url, Database(database_url)


def token(db: Database, role: Role) -> str:
    async def create() -> str:
        return (await Tokens(db).create(f"cs-{role.value}", role, actor="tests"))[0]

    return asyncio.run(create())


def blocks(db: Database, *planned: Planned) -> list[str]:
    return asyncio.run(plan(db, *planned))


def test_blocks_and_lifts_reach_the_bouncer_and_a_restart_resyncs(
    server: tuple[str, Database], tmp_path: Path
) -> None:
    url, db = server
    admin = {"Authorization": f"Bearer {token(db, Role.ADMIN)}"}
    bouncer = CustomBouncer(tmp_path / "bouncer", url, token(db, Role.BOUNCER))
    a, b = blocks(
        db,
        Planned("block", "ip", "198.51.100.61", rule="intel.known_range"),
        Planned("block", "cidr", "203.0.113.0/24"),
    )
    bouncer.start()
    try:
        bouncer.wait_for(
            lambda x: x.held() == {"198.51.100.61", "203.0.113.0/24"}, "the startup sync"
        )
        [first] = [line for line in bouncer.lines() if line[1] == "198.51.100.61"]
        assert first[0] == "add" and first[3] == "intel.known_range"
        assert 3500 <= int(first[2]) <= 3600  # seconds left of the 1 h block

        [c] = blocks(db, Planned("block", "ip", "198.51.100.62"))
        bouncer.wait_for(lambda x: "198.51.100.62" in x.held(), "a block planned later")
        lifted = httpx.post(
            f"{url}/v1/actions/{a}/lift", json={"reason": "false positive"}, headers=admin
        )
        assert lifted.status_code == 200, lifted.text
        bouncer.wait_for(lambda x: "198.51.100.61" not in x.held(), "a lift")
        assert bouncer.held() == {"203.0.113.0/24", "198.51.100.62"}

        bouncer.stop()
        lifted = httpx.post(
            f"{url}/v1/actions/{b}/lift", json={"reason": "false positive"}, headers=admin
        )
        assert lifted.status_code == 200, lifted.text
        blocks(db, Planned("block", "ip", "198.51.100.63"))
        bouncer.start()
        bouncer.wait_for(
            lambda x: x.held() == {"198.51.100.62", "198.51.100.63"},
            "the resync after a restart (the lift made while down removed, the new block added)",
        )
        assert c
    finally:
        bouncer.stop()
        asyncio.run(db.dispose())
