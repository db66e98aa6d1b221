"""Tampering with the audit trail in real SQLite and PostgreSQL databases, the way
someone with database access would, and `verify` catching each: an edit, a deletion,
a cut tail, a reordering, and a full rewrite with every hash recomputed (caught only
by a signed checkpoint)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controlplane.audit import service as audit
from controlplane.audit.checkpoints import ChainBroken, write_checkpoint
from controlplane.audit.export import FORMATS
from controlplane.audit.keys import Signer, generate, load_public_key, load_signer
from controlplane.audit.verify import PublicKeys, Report, verify_database, verify_file
from controlplane.store.db import Database
from tests.integration.audit import tampering

EVENTS = 24


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, PublicKeys]:
    directory = tmp_path_factory.mktemp("keys")
    generate(directory / "audit.pem", directory / "audit.pub.pem")
    signer = load_signer(directory / "audit.pem")
    return signer, {signer.key_id: load_public_key(directory / "audit.pub.pem")}


@pytest.fixture(scope="module")
async def module_db(module_database_url: str) -> AsyncIterator[Database]:
    db = Database(module_database_url)
    yield db
    await db.dispose()


@pytest.fixture
async def db(module_db: Database) -> Database:
    """The module's database with a fresh chain of `EVENTS` events."""
    await tampering.reset(module_db)
    await tampering.seed(module_db, EVENTS)
    return module_db


def broke(report: Report, seq: int, kind: str) -> None:
    assert report.broken is not None, "the tampering went unnoticed"
    assert (report.broken.seq, report.broken.kind) == (seq, kind), report.broken


async def test_an_intact_chain_verifies(db: Database, keys: tuple[Signer, PublicKeys]) -> None:
    signer, trusted = keys
    await write_checkpoint(db, signer)

    report = await verify_database(db, trusted)

    assert report.ok, report.broken
    assert (report.events, report.first_seq, report.last_seq) == (EVENTS, 1, EVENTS)
    assert report.authenticated_through_seq == EVENTS
    assert report.last_hash == (await tampering.events(db))[-1].hash


async def test_an_edited_event_breaks_at_its_seq(db: Database) -> None:
    before = (await tampering.events(db))[9]
    await tampering.edit_actor(db, 10, "someone-else")

    report = await verify_database(db, None)

    broke(report, 10, "hash")
    assert report.broken is not None and report.broken.found == before.hash
    assert report.broken.expected != before.hash
    assert report.events == 9


async def test_an_edited_payload_breaks_too(db: Database) -> None:
    await tampering.sql(db, "UPDATE audit_event SET payload = :p WHERE seq = 7", p='{"i": 6}')

    broke(await verify_database(db, None), 7, "hash")


async def test_a_deleted_event_leaves_a_gap(db: Database) -> None:
    await tampering.sql(db, "DELETE FROM audit_event WHERE seq IN (12, 13)")

    report = await verify_database(db, None)

    broke(report, 12, "gap")
    assert report.broken is not None and report.broken.found == "14"


async def test_deleting_the_newest_events_is_caught_by_the_head(db: Database) -> None:
    await tampering.sql(db, "DELETE FROM audit_event WHERE seq > 20")

    broke(await verify_database(db, None), 21, "truncated")


async def test_deleting_the_tail_and_moving_the_head_is_caught_by_a_checkpoint(
    db: Database, keys: tuple[Signer, PublicKeys]
) -> None:
    signer, trusted = keys
    await write_checkpoint(db, signer)  # vouches for seq 24
    last = (await tampering.events(db))[19]
    await tampering.sql(db, "DELETE FROM audit_event WHERE seq > 20")
    await tampering.sql(db, "UPDATE audit_head SET seq = 20, hash = :h", h=last.hash)

    broke(await verify_database(db, trusted), EVENTS, "truncated")


async def test_swapped_events_break_the_links(db: Database) -> None:
    await tampering.swap(db, 5, 8)

    broke(await verify_database(db, None), 5, "link")


