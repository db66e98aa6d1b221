"""Keyed hashes of identifiers: account, API key, organisation and payment ids never
leave a lab raw. Each is HMAC-SHA256 under a consortium key that every lab of the
agreement holds, named by its key id, so labs can match each other's hashes and
nobody without the key can test a guess.

Canonicalisation (what is hashed): the UTF-8 bytes of

    tollgate.intel.v1 LF <kind> LF <value>

where `kind` is one of `account`, `api_key`, `org`, `payment` and `value` is the
identifier in Unicode NFC with surrounding whitespace removed; case is kept (ids are
case-sensitive). The kind is inside the message, so the same string as an account and
as an org gives two unrelated hashes. A hash is written `<key id>:<64 hex digits>`.

Rotation: keys have a `not_before` and a `not_after`. New indicators are hashed under
the newest key in force; a verdict's identifiers are hashed under every key in force,
so indicators hashed under the old key keep matching until its `not_after`, the end
of the overlap.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from controlplane.errors import InvalidInput

HASHED_KINDS = ("account", "api_key", "org", "payment")
DOMAIN = b"tollgate.intel.v1\n"


def canonical_identifier(kind: str, value: str) -> bytes:
    """The message hashed for an identifier (module docstring)."""
    if kind not in HASHED_KINDS:
        raise InvalidInput(f"kind {kind!r} is not hashed; hashed kinds: {', '.join(HASHED_KINDS)}")
    text = unicodedata.normalize("NFC", value).strip()
    if not text:
        raise InvalidInput(f"an empty {kind} id cannot be hashed")
    return DOMAIN + kind.encode() + b"\n" + text.encode("utf-8")


@dataclass(frozen=True)
class ConsortiumKey:
    key_id: str
    secret: bytes
    not_before: datetime | None = None
    not_after: datetime | None = None

    def in_force(self, at: datetime) -> bool:
        return (self.not_before is None or self.not_before <= at) and (
            self.not_after is None or at < self.not_after
        )

    def digest(self, kind: str, value: str) -> str:
        mac = hmac.new(self.secret, canonical_identifier(kind, value), hashlib.sha256)
        return f"{self.key_id}:{mac.hexdigest()}"


@dataclass(frozen=True)
class Keyring:
    """The consortium keys this lab holds (from `intel.consortium_keys`)."""

    keys: Sequence[ConsortiumKey] = ()

    def in_force(self, at: datetime) -> list[ConsortiumKey]:
        return [k for k in self.keys if k.in_force(at)]

    def current(self, at: datetime) -> ConsortiumKey:
        """The key new indicators are hashed under: the in-force key that began last."""
        live = self.in_force(at)
        if not live:
            raise InvalidInput(
                "no consortium key is in force, so identifiers cannot be hashed: add one "
                "under intel.consortium_keys in tollgate.yaml (id, secret {env|file}, "
                "not_before, not_after)"
            )
        return max(live, key=lambda k: k.not_before or datetime.min.replace(tzinfo=at.tzinfo))

    def hash_for_publishing(self, kind: str, value: str, at: datetime) -> str:
        return self.current(at).digest(kind, value)

    def hashes_for_matching(self, kind: str, value: str, at: datetime) -> list[str]:
        """The identifier under every key in force (the overlap of a rotation)."""
        return [k.digest(kind, value) for k in self.in_force(at)]


def is_keyed_hash(value: str) -> bool:
    key_id, _, digest = value.partition(":")
    return bool(key_id) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
