"""Exemptions carved out of blocked ranges at a real NGINX 1.22 (`nginx_fixtures.py`):
an exempt address inside a blocked network is served while its neighbours stay
refused, whichever of the two is wider, and is refused again once the exemption goes;
through Tollgate, an exemption added over the API reports the carve-out and takes
effect at the proxy, and removing it refuses the address again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from connectors.nginx import NginxConnector
from controlplane.enforce.sdk import Diff, Entry, EntryType
from tests.integration.connectors.nginx_fixtures import (  # noqa: F401 (fixtures)
    Nginx,
    backend_fixture,
    nginx_binary_fixture,
    nginx_fixture,
    nginx_stopped_fixture,
)
from tests.support.app import Running, make_settings, serve
from tests.support.verdicts import new_subject, verdict

OK = 200
WAIT = 10.0
"""Seconds a poll of the gateway may take before the test fails (a bound, not a figure)."""
BLOCKED = Entry(EntryType.BLOCK, "cidr", "127.0.7.0/24")
EXEMPT = Entry(EntryType.ALLOW, "cidr", "127.0.7.7/32")


async def put(connector: NginxConnector, *entries: Entry) -> None:
    result = await connector.apply(Diff(add=entries))
    assert not result.failed and not result.rejected, (result.failed, result.rejected)


async def until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + WAIT
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {WAIT:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


# -- the connector ------------------------------------------------------------------------


async def test_an_exempt_address_inside_a_blocked_range_is_served_and_its_neighbours_are_not(
    nginx: Nginx,
) -> None:
    connector = nginx.connector()
    assert EntryType.ALLOW in connector.capabilities()
    await put(connector, BLOCKED)
    assert await nginx.get("127.0.7.7") == 403

    await put(connector, EXEMPT)

    assert await nginx.get("127.0.7.7") == OK
    assert await nginx.get("127.0.7.6") == 403
    assert await nginx.get("127.0.7.8") == 403
    assert (await connector.observe()).entries == {BLOCKED, EXEMPT}
    assert "127.0.7.7/32 allowed;" in (nginx.include_dir / "allowed.conf").read_text()

    result = await connector.apply(Diff(remove=(EXEMPT,)))
    assert result.done == [EXEMPT]

    assert await nginx.get("127.0.7.7") == 403
    assert (await connector.observe()).entries == {BLOCKED}


async def test_an_exemption_wider_than_the_block_inside_it_still_wins(nginx: Nginx) -> None:
    """Consulted before the block list, not merged with it: a blocked address inside an
    exempt network is served (a single geo would let the narrower block win)."""
    connector = nginx.connector()
    await put(
        connector,
        Entry(EntryType.BLOCK, "ip", "127.0.8.8"),
        Entry(EntryType.ALLOW, "cidr", "127.0.8.0/24"),
        Entry(EntryType.BLOCK, "ip", "127.0.9.9"),
    )

    assert await nginx.get("127.0.8.8") == OK
    assert await nginx.get("127.0.9.9") == 403


async def test_an_exemption_outlives_a_restart_and_a_hand_edit_is_put_back(nginx: Nginx) -> None:
    connector = nginx.connector()
    await put(connector, BLOCKED, EXEMPT)
    (nginx.include_dir / "allowed.conf").write_text("")  # removed by hand: not reloaded
    nginx.stop()
    nginx.start()
    assert await nginx.get("127.0.7.7") == 403  # what the files say at start

    observed = (await connector.observe()).entries
    assert observed == {BLOCKED}
    await put(connector, EXEMPT)  # what a reconcile sends back

    assert await nginx.get("127.0.7.7") == OK
    assert await nginx.get("127.0.7.9") == 403


async def test_exemptions_of_what_nginx_cannot_hold_are_refused_one_by_one(nginx: Nginx) -> None:
    connector = nginx.connector()
    fine = Entry(EntryType.ALLOW, "ip", "127.0.10.1")
    account = Entry(EntryType.ALLOW, "account", "acct_1")
    malformed = Entry(EntryType.ALLOW, "cidr", "127.0.10.0/24; return 200")

    result = await connector.apply(Diff(add=(fine, account, malformed)))

    assert result.done == [fine]
    reasons = dict(result.rejected)
    assert "not a account" in reasons[account]
    assert "refused before it reached the gateway" in reasons[malformed]
    assert (await connector.observe()).entries == {fine}


# -- through Tollgate ---------------------------------------------------------------------


@pytest.fixture
async def tollgate(nginx: Nginx, database_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    connector = {
        "name": "edge-nginx",
        "type": "nginx",
        "providers": ["lab-a"],
        "reconcile_seconds": 3600,
        "options": nginx.options(),
    }
    data = tmp_path / "data"
    data.mkdir()
    async with serve(make_settings(database_url, data, connectors=[connector])) as running:
        await running.runtime.enforcer.settle()
        yield running


async def test_an_exemption_added_over_the_api_is_carved_out_and_removing_it_refuses_again(
    tollgate: Running, nginx: Nginx
) -> None:
    indicator = {"kind": "cidr", "value": "127.0.11.0/24", "source": "lab-b", "confidence": 0.9}
    shared = await tollgate.client.post("/v1/intel/indicators", json={"indicators": [indicator]})
    assert shared.status_code in {200, 201}, shared.text
    [result] = (await tollgate.submit(verdict(subject=new_subject(ips=["127.0.11.9"]), score=0.6)))[
        "results"
    ]
    [block] = [a for a in result["actions"] if a["type"] == "block"]
    assert block["target"] == {"kind": "cidr", "value": "127.0.11.0/24"}
    await tollgate.runtime.enforcer.settle()
    assert await nginx.get("127.0.11.7") == 403

    body = {
        "subject": {"kind": "ip", "value": "127.0.11.7"},
        "provider": "lab-a",
        "owner": "noc",
        "reason": "the customer's egress address",
    }
    added = await tollgate.client.post("/v1/exemptions", json=body)
    assert added.status_code == 201, added.text
    assert added.json()["carve_out"] == [
        {"connector": "edge-nginx", "carved_out": True, "detail": "served before the block list"}
    ]

    async def served() -> bool:
        return await nginx.get("127.0.11.7") == OK

    await until("the exempt address to be served", served)
    assert await nginx.get("127.0.11.8") == 403, "its neighbours are still refused"
    assert await nginx.get("127.0.11.9") == 403

    removed = await tollgate.client.delete(
        f"/v1/exemptions/{added.json()['id']}", params={"reason": "customer left"}
    )
    assert removed.status_code == 200, removed.text

    async def refused() -> bool:
        return await nginx.get("127.0.11.7") == 403

    await until("the address to be refused again", refused)
    assert await nginx.get("127.0.11.8") == 403
