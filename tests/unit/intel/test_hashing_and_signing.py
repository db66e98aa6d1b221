"""Keyed hashes (canonicalisation, rotation), canonical JSON, detached signatures."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane.audit.keys import Signer, key_id
from controlplane.errors import InvalidInput
from controlplane.intel.canonical import canonical_json
from controlplane.intel.hashing import ConsortiumKey, Keyring, canonical_identifier
from controlplane.intel.signing import SignatureRefused, TrustedKey, sign, verify
from controlplane.intel.stix.objects import indicator_object, parse_indicator

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


def test_the_documented_message_is_what_is_hashed() -> None:
    key = ConsortiumKey("k1", b"s" * 32)
    expected = hmac.new(b"s" * 32, b"tollgate.intel.v1\naccount\nacct_9", hashlib.sha256)

    assert key.digest("account", "  acct_9\n") == f"k1:{expected.hexdigest()}"
    # NFC: a decomposed e-acute hashes as the composed one; case is kept.
    assert canonical_identifier("org", "Cafe\u0301") == canonical_identifier("org", "Caf\u00e9")
    assert key.digest("org", "ACME") != key.digest("org", "acme")
    assert key.digest("org", "x") != key.digest("account", "x")


def test_rotation_hashes_new_under_the_newest_and_matches_under_both_during_overlap() -> None:
    old = ConsortiumKey("old", b"o" * 32, None, NOW + timedelta(days=7))
    new = ConsortiumKey("new", b"n" * 32, NOW - timedelta(days=1), None)
    ring = Keyring([old, new])

    assert ring.hash_for_publishing("api_key", "key_3", NOW).startswith("new:")
    assert [h.split(":")[0] for h in ring.hashes_for_matching("api_key", "key_3", NOW)] == [
        "old",
        "new",
    ]
    later = NOW + timedelta(days=8)
    assert [h.split(":")[0] for h in ring.hashes_for_matching("api_key", "key_3", later)] == ["new"]
    with pytest.raises(InvalidInput, match="no consortium key is in force"):
        Keyring([]).hash_for_publishing("account", "a", NOW)


def test_canonical_json_sorts_keys_drops_whitespace_and_refuses_floats() -> None:
    assert (
        canonical_json({"b": [1, True, None], "a": "é"}) == '{"a":"é","b":[1,true,null]}'.encode()
    )
    with pytest.raises(InvalidInput, match=r"\$\.x\[0\]"):
        canonical_json({"x": [0.5]})


def _row(**extra: object) -> dict[str, object]:
    return {
        "kind": "cidr",
        "value": "203.0.113.0/24",
        "source": "lab-a",
        "confidence": 0.9,
        "tlp": "amber",
        "pap": "red",
        "created_at": NOW,
        "stix_id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
        "expires_at": NOW + timedelta(days=7),
        **extra,
    }


def test_a_signed_object_verifies_after_any_reformatting_and_not_after_a_change() -> None:
    private = Ed25519PrivateKey.generate()
    signer = Signer(private, key_id(private.public_key()))
    keys = {signer.key_id: TrustedKey("lab-a", private.public_key())}
    signed = sign(indicator_object(_row(), "lab-a"), signer)

    reordered = dict(reversed(list(signed.items())))
    assert verify(reordered, keys).lab == "lab-a"
    changed = {**signed, "confidence": 10}
    with pytest.raises(SignatureRefused, match="does not verify"):
        verify(changed, keys)
    with pytest.raises(SignatureRefused, match="no peer has"):
        verify(signed, {})


def test_an_indicator_round_trips_through_stix() -> None:
    back = parse_indicator(indicator_object(_row(decay_days=14, last_seen=NOW), "lab-a"))

    assert (back["kind"], back["value"], back["tlp"], back["pap"]) == (
        "cidr",
        "203.0.113.0/24",
        "amber",
        "red",
    )
    assert back["confidence"] == 0.9 and back["decay_days"] == 14
    assert back["expires_at"] == NOW + timedelta(days=7)
