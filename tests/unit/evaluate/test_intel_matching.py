"""`IntelIndex.match_verdict`: hashed identifiers, ASN, org patterns, signatures,
agreement between labs, PAP, decay, expiry and revocation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from controlplane.evaluate.intel import IntelIndex
from controlplane.intel.hashing import ConsortiumKey, Keyring

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
OLD = ConsortiumKey("k-old", b"o" * 32, None, NOW + timedelta(days=1))
NEW = ConsortiumKey("k-new", b"n" * 32, NOW - timedelta(days=1), None)
KEYS = Keyring([OLD, NEW])


def ind(kind: str, value: str, source: str = "lab-b", **extra: Any) -> dict[str, Any]:
    return {
        "id": f"ind_{kind}_{source}_{value[-6:]}",
        "kind": kind,
        "value": value,
        "source": source,
        "confidence": 0.9,
        "tlp": "green",
        "pap": "green",
        **extra,
    }


def match(index: IntelIndex, **subject: Any) -> list[dict[str, Any]]:
    ids = [(k, subject[k]) for k in ("account", "api_key", "org") if k in subject]
    return index.match_verdict(subject.get("ips", []), ids, subject.get("signals", {}), NOW)


def test_hashed_account_matches_the_raw_id_and_names_only_the_subject() -> None:
    index = IntelIndex([ind("account", NEW.digest("account", "acct_9"))], KEYS)

    [m] = match(index, account="acct_9")
    assert m["kind"] == "account"
    assert m["target"] == {"kind": "account", "value": "acct_9"}
    assert m["value"].startswith("k-new:")
    assert match(index, account="acct_10") == []
    # The same string as an org is another hash: kinds never cross.
    assert match(index, org="acct_9") == []


def test_a_hash_under_the_old_key_matches_during_the_overlap_only() -> None:
    index = IntelIndex([ind("api_key", OLD.digest("api_key", "key_3"))], KEYS)

    assert len(match(index, api_key="key_3")) == 1
    later = index.match_verdict([], [("api_key", "key_3")], {}, NOW + timedelta(days=2))
    assert later == []


def test_independent_labs_are_counted_and_pap_limits_who_may_enforce() -> None:
    cidr = "203.0.113.0/24"
    index = IntelIndex(
        [
            ind("cidr", cidr, "lab-b"),
            ind("cidr", cidr, "lab-c", pap="amber"),
            ind("cidr", cidr, "lab-b"),
        ]
    )

    [m] = match(index, ips=["203.0.113.9"])
    assert (m["labs"], m["enforceable_labs"], m["pap"]) == (2, 1, "amber")
    assert m["sources"] == ["lab-b", "lab-c"]


def test_asn_and_signature_and_org_pattern() -> None:
    index = IntelIndex(
        [
            ind("asn", "64500"),
            ind(
                "signature",
                "prompt_template_reuse",
                detail={"signal": "prompt_template_reuse", "op": "gte", "threshold": "0.9"},
            ),
            ind("org_pattern", "distill-[0-9]+"),
        ]
    )

    found = match(
        index,
        org="distill-42",
        signals={"asn": 64500.0, "prompt_template_reuse": 0.95},
    )
    assert sorted(m["kind"] for m in found) == ["asn", "org_pattern", "signature"]
    assert (
        match(index, org="distill-x", signals={"asn": 64501.0, "prompt_template_reuse": 0.5}) == []
    )


def test_confidence_decays_by_half_life_and_expired_or_dropped_do_not_match() -> None:
    index = IntelIndex(
        [
            ind("cidr", "198.51.100.0/24", decay_days=10, last_seen=NOW - timedelta(days=10)),
            ind("cidr", "192.0.2.0/24", expires_at=NOW - timedelta(seconds=1)),
            {**ind("cidr", "203.0.113.0/24", "lab-z"), "id": "ind_revoked"},
        ]
    )

    [decayed] = match(index, ips=["198.51.100.1"])
    assert decayed["confidence"] == 0.45
    assert match(index, ips=["192.0.2.1"]) == []
    assert len(match(index, ips=["203.0.113.1"])) == 1
    index.drop(["ind_revoked"])
    assert match(index, ips=["203.0.113.1"]) == []
