"""Adding objects to a Tollgate inbox collection over TAXII 2.1 (POST objects), and the
status resource that says what became of each, through the OASIS taxii2-client."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import httpx
from taxii2client.v21 import Server

from tests.integration.intel.conftest import INBOX, SHARED, Exchange, Lab
from tests.integration.intel.test_taxii_server import MEDIA, Bearer, peer_client
from tests.support.verdicts import unique


async def signed_by(lab: Lab, reader: str, value: str) -> tuple[dict[str, Any], list[Any]]:
    """The lab's published indicator for `value`, and the objects it published first
    (its identity, extension and marking definitions), as a peer reads them."""
    async with peer_client(lab, reader) as client:
        body = (await client.get(f"collections/{SHARED}/objects/")).json()
    objects = body["objects"]
    [indicator] = [o for o in objects if o["type"] == "indicator" and value in o["pattern"]]
    preamble = [o for o in objects if o["type"] != "indicator"][:6]
    return indicator, preamble


def post_with_taxii2_client(url: str, token: str, objects: list[Any]) -> tuple[Any, Any, bool]:
    server = Server(url, auth=Bearer(token))
    [root] = server.api_roots
    inbox = next(c for c in root.collections if c.id == INBOX)
    status = inbox.add_objects({"objects": objects}, wait_for_completion=False)
    again = root.get_status(status.id)
    return status, again, inbox.can_write


async def test_a_writer_adds_signed_objects_and_reads_each_outcome_in_the_status(
    exchange: Exchange,
) -> None:
    a, b = exchange["lab-a"], exchange["lab-b"]
    good, bad = f"198.18.{len(unique('x')) % 200}.0/24", "198.19.7.0/24"
    await a.add(
        {"kind": "cidr", "value": good, "confidence": 0.9},
        {"kind": "cidr", "value": bad, "confidence": 0.9},
    )
    indicator, preamble = await signed_by(a, "lab-c", good)
    tampered, _ = await signed_by(a, "lab-c", bad)
    tampered = copy.deepcopy(tampered)
    tampered["confidence"] = 100

    status, again, can_write = await asyncio.to_thread(
        post_with_taxii2_client,
        f"{b.url}/taxii2/",
        b.peer_tokens["lab-a"],
        [*preamble, indicator, tampered],
    )

    assert can_write
    assert status.status == "complete"
    assert (status.total_count, status.failure_count, status.pending_count) == (
        len(preamble) + 2,
        1,
        0,
    )
    assert status.success_count == len(preamble) + 1
    assert [f["id"] for f in status.failures] == [tampered["id"]]
    assert "signature" in status.failures[0]["message"]
    assert indicator["id"] in {s["id"] for s in status.successes}
    assert (again.id, again.success_count, again.failure_count) == (
        status.id,
        status.success_count,
        1,
    )
    held = [i for i in await b.indicators(kind="cidr") if i["value"] == good]
    assert [(i["source"], i["origin"]) for i in held] == [("lab-a", "lab-a")]
    assert not [i for i in await b.indicators(kind="cidr") if i["value"] == bad]
    async with peer_client(b, "lab-a") as client:
        inbox = (await client.get(f"collections/{INBOX}/objects/")).json()["objects"]
    assert indicator["id"] in {o["id"] for o in inbox}
    assert tampered["id"] not in {o["id"] for o in inbox}


async def test_only_writers_post_and_only_the_poster_reads_its_status(
    exchange: Exchange,
) -> None:
    a, b = exchange["lab-a"], exchange["lab-b"]
    await a.add({"kind": "asn", "value": "64999", "confidence": 0.5})
    indicator, _ = await signed_by(a, "lab-c", "64999")
    envelope = {"objects": [indicator]}
    headers = {"Content-Type": MEDIA}
    async with peer_client(b, "lab-a") as writer, peer_client(b, "lab-c") as other:
        posted = await writer.post(f"collections/{INBOX}/objects/", json=envelope, headers=headers)
        shared = await writer.post(f"collections/{SHARED}/objects/", json=envelope, headers=headers)
        stranger = await other.post(f"collections/{INBOX}/objects/", json=envelope, headers=headers)
        mine = await writer.get(f"status/{posted.json()['id']}/")
        theirs = await other.get(f"status/{posted.json()['id']}/")
        garbage = await writer.post(
            f"collections/{INBOX}/objects/", json={"objects": "nope"}, headers=headers
        )
    async with httpx.AsyncClient(
        base_url=b.url, headers={"Authorization": b.client.headers["Authorization"]}
    ) as admin:
        audited = await admin.get(f"/taxii2/tollgate/status/{posted.json()['id']}/")

    assert posted.status_code == 202 and posted.headers["content-type"] == MEDIA
    assert posted.json()["success_count"] == 1
    assert shared.status_code == 403 and "writers" in shared.json()["message"]
    assert stranger.status_code in (403, 404)
    assert mine.status_code == 200 and mine.json()["id"] == posted.json()["id"]
    assert theirs.status_code == 404
    assert garbage.status_code == 422 and "objects" in garbage.text
    assert audited.status_code == 200
