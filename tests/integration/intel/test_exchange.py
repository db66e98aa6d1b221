"""Labs exchanging signed STIX over TAXII: both ways, hashed identifiers only, markings
kept, tampering refused, a retraction lifting a peer's action, a medallion relay."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from typing import Any

import httpx
from sqlmodel import col, select
from stix2validator import ValidationOptions, validate_instance

from controlplane.intel import repository
from controlplane.intel.hashing import ConsortiumKey
from controlplane.intel.signing import SIGNATURE
from controlplane.store.models import IntelObjectRow
from controlplane.store.types import utcnow
from tests.integration.intel.conftest import SHARED, Exchange, Lab
from tests.support.verdicts import new_subject, unique, verdict

_ranges = itertools.count(1)


def fresh_range() -> tuple[str, str]:
    n = next(_ranges)
    return f"198.19.{n}.0/24", f"198.19.{n}.9"


def cidr(value: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "cidr", "value": value, "confidence": 0.9, **extra}


async def published(lab: Lab, collection: str = SHARED) -> tuple[list[dict[str, Any]], bytes]:
    """Every object the lab serves in a collection (all versions), and the raw bytes."""
    token = lab.peer_tokens["lab-b" if lab.name != "lab-b" else "lab-a"]
    url = f"{lab.url}/taxii2/tollgate/collections/{collection}/objects/"
    objects: list[dict[str, Any]] = []
    raw = b""
    params: dict[str, Any] = {"limit": 50, "match[version]": "all"}
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as client:
        while True:
            response = await client.get(url, params=params)
            assert response.status_code == 200, response.text
            raw += response.content
            body = response.json()
            objects += body["objects"]
            if not body["more"]:
                return objects, raw
            params = {**params, "next": body["next"]}


async def actions_on(lab: Lab, value: str) -> list[dict[str, Any]]:
    response = await lab.client.get("/v1/actions", params={"target_value": value})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_indicators_flow_both_ways_and_identifiers_travel_only_as_keyed_hashes(
    exchange: Exchange,
) -> None:
    a, b, c = exchange["lab-a"], exchange["lab-b"], exchange["lab-c"]
    raw = {k: unique(f"raw-{k}") for k in ("account", "api_key", "org", "payment")}
    r1, _ = fresh_range()
    r2, _ = fresh_range()
    r3, _ = fresh_range()
    await a.add(
        cidr(r1, tlp="amber", pap="amber", decay_days=30),
        *({"kind": k, "value": v, "confidence": 0.8} for k, v in raw.items()),
        {"kind": "asn", "value": "AS64500", "confidence": 0.7},
        {"kind": "org_pattern", "value": "distill-[0-9]+", "confidence": 0.6},
        {
            "kind": "signature",
            "value": "prompt_template_reuse",
            "threshold": 0.93,
            "confidence": 0.7,
        },
    )
    await c.add(cidr(r2))

    from_a = await b.pull("lab-a")
    from_c = await b.pull("lab-c")
    await b.add(cidr(r3))
    from_b = await a.pull("lab-b")

    assert from_a["accepted"] >= 8 and from_a["rejected"] == 0
    assert from_c["accepted"] >= 1 and from_b["accepted"] >= 1
    held = {(i["kind"], i["value"]): i for i in await b.indicators(source="lab-a")}
    key = ConsortiumKey("k1", exchange.consortium_secret.encode())
    for kind, value in raw.items():
        mine = held[(kind, key.digest(kind, value))]
        assert mine["origin"] == "lab-a"
    assert held[("cidr", r1)]["tlp"] == "amber" and held[("cidr", r1)]["pap"] == "amber"
    assert held[("cidr", r1)]["decay_days"] == 30
    assert held[("asn", "64500")]["confidence"] == 0.7
    assert held[("signature", "prompt_template_reuse")]["detail"]["threshold"] == "0.93"
    assert ("cidr", r2) in {(i["kind"], i["value"]) for i in await b.indicators(source="lab-c")}
    assert ("cidr", r3) in {(i["kind"], i["value"]) for i in await a.indicators(source="lab-b")}
    # A second pull takes only what is new (the TAXII cursor).
    again = await b.pull("lab-a")
    assert (again["accepted"], again["rejected"]) == (0, 0)

    # Nothing raw ever leaves: not in any byte published, nor in lab-a's own rows.
    for lab in (a, b, c):
        _, everything = await published(lab)
        for value in raw.values():
            assert value.encode() not in everything
    for value in raw.values():
        assert value not in json.dumps(await a.indicators())


async def test_every_published_object_passes_the_stix2_validator_and_is_signed(
    exchange: Exchange,
) -> None:
    a = exchange["lab-a"]
    await a.add(
        cidr(fresh_range()[0]), {"kind": "account", "value": unique("acct"), "confidence": 0.9}
    )

    objects, _ = await published(a)

    assert {o["type"] for o in objects} >= {"indicator", "identity", "marking-definition"}
    for obj in objects:
        result = validate_instance(obj, ValidationOptions(version="2.1"))
        assert result.is_valid, [str(e) for e in result.errors]
        assert obj[SIGNATURE]["alg"] == "Ed25519"


async def test_agreeing_labs_block_on_intel_and_a_retraction_lifts_only_what_rested_on_it(
    exchange: Exchange,
) -> None:
    a, b, c = exchange["lab-a"], exchange["lab-b"], exchange["lab-c"]
    agreed, agreed_ip = fresh_range()
    alone, alone_ip = fresh_range()
    [alone_row, _] = await a.add(cidr(alone), cidr(agreed))
    await c.add(cidr(agreed))
    await b.pull("lab-a")
    await b.pull("lab-c")

    # Two labs agree: intel alone may block. One lab: only with local evidence.
    two = (
        await b.client.post(
            "/v1/verdicts", json=verdict(subject=new_subject(ips=[agreed_ip]), score=0.1)
        )
    ).json()
    one = (
        await b.client.post(
            "/v1/verdicts", json=verdict(subject=new_subject(ips=[alone_ip]), score=0.6)
        )
    ).json()
    [block_two] = [x for x in two["results"][0]["actions"] if x["type"] == "block"]
    [block_one] = [x for x in one["results"][0]["actions"] if x["type"] == "block"]
    assert block_two["target"]["value"] == agreed and "2 labs agree" in block_two["reason"]
    assert block_one["target"]["value"] == alone and "local evidence" in block_one["reason"]

    retraction = await a.client.post(
        f"/v1/intel/indicators/{alone_row['id']}/retract",
        json={"reason": "appeal upheld: a university lab"},
    )
    assert retraction.status_code == 200, retraction.text
    assert retraction.json()["published"] == 2  # the revoked version and the opinion
    report = await b.pull("lab-a")

    assert (report["retractions"], report["lifted"]) == (1, 1)
    [lifted] = await actions_on(b, alone)
    assert lifted["state"] == "lifted"
    assert all(x["state"] != "lifted" for x in await actions_on(b, agreed))
    audit = (await b.client.get("/v1/audit", params={"type": "action.lifted", "limit": 100})).json()
    reasons = [e["payload"]["reason"] for e in audit["items"] if e["action_id"] == lifted["id"]]
    assert reasons and "retracted" in reasons[0]
    [peer] = [p for p in (await b.client.get("/v1/intel/peers")).json() if p["name"] == "lab-a"]
    assert peer["retractions"] >= 1 and peer["lifted"] >= 1 and peer["healthy"]
    # The retracted range no longer matches at lab-b: a new verdict there plans no block.
    later = (
        await b.client.post(
            "/v1/verdicts", json=verdict(subject=new_subject(ips=[alone_ip]), score=0.6)
        )
    ).json()
    assert [x for x in later["results"][0]["actions"] if x["type"] == "block"] == []


async def test_a_tampered_or_unsigned_object_is_refused_with_an_audit_event(
    exchange: Exchange,
) -> None:
    a, b = exchange["lab-a"], exchange["lab-b"]
    genuine, _ = fresh_range()
    forged, _ = fresh_range()
    await a.add(cidr(genuine))
    await b.pull("lab-a")
    async with a.runtime.db.read() as session:
        rows = await session.execute(
            select(IntelObjectRow)
            .where(col(IntelObjectRow.type) == "indicator")
            .order_by(col(IntelObjectRow.seq).desc())
            .limit(1)
        )
        original = rows.scalars().one().body
    # A relay (or a break-in at lab-a's database) rewrites the range, keeps the signature.
    tampered = json.loads(json.dumps(original).replace(genuine, forged))
    tampered["modified"] = (utcnow() + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%f")[
        :-3
    ] + "Z"
    unsigned = {k: v for k, v in original.items() if k != SIGNATURE} | {
        "id": "indicator--00000000-0000-4000-8000-000000000001"
    }
    async with a.runtime.db.write() as session, session.begin():
        await repository.append_objects(session, SHARED, [tampered, unsigned], utcnow())

    report = await b.pull("lab-a")

    assert report["rejected"] == 2
    values = {i["value"] for i in await b.indicators(source="lab-a")}
    assert genuine in values and forged not in values
    events = (
        await b.client.get("/v1/audit", params={"type": "intel.object_refused", "limit": 100})
    ).json()["items"]
    reasons = {e["payload"]["stix_id"]: e["payload"]["reason"] for e in events}
    assert "does not verify" in reasons[tampered["id"]]
    assert "unsigned" in reasons[unsigned["id"]]


async def test_lab_b_pulls_lab_a_objects_relayed_by_a_medallion_server(
    exchange: Exchange, medallion_auth: tuple[str, str]
) -> None:
    a, b = exchange["lab-a"], exchange["lab-b"]
    relayed = [fresh_range()[0] for _ in range(4)]
    await a.add(*(cidr(r) for r in relayed))
    objects, _ = await published(a)
    mine = [
        o
        for o in objects
        if o["type"] == "indicator" and o["extensions"] and any(r in json.dumps(o) for r in relayed)
    ]
    assert len(mine) == 4
    async with httpx.AsyncClient(auth=medallion_auth) as client:
        posted = await client.post(
            f"{exchange.medallion_url}collections/{SHARED}/objects/",
            content=json.dumps({"objects": mine}),
            headers={
                "Content-Type": "application/taxii+json;version=2.1",
                "Accept": "application/taxii+json;version=2.1",
            },
        )
        assert posted.status_code == 202, posted.text

    report = await b.pull("relay")

    # medallion pages 3 at a time: the pull followed its cursor to the end.
    assert report["pages"] >= 2
    assert report["accepted"] == 4 and report["rejected"] == 0
    held = {i["value"]: i for i in await b.indicators(source="lab-a")}
    for r in relayed:
        assert held[r]["origin"] == "relay"  # provenance: who delivered it; source: who said it


async def test_retracted_objects_are_served_as_new_versions(exchange: Exchange) -> None:
    a = exchange["lab-a"]
    value, _ = fresh_range()
    [row] = await a.add(cidr(value))
    await a.client.post(
        f"/v1/intel/indicators/{row['id']}/retract", json={"reason": "false positive"}
    )

    objects, _ = await published(a)
    versions = [o for o in objects if o["id"] == row["stix_id"]]
    assert [v.get("revoked", False) for v in versions] == [False, True]
    [opinion] = [
        o for o in objects if o["type"] == "opinion" and o["object_refs"] == [row["stix_id"]]
    ]
    assert opinion["opinion"] == "strongly-disagree"
    again = await a.client.post(
        f"/v1/intel/indicators/{row['id']}/retract", json={"reason": "again"}
    )
    assert again.status_code == 409


async def test_what_stands_behind_a_hard_action_is_published_hashed(exchange: Exchange) -> None:
    a, b = exchange["lab-a"], exchange["lab-b"]
    subject = new_subject()
    severe = verdict(subject=subject, score=0.98, labels=["distillation.capability_sweep"])
    result = (await a.client.post("/v1/verdicts", json=severe)).json()["results"][0]
    assert "revoke_key" in [x["type"] for x in result["actions"]]

    await a.runtime.publish_from_actions()
    await b.pull("lab-a")

    key = ConsortiumKey("k1", exchange.consortium_secret.encode())
    hashed = key.digest("api_key", subject["api_key_id"])
    # One per revocation: the library may revoke a key by two rules at once.
    held = [i for i in await b.indicators(kind="api_key") if i["value"] == hashed]
    assert held and {h["source"] for h in held} == {"lab-a"}
    _, everything = await published(a)
    assert subject["api_key_id"].encode() not in everything
    assert subject["account_id"].encode() not in everything
