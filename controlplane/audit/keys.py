"""Ed25519 keys for audit checkpoints: reading, writing, naming, signing, checking.

A checkpoint signs (seq, hash). Rewriting history before `seq`, even with every hash
recomputed, then shows as a signed hash the chain no longer has, and the signature
cannot be redone without the private key, which never enters the database.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from controlplane.errors import InvalidInput

MESSAGE_PREFIX = b"tollgate.audit.checkpoint.v1\n"


def checkpoint_message(seq: int, chain_hash: str) -> bytes:
    """The bytes a checkpoint signature covers: a fixed prefix, then `seq` and the hash
    of the event at `seq`, in decimal and lowercase hex, newline-separated."""
    return MESSAGE_PREFIX + f"{seq}\n{chain_hash}".encode()


def key_id(public: Ed25519PublicKey) -> str:
    """16 hex digits of the SHA-256 of the raw 32-byte public key: names the key that
    signed a checkpoint without storing the key beside it."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    """The private key that signs checkpoints, with its key id."""

    private: Ed25519PrivateKey
    key_id: str

    def sign(self, seq: int, chain_hash: str) -> str:
        return self.private.sign(checkpoint_message(seq, chain_hash)).hex()

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()


def signature_valid(public: Ed25519PublicKey, seq: int, chain_hash: str, signature: str) -> bool:
    try:
        public.verify(bytes.fromhex(signature), checkpoint_message(seq, chain_hash))
    except (InvalidSignature, ValueError):
        return False
    return True


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{what}: cannot read {path}: {exc.strerror}") from None


def _raw_hex(data: bytes) -> bytes | None:
    text = data.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
    return None


def load_signer(path: Path, what: str = "TOLLGATE_AUDIT_SIGNING_KEY_FILE") -> Signer:
    """The Ed25519 private key in `path`: PEM (PKCS#8, unencrypted) or 64 hex digits."""
    data = _read(path, what)
    raw = _raw_hex(data)
    private: object
    if raw is not None:
        private = Ed25519PrivateKey.from_private_bytes(raw)
    else:
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(
                f"{what}: {path} is neither an unencrypted PEM private key nor 64 hex "
                f"digits ({exc}); make a key pair with `tollgate audit keygen`"
            ) from None
    if not isinstance(private, Ed25519PrivateKey):
        raise InvalidInput(
            f"{what}: {path} holds a {type(private).__name__}, not an Ed25519 key; "
            "make one with `tollgate audit keygen`"
        )
    return Signer(private, key_id(private.public_key()))


def load_public_key(path: Path, what: str = "--public-key") -> Ed25519PublicKey:
    """The Ed25519 public key in `path`: PEM (SubjectPublicKeyInfo) or 64 hex digits."""
    data = _read(path, what)
    raw = _raw_hex(data)
    public: object
    if raw is not None:
        public = Ed25519PublicKey.from_public_bytes(raw)
    else:
        try:
            public = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(
                f"{what}: {path} is neither a PEM public key nor 64 hex digits ({exc}); "
                "give the .pub.pem file `tollgate audit keygen` wrote"
            ) from None
    if not isinstance(public, Ed25519PublicKey):
        raise InvalidInput(f"{what}: {path} holds a {type(public).__name__}, not Ed25519")
    return public


def generate(private_path: Path, public_path: Path) -> str:
    """Write a new key pair (the private key readable by its owner only); returns its
    key id. Refuses to overwrite: a lost signing key cannot be recovered."""
    for path in (private_path, public_path):
        if path.exists():
            raise InvalidInput(f"{path} exists; move it away or choose another path")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key_id(private.public_key())
