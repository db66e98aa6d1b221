"""Checkpoint keys: both file forms load, the wrong kinds are refused with a reason,
and a signature covers exactly (seq, hash)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane.audit.keys import (
    checkpoint_message,
    generate,
    key_id,
    load_public_key,
    load_signer,
    signature_valid,
)
from controlplane.errors import InvalidInput

HASH = "ab" * 32


def test_keygen_writes_a_private_key_only_its_owner_reads_and_a_public_key(
    tmp_path: Path,
) -> None:
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"

    made = generate(private, public)

    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    signer = load_signer(private)
    assert signer.key_id == made == key_id(load_public_key(public))
    assert len(made) == 16
    with pytest.raises(InvalidInput, match="exists"):
        generate(private, tmp_path / "other.pub.pem")


def test_raw_hex_keys_load_like_pem(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    (tmp_path / "priv.hex").write_text(raw.hex() + "\n")
    public_raw = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    (tmp_path / "pub.hex").write_text(public_raw.hex())

    signer = load_signer(tmp_path / "priv.hex")
    public = load_public_key(tmp_path / "pub.hex")

    assert signer.key_id == key_id(public)
    assert signature_valid(public, 7, HASH, signer.sign(7, HASH))


def test_a_signature_covers_seq_and_hash(tmp_path: Path) -> None:
    generate(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    signer = load_signer(tmp_path / "k.pem")
    signature = signer.sign(42, HASH)

    assert signature_valid(signer.public, 42, HASH, signature)
    assert not signature_valid(signer.public, 43, HASH, signature)
    assert not signature_valid(signer.public, 42, "cd" * 32, signature)
    assert not signature_valid(signer.public, 42, HASH, "00" * 64)
    assert not signature_valid(signer.public, 42, HASH, "not hex")
    assert checkpoint_message(42, HASH).endswith(f"\n42\n{HASH}".encode())


def test_other_key_kinds_and_garbage_are_refused_with_what_to_do(tmp_path: Path) -> None:
    ec = generate_private_key(SECP256R1())
    (tmp_path / "ec.pem").write_bytes(
        ec.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "junk").write_text("hello")

    with pytest.raises(InvalidInput, match=r"not an Ed25519 key.*tollgate audit keygen"):
        load_signer(tmp_path / "ec.pem")
    with pytest.raises(InvalidInput, match=r"TOLLGATE_AUDIT_SIGNING_KEY_FILE.*neither"):
        load_signer(tmp_path / "junk")
    with pytest.raises(InvalidInput, match=r"--public-key.*neither"):
        load_public_key(tmp_path / "junk")
    with pytest.raises(InvalidInput, match="cannot read"):
        load_signer(tmp_path / "missing.pem")
