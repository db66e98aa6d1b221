"""Detached Ed25519 signatures on every published STIX object.

The signature travels inside the object as `x_tollgate_signature`
(`{"alg": "Ed25519", "key_id": ..., "value": <base64url>}`) and covers the canonical
JSON (`canonical.py`) of the object without that property, so it survives any relay
(another TAXII server, a file, a proxy that re-indents JSON) and a peer verifies it
with the signing lab's public key alone. The key id is the audit area's: 16 hex
digits of the SHA-256 of the raw public key.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controlplane.audit.keys import Signer
from controlplane.errors import TollgateError
from controlplane.intel.canonical import canonical_json

SIGNATURE = "x_tollgate_signature"
ALGORITHM = "Ed25519"
MESSAGE_PREFIX = b"tollgate.intel.object.v1\n"


def signed_bytes(stix_object: Mapping[str, Any]) -> bytes:
    """What a signature covers: a fixed prefix, then the object's canonical JSON
    without its signature."""
    body = {k: v for k, v in stix_object.items() if k != SIGNATURE}
    return MESSAGE_PREFIX + canonical_json(body)


def sign(stix_object: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
    """The object with its detached signature added."""
    value = signer.private.sign(signed_bytes(stix_object))
    return {
        **{k: v for k, v in stix_object.items() if k != SIGNATURE},
        SIGNATURE: {
            "alg": ALGORITHM,
            "key_id": signer.key_id,
            "value": base64.urlsafe_b64encode(value).decode("ascii").rstrip("="),
        },
    }


@dataclass(frozen=True)
class TrustedKey:
    """A peer's public key and the lab it speaks for."""

    lab: str
    public: Ed25519PublicKey


class SignatureRefused(Exception):
    """Why an object was not accepted (stated for the audit event)."""


def verify(stix_object: Mapping[str, Any], keys: Mapping[str, TrustedKey]) -> TrustedKey:
    """The key that signed this object, or `SignatureRefused` saying why not."""
    signature = stix_object.get(SIGNATURE)
    if not isinstance(signature, dict):
        raise SignatureRefused("unsigned: no x_tollgate_signature")
    if signature.get("alg") != ALGORITHM:
        raise SignatureRefused(f"signature algorithm {signature.get('alg')!r} is not Ed25519")
    key = keys.get(str(signature.get("key_id")))
    if key is None:
        raise SignatureRefused(f"signed by key {signature.get('key_id')!r}, which no peer has")
    try:
        raw = str(signature.get("value", ""))
        value = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        key.public.verify(value, signed_bytes(stix_object))
    except (InvalidSignature, ValueError) as exc:
        raise SignatureRefused(
            f"signature by key {signature.get('key_id')} ({key.lab}) does not verify: "
            "the object was changed after signing"
        ) from exc
    except TollgateError as exc:  # canonical_json refuses floats
        raise SignatureRefused(f"cannot be canonicalised: {exc.message}") from exc
    return key
