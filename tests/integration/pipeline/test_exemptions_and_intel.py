"""Context computed before evaluation: exemptions from their table, intel from indicators."""

from __future__ import annotations

import itertools
from datetime import timedelta

from controlplane.store.types import utcnow
from tests.support.app import Running
from tests.support.store import add, exemption, indicator
from tests.support.verdicts import action_types, new_subject, verdict

_ranges = itertools.count(1)


def fresh_range() -> tuple[str, str]:
    """A /24 of 198.18.0.0/16 (benchmarking space) no other test uses, and an IP in it."""
    n = next(_ranges)
    return f"198.18.{n}.0/24", f"198.18.{n}.42"


async def test_exempt_subject_only_gets_a_flag_review(api: Running) -> None:
    subject = new_subject()
    await add(api.runtime.db, exemption("lab-a", "account", subject["account_id"]))
    severe = verdict(subject=subject, score=0.98, labels=["distillation.capability_sweep"])

    [result] = (await api.submit(severe))["results"]

    [review] = result["actions"]
    assert review["type"] == "flag_review"
    assert review["rule"] == "exemptions.exempt_subject"
    assert review["target"] == {"kind": "account", "value": subject["account_id"]}
    assert "trust-and-safety@test" in review["reason"]
    assert "revoke_key" in review["reason"]
    given = (await api.client.get(f"/v1/decisions/{result['decision_id']}")).json()["input"]
    assert given["context"]["exempt"] is True
    assert given["context"]["exemption"]["owner"] == "trust-and-safety@test"


async def test_exemption_by_key_covers_the_verdict(api: Running) -> None:
    subject = new_subject()
    await add(api.runtime.db, exemption("lab-a", "api_key", subject["api_key_id"]))

    [result] = (await api.submit(verdict(subject=subject)))["results"]

    assert action_types(result) == ["flag_review"]


async def test_exemption_is_per_provider_and_expires(api: Running) -> None:
    subject = new_subject()
    expired = exemption(
        "lab-a", "account", subject["account_id"], expires_at=utcnow() - timedelta(minutes=1)
    )
    elsewhere = exemption("lab-b", "account", subject["account_id"])
    await add(api.runtime.db, expired, elsewhere)

    [result] = (await api.submit(verdict(subject=subject)))["results"]

    assert action_types(result) == ["rate_limit"]


async def test_ip_in_an_intel_cidr_blocks_that_cidr(api: Running) -> None:
    cidr, ip = fresh_range()
    await add(api.runtime.db, indicator(cidr, source="lab-b", confidence=0.9))

    # One lab's intel blocks with local evidence: a verdict scoring at least
    # intel.local_evidence_score (0.5), though below the graduated response's bar.
    [result] = (await api.submit(verdict(subject={"ips": [ip]}, score=0.6)))["results"]

    [block] = result["actions"]
    assert block["type"] == "block"
    assert block["target"] == {"kind": "cidr", "value": cidr}
    assert block["rule"] == "intel.known_range"
    assert block["ttl_seconds"] == 7 * 86400
    assert "lab-b" in block["reason"]
    given = (await api.client.get(f"/v1/decisions/{result['decision_id']}")).json()["input"]
    [match] = given["context"]["intel_matches"]
    assert (match["cidr"], match["ip"], match["source"]) == (cidr, ip, "lab-b")


async def test_intel_block_adds_to_the_graduated_response(api: Running) -> None:
    cidr, ip = fresh_range()
    await add(api.runtime.db, indicator(cidr))

    [result] = (await api.submit(verdict(subject=new_subject(ips=[ip]))))["results"]

    assert action_types(result) == ["block", "rate_limit"]


async def test_low_confidence_intel_blocks_nothing(api: Running) -> None:
    cidr, ip = fresh_range()
    await add(api.runtime.db, indicator(cidr, source="lab-c", confidence=0.5))

    [result] = (await api.submit(verdict(subject={"ips": [ip]}, score=0.3)))["results"]

    assert result["actions"] == []
    given = (await api.client.get(f"/v1/decisions/{result['decision_id']}")).json()["input"]
    assert [m["cidr"] for m in given["context"]["intel_matches"]] == [cidr]


async def test_ip_outside_every_intel_cidr_blocks_nothing(api: Running) -> None:
    cidr, _ = fresh_range()
    await add(api.runtime.db, indicator(cidr))

    [result] = (await api.submit(verdict(subject={"ips": ["192.0.2.201"]}, score=0.3)))["results"]

    assert result["actions"] == []


async def test_ipv4_mapped_address_meets_the_ipv4_intel(fresh_api: Running) -> None:
    await add(fresh_api.runtime.db, indicator("203.0.113.0/24"))
    document = verdict(subject=new_subject(ips=["::ffff:203.0.113.9"]), score=0.6)

    [result] = (await fresh_api.client.post("/v1/verdicts", json=document)).json()["results"]

    assert [(a["type"], a["target"]["value"]) for a in result["actions"]] == [
        ("block", "203.0.113.0/24")
    ]


async def test_one_labs_intel_without_local_evidence_only_asks_for_review(api: Running) -> None:
    cidr, ip = fresh_range()
    await add(api.runtime.db, indicator(cidr, source="lab-b", confidence=0.9))

    [result] = (await api.submit(verdict(subject={"ips": [ip]}, score=0.3)))["results"]

    [review] = result["actions"]
    assert (review["type"], review["rule"]) == ("flag_review", "intel.bounded_review")
    assert review["target"] == {"kind": "ip", "value": ip}


async def test_two_labs_block_a_range_on_intel_alone(api: Running) -> None:
    cidr, ip = fresh_range()
    await add(api.runtime.db, indicator(cidr, source="lab-b"), indicator(cidr, source="lab-c"))

    [result] = (await api.submit(verdict(subject={"ips": [ip]}, score=0.1)))["results"]

    [block] = result["actions"]
    assert (block["type"], block["target"]["value"]) == ("block", cidr)
    assert "lab-b, lab-c" in block["reason"] and "2 labs agree" in block["reason"]