async def test_a_relinked_event_is_caught(db: Database) -> None:
    await tampering.sql(db, "UPDATE audit_event SET prev_hash = :h WHERE seq = 3", h="f" * 64)

    report = await verify_database(db, None)

    broke(report, 3, "link")
    assert report.broken is not None and report.broken.found == "f" * 64


async def test_a_full_rehash_is_caught_only_by_the_signed_checkpoint(
    db: Database, keys: tuple[Signer, PublicKeys]
) -> None:
    signer, trusted = keys
    await tampering.seed(db, 4)  # seq 25..28 come after the checkpoint below
    honest = await tampering.events(db)
    await tampering.reset_checkpoints_to(db, signer, seq=EVENTS)

    await tampering.rehash_after_edit(db, 6, "nobody")

    unsigned = await verify_database(db, None)
    assert unsigned.broken is not None and unsigned.broken.kind == "checkpoint", (
        "even unsigned, the stored checkpoint's hash no longer matches"
    )
    await tampering.sql(db, "DELETE FROM audit_checkpoint")
    assert (await verify_database(db, None)).ok, "a consistent rewrite passes the hash chain"

    await tampering.reset_checkpoints_to(db, signer, seq=EVENTS, chain_hash=honest[EVENTS - 1].hash)
    report = await verify_database(db, trusted)
    broke(report, EVENTS, "checkpoint")
    assert report.broken is not None
    assert report.broken.expected == honest[EVENTS - 1].hash


async def test_editing_the_checkpoint_to_match_a_rewrite_breaks_its_signature(
    db: Database, keys: tuple[Signer, PublicKeys]
) -> None:
    signer, trusted = keys
    await write_checkpoint(db, signer)
    new_head = await tampering.rehash_after_edit(db, 2, "nobody")
    await tampering.sql(db, "UPDATE audit_checkpoint SET hash = :h", h=new_head)

    broke(await verify_database(db, trusted), EVENTS, "signature")


async def test_a_checkpoint_signed_with_another_key_proves_nothing(
    db: Database, keys: tuple[Signer, PublicKeys], tmp_path: Path
) -> None:
    _, trusted = keys
    generate(tmp_path / "mine.pem", tmp_path / "mine.pub.pem")
    await tampering.rehash_after_edit(db, 2, "nobody")
    await write_checkpoint(db, load_signer(tmp_path / "mine.pem"))

    broke(await verify_database(db, trusted), EVENTS, "unknown_key")


async def test_no_checkpoint_is_signed_over_a_broken_chain(
    db: Database, keys: tuple[Signer, PublicKeys]
) -> None:
    signer, _ = keys
    first = await write_checkpoint(db, signer)
    assert first is not None and first.new and first.checkpoint.seq == EVENTS
    again = await write_checkpoint(db, signer)
    assert again is not None and not again.new, "an unmoved head is not signed twice"

    await tampering.seed(db, 3)
    await tampering.edit_actor(db, EVENTS + 2, "someone-else")

    with pytest.raises(ChainBroken, match=f"seq {EVENTS + 2}"):
        await write_checkpoint(db, signer)


@pytest.mark.parametrize("name", sorted(FORMATS))
async def test_an_export_of_a_rewritten_chain_fails_offline(
    db: Database, keys: tuple[Signer, PublicKeys], tmp_path: Path, name: str
) -> None:
    signer, trusted = keys
    await write_checkpoint(db, signer)
    honest = tmp_path / f"honest.{name}"
    honest.write_text(await _export(db, name))
    await tampering.rehash_after_edit(db, 4, "nobody")
    rewritten = tmp_path / f"rewritten.{name}"
    rewritten.write_text(await _export(db, name))

    assert verify_file(honest, trusted).ok
    report = verify_file(rewritten, trusted)
    broke(report, EVENTS, "checkpoint")


async def _export(db: Database, name: str) -> str:
    out = io.StringIO()
    async for chunk in audit.export(db, FORMATS[name], None, None, chunk=5):
        out.write(chunk)
    return out.getvalue()
