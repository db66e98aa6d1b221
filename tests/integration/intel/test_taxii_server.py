"""Tollgate as a TAXII 2.1 server: discovery, roots, collections per peer grant,
objects with added_after/limit/next/match filters, manifests, versions, headers,
media types, errors; and the OASIS taxii2-client reading it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import requests
from taxii2client.v21 import Server, as_pages

from tests.integration.intel.conftest import CLOSE, SHARED, Exchange, Lab
from tests.support.verdicts import unique

MEDIA = "application/taxii+json;version=2.1"


def peer_client(lab: Lab, peer: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"{lab.url}/taxii2/tollgate/",
        headers={"Authorization": f"Bearer {lab.peer_tokens[peer]}", "Accept": MEDIA},
    )


async def fill(lab: Lab, n: int) -> list[dict[str, Any]]:
    return await lab.add(
        *({"kind": "account", "value": unique("acct"), "confidence": 0.9} for _ in range(n))
    )


async def test_discovery_root_and_collections_follow_the_peer_grants(exchange: Exchange) -> None:
    a = exchange["lab-a"]
    async with peer_client(a, "lab-b") as b_reads, peer_client(a, "lab-c") as c_reads:
        discovery = await b_reads.get(f"{a.url}/taxii2/")
        root = await b_reads.get("")
        for_b = (await b_reads.get("collections/")).json()["collections"]
        for_c = (await c_reads.get("collections/")).json()["collections"]
        denied = await c_reads.get(f"collections/{CLOSE}/objects/")
        missing = await b_reads.get("collections/00000000-0000-4000-8000-000000000000/")
        no_token = await httpx.AsyncClient().get(f"{a.url}/taxii2/")

    assert discovery.status_code == 200
    assert discovery.headers["content-type"] == MEDIA
    assert discovery.json()["api_roots"] == [f"{a.url}/taxii2/tollgate/"]
    assert root.json()["versions"] == [MEDIA]
    assert {c["id"] for c in for_b} == {SHARED, CLOSE}
    assert {c["id"] for c in for_c} == {SHARED}
    assert all(c["can_read"] and not c["can_write"] for c in for_b)
    assert denied.status_code == 403 and "lab-c" in denied.json()["message"]
    assert missing.status_code == 404
    assert no_token.status_code == 401


async def test_a_peer_token_reads_nothing_but_taxii(exchange: Exchange) -> None:
    a = exchange["lab-a"]
    headers = {"Authorization": f"Bearer {a.peer_tokens['lab-b']}"}
    async with httpx.AsyncClient(base_url=a.url, headers=headers) as client:
        for path in ("/v1/intel/indicators", "/v1/actions", "/v1/audit", "/v1/intel/peers"):
            assert (await client.get(path)).status_code == 403, path


async def test_paging_by_next_and_by_added_after_sees_every_object_once(
    exchange: Exchange,
) -> None:
    a = exchange["lab-a"]
    await fill(a, 7)
    async with peer_client(a, "lab-b") as client:
        everything = (await client.get(f"collections/{SHARED}/objects/")).json()["objects"]
        by_next: list[str] = []
        params: dict[str, Any] = {"limit": 3}
        while True:
            page = await client.get(f"collections/{SHARED}/objects/", params=params)
            body = page.json()
            by_next += [o["id"] + o.get("modified", "") for o in body["objects"]]
            if not body["more"]:
                break
            assert body["next"]
            params = {"limit": 3, "next": body["next"]}
        by_date: list[str] = []
        params = {"limit": 3}
        while True:
            page = await client.get(f"collections/{SHARED}/objects/", params=params)
            body = page.json()
            by_date += [o["id"] + o.get("modified", "") for o in body["objects"]]
            first = page.headers["X-TAXII-Date-Added-First"]
            last = page.headers["X-TAXII-Date-Added-Last"]
            assert first <= last
            if not body["more"]:
                break
            params = {"limit": 3, "added_after": last}
        # added_after is exclusive: the object added at `last` is not served again.
        after_last = (
            await client.get(f"collections/{SHARED}/objects/", params={"added_after": last})
        ).json()

    expected = [o["id"] + o.get("modified", "") for o in everything]
    assert by_next == expected and by_date == expected
    assert len(expected) == len(set(expected)) >= 7
    assert after_last["objects"] == [] and after_last["more"] is False


async def test_match_filters_manifest_and_versions(exchange: Exchange) -> None:
    a = exchange["lab-a"]
    [first, second] = await fill(a, 2)
    await a.client.post(f"/v1/intel/indicators/{first['id']}/retract", json={"reason": "fp"})
    async with peer_client(a, "lab-b") as client:
        url = f"collections/{SHARED}/objects/"
        by_id = (await client.get(url, params={"match[id]": first["stix_id"]})).json()["objects"]
        every = (
            await client.get(url, params={"match[id]": first["stix_id"], "match[version]": "all"})
        ).json()["objects"]
        earliest = (
            await client.get(url, params={"match[id]": first["stix_id"], "match[version]": "first"})
        ).json()["objects"]
        opinions = (await client.get(url, params={"match[type]": "opinion"})).json()["objects"]
        manifest = await client.get(
            f"collections/{SHARED}/manifest/", params={"match[id]": second["stix_id"]}
        )
        versions = (await client.get(f"{url}{first['stix_id']}/versions/")).json()
        one = (await client.get(f"{url}{second['stix_id']}/")).json()["objects"]
        bad_time = await client.get(url, params={"added_after": "yesterday"})
        bad_next = await client.get(url, params={"next": "x"})
        bad_spec = await client.get(url, params={"match[spec_version]": "2.0"})

    assert [o.get("revoked", False) for o in by_id] == [True]
    assert [o.get("revoked", False) for o in every] == [False, True]
    assert [o.get("revoked", False) for o in earliest] == [False]
    assert {o["type"] for o in opinions} == {"opinion"}
    assert first["stix_id"] in {r for o in opinions for r in o["object_refs"]}
    [record] = manifest.json()["objects"]
    assert record["id"] == second["stix_id"]
    assert record["media_type"] == "application/stix+json;version=2.1"
    assert manifest.headers["X-TAXII-Date-Added-Last"] == record["date_added"]
    assert len(versions["versions"]) == 2
    assert [o["id"] for o in one] == [second["stix_id"]]
    for response, field in (
        (bad_time, "added_after"),
        (bad_next, "next"),
        (bad_spec, "match[spec_version]"),
    ):
        assert response.status_code == 422
        assert response.json()["details"][0]["field"] == field


class Bearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def read_with_taxii2_client(url: str, token: str) -> tuple[list[str], int, int]:
    server = Server(url, auth=Bearer(token))
    [root] = server.api_roots
    shared = next(c for c in root.collections if c.id == SHARED)
    whole = shared.get_objects()
    paged = [
        o for page in as_pages(shared.get_objects, per_request=4) for o in page.get("objects", [])
    ]
    return [c.id for c in root.collections], len(whole["objects"]), len(paged)


async def test_the_oasis_taxii2_client_reads_tollgates_collections(exchange: Exchange) -> None:
    a = exchange["lab-a"]
    await fill(a, 5)

    ids, whole, paged = await asyncio.to_thread(
        read_with_taxii2_client, f"{a.url}/taxii2/", a.peer_tokens["lab-c"]
    )

    assert ids == [SHARED]
    assert whole >= 5 and paged == whole
