"""Writing signed checkpoints of the audit chain.

Before signing the head, the events since the previous checkpoint (by the same key) are
re-verified, so a checkpoint never vouches for a chain that was already broken. Those
events are the only ones a rewrite with recomputed hashes could still slip in through:
the shorter the interval, the smaller that window.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from controlplane.audit import repository
from controlplane.audit.chain import GENESIS_HASH
from controlplane.audit.export import Checkpoint
from controlplane.audit.keys import (
    Signer,
    key_id,
    load_public_key,
    load_signer,
    signature_valid,
)
from controlplane.audit.verify import PublicKeys, Report, verify_range
from controlplane.errors import Conflict, TollgateError
from controlplane.settings import Settings
from controlplane.store.db import Database
from controlplane.store.models import new_id
from controlplane.store.types import utcnow

log = logging.getLogger(__name__)


class ChainBroken(Conflict):
    """The chain fails verification: nothing is signed until it is investigated."""

    def __init__(self, report: Report) -> None:
        broken = report.broken
        where = f" at seq {broken.seq}: {broken.message}" if broken else ""
        super().__init__(
            f"the audit chain is broken{where}; no checkpoint was signed. Run `tollgate "
            "audit verify` and investigate before signing anything"
        )
        self.report = report


@dataclass(frozen=True)
class Written:
    checkpoint: Checkpoint
    new: bool
    """False when the newest checkpoint by this key already covers the head."""


async def write_checkpoint(db: Database, signer: Signer) -> Written | None:
    """Sign the chain's head; None when the chain is empty. A job (the periodic one,
    and the CLI's): it reads the head, re-verifies the events since the last checkpoint
    (which may take a while) in a read session, and only then writes the checkpoint in
    a short transaction of its own."""
    async with db.read() as session:
        head_seq, head_hash = await repository.head(session)
        if head_seq == 0:
            return None
        previous = await repository.latest_checkpoint(session, signer.key_id)
        last_hash = await repository.hash_at(session, head_seq)
    if previous is not None and previous.seq == head_seq and previous.hash == head_hash:
        return Written(previous, new=False)
    after, anchor = 0, GENESIS_HASH
    if previous is not None and previous.seq < head_seq:
        if not signature_valid(signer.public, previous.seq, previous.hash, previous.signature):
            log.error(
                "checkpoint at seq %d does not verify; re-checking from genesis", previous.seq
            )
        else:
            after, anchor = previous.seq, previous.hash
    async with db.read() as session:
        report = await verify_range(session, after, anchor, head_seq)
    if not report.ok or last_hash != head_hash:
        raise ChainBroken(report)
    now = utcnow()
    signature = signer.sign(head_seq, head_hash)
    row = {
        "id": new_id("ckp"),
        "seq": head_seq,
        "hash": head_hash,
        "at": now,
        "key_id": signer.key_id,
        "signature": signature,
    }
    async with db.transaction() as session:
        await repository.insert_checkpoint(session, row)
    checkpoint = Checkpoint(head_seq, head_hash, now.isoformat(), signer.key_id, signature)
    return Written(checkpoint, new=True)


def configured_signer(settings: Settings) -> Signer | None:
    """The signing key `TOLLGATE_AUDIT_SIGNING_KEY_FILE` names, or None when unset."""
    if settings.audit_signing_key_file is None:
        return None
    return load_signer(settings.audit_signing_key_file)


async def sign_now(db: Database, settings: Settings) -> Written:
    """Sign the chain's head with the server's own key (`POST /v1/audit/checkpoint`).
    Conflict, naming the setting, when the server has no usable key or nothing to sign."""
    try:
        signer = configured_signer(settings)
    except TollgateError as exc:
        raise Conflict(f"this server's signing key cannot be used: {exc.message}") from None
    if signer is None:
        raise Conflict(
            "this server has no audit signing key: set TOLLGATE_AUDIT_SIGNING_KEY_FILE on "
            "the server (`tollgate audit keygen` makes a key pair), or sign with "
            "`tollgate audit checkpoint --key FILE` on the database itself"
        )
    written = await write_checkpoint(db, signer)
    if written is None:
        raise Conflict("the audit chain is empty: nothing to sign yet")
    return written


def public_keys(paths: list[Path], settings: Settings | None) -> PublicKeys | None:
    """Trusted keys by id: the files given, else the public half of the configured
    signing key, else None (checkpoints then cannot be authenticated)."""
    if paths:
        keys = {}
        for path in paths:
            public = load_public_key(path)
            keys[key_id(public)] = public
        return keys
    signer = configured_signer(settings) if settings else None
    return {signer.key_id: signer.public} if signer else None


async def checkpoint_job(db: Database, signer: Signer) -> None:
    """The periodic job: sign the head if it moved; a broken chain is logged loudly."""
    try:
        written = await write_checkpoint(db, signer)
    except ChainBroken as exc:
        log.error("%s", exc.message)
        return
    if written and written.new:
        log.info("audit checkpoint at seq %d signed by %s", written.checkpoint.seq, signer.key_id)
