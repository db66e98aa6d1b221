"""Exports verified offline: both formats round-trip, and every kind of damage to a file
(an edit, a deleted, moved or repeated line, a cut, a rewrite with recomputed hashes)
is reported at the right seq."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controlplane.audit.chain import GENESIS_HASH, HASHED_FIELDS, EventDraft, event_hash
from controlplane.audit.export import (
    FORMATS,
    Checkpoint,
    End,
    Event,
    ExportFormatError,
    Format,
    StoredEvent,
)
from controlplane.audit.keys import Signer, generate, load_public_key, load_signer
from controlplane.audit.verify import PublicKeys, read_checkpoints, verify_file

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def draft(i: int) -> EventDraft:
    return EventDraft(
        type="action.planned" if i % 2 else "verdict.received",
        actor="détecteur" if i == 3 else "tollgate",
        # Microseconds 0 on purpose for one event: isoformat drops them.
        at=T0 + timedelta(seconds=i, microseconds=0 if i == 2 else i),
        provider=None if i == 4 else "lab-a",
        verdict_id=f"v-{i}",
        decision_id=None if i % 3 else f"dec_{i}",
        action_id=f"act_{i}" if i % 2 else None,
        trace_id=None,
        payload={"n": i, "score": 0.1 * i, "nested": {"b": [1, 2], "a": None}, "text": ""},
    )


def chain(n: int, drafts: Callable[[int], EventDraft] = draft) -> list[StoredEvent]:
    """Events as the database streams them (payload as stored: not canonical JSON)."""
    rows, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        d = drafts(seq)
        digest = event_hash(seq, d, prev)
        fields = {name: getattr(d, name) for name in HASHED_FIELDS if name != "seq"}
        fields.update(at=d.at.isoformat(), payload=json.dumps(d.payload, indent=None))
        rows.append(StoredEvent(seq=seq, **fields, prev_hash=prev, hash=digest))
        prev = digest
    return rows


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, PublicKeys]:
    directory = tmp_path_factory.mktemp("keys")
    generate(directory / "k.pem", directory / "k.pub.pem")
    signer = load_signer(directory / "k.pem")
    return signer, {signer.key_id: load_public_key(directory / "k.pub.pem")}


def checkpoint(signer: Signer, row: StoredEvent) -> Checkpoint:
    return Checkpoint(
        row.seq, row.hash, T0.isoformat(), signer.key_id, signer.sign(row.seq, row.hash)
    )


def write(
    path: Path,
    fmt: Format,
    rows: list[StoredEvent],
    checkpoints: list[Checkpoint] = (),  # type: ignore[assignment]
    *,
    first: int | None = None,
    end: bool = True,
) -> Path:
    first = rows[0].seq if first is None and rows else first
    last = rows[-1].seq if rows else None
    meta = {"format": "tollgate-audit-export", "version": 1, "first_seq": first, "last_seq": last}
    text = fmt.header(meta) + fmt.checkpoints(list(checkpoints)) + fmt.events(rows)
    if end:
        text += fmt.end(End(len(rows), first, last, rows[-1].hash if rows else None))
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(params=sorted(FORMATS))
def fmt(request: pytest.FixtureRequest) -> Format:
    return FORMATS[request.param]


def test_an_intact_export_verifies_in_both_formats(tmp_path: Path, fmt: Format) -> None:
    rows = chain(12)

    report = verify_file(write(tmp_path / "x", fmt, rows), None)

    assert report.ok, report.broken
    assert (report.events, report.first_seq, report.last_seq) == (12, 1, 12)
    assert report.last_hash == rows[-1].hash


def test_csv_keeps_null_apart_from_empty_and_backslashes_intact(tmp_path: Path) -> None:
    def odd(i: int) -> EventDraft:
        return dataclasses.replace(
            draft(i),
            actor=["", "\\N", "\\already", 'line\nbreak, "quoted"'][i % 4],
            provider=None,
            trace_id="" if i % 2 else None,
        )

    rows = chain(8, odd)
    path = write(tmp_path / "x.csv", FORMATS["csv"], rows)

    assert verify_file(path, None).ok
    events = [r for r in FORMATS["csv"].read(path.open(newline="")) if isinstance(r, Event)]
    assert [e.document["actor"] for e in events[:4]] == [
        "\\N",
        "\\already",
        'line\nbreak, "quoted"',
        "",
    ]
    assert {e.document["provider"] for e in events} == {None}


def test_an_edited_line_breaks_at_its_seq(tmp_path: Path) -> None:
    path = write(tmp_path / "x.jsonl", FORMATS["jsonl"], chain(10))
    lines = path.read_text().splitlines(keepends=True)
    event = json.loads(lines[5])  # header, then events 1..: line 5 is seq 5
    assert event["seq"] == 5
    event["payload"]["score"] = 0.01
    lines[5] = json.dumps(event) + "\n"
    path.write_text("".join(lines))

    report = verify_file(path, None)

    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (5, "hash")
    assert report.broken.found == event["hash"]
    assert report.events == 4, "what verified before the break"


@pytest.mark.parametrize(
    ("damage", "seq", "kind"),
    [
        (lambda lines: lines.pop(4), 4, "gap"),  # seq 4 deleted
        (lambda lines: lines.insert(6, lines[3]), 6, "order"),  # seq 3 repeated
        (lambda lines: lines.__setitem__(slice(3, 5), [lines[4], lines[3]]), 3, "gap"),  # swap
        (lambda lines: lines.pop(-2), 11, "truncated"),  # the last event deleted
        (lambda lines: lines.pop(), 13, "truncated"),  # cut: no end record
    ],
    ids=["deleted", "repeated", "swapped", "last-deleted", "cut"],
)
def test_deleted_moved_and_missing_lines_are_caught(
    tmp_path: Path, damage: Callable[[list[str]], object], seq: int, kind: str
) -> None:
    path = write(tmp_path / "x.jsonl", FORMATS["jsonl"], chain(12))
    lines = path.read_text().splitlines(keepends=True)
    damage(lines)
    path.write_text("".join(lines))

    report = verify_file(path, None)

    assert report.broken is not None, "the damage went unnoticed"
    assert (report.broken.seq, report.broken.kind) == (seq, kind)


def test_a_rewrite_with_recomputed_hashes_is_caught_only_by_a_signed_checkpoint(
    tmp_path: Path, fmt: Format, signer: tuple[Signer, PublicKeys]
) -> None:
    key, trusted = signer
    honest = chain(10)
    signed = [checkpoint(key, honest[7])]  # vouches for seq 8

    def forged(i: int) -> EventDraft:
        d = draft(i)
        return dataclasses.replace(d, actor="nobody") if i == 3 else d

    rewritten = chain(10, forged)  # every hash recomputed after the edit
    path = write(tmp_path / "x", fmt, rewritten, signed)

    unsigned = verify_file(path, None)
    assert unsigned.broken is not None and unsigned.broken.kind == "checkpoint"
    assert not verify_file(write(tmp_path / "y", fmt, rewritten), trusted).broken, (
        "without a checkpoint the rewrite is a consistent chain"
    )
    report = verify_file(path, trusted)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (8, "checkpoint")
    assert report.broken.expected == honest[7].hash
    assert report.broken.found == rewritten[7].hash

    # Editing the checkpoint to match the rewrite breaks its signature instead.
    doctored = [dataclasses.replace(signed[0], hash=rewritten[7].hash)]
    report = verify_file(write(tmp_path / "z", fmt, rewritten, doctored), trusted)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (8, "signature")


def test_checkpoints_prove_the_events_up_to_them(
    tmp_path: Path, fmt: Format, signer: tuple[Signer, PublicKeys]
) -> None:
    key, trusted = signer
    rows = chain(10)
    path = write(tmp_path / "x", fmt, rows, [checkpoint(key, rows[3]), checkpoint(key, rows[7])])

    report = verify_file(path, trusted)

    assert report.ok, report.broken
    assert (report.checkpoints, report.checkpoints_verified) == (2, 2)
    assert report.authenticated_through_seq == 8
    assert any("after seq 8" in w for w in report.warnings)


def test_a_checkpoint_by_a_key_not_trusted_proves_nothing(
    tmp_path: Path, signer: tuple[Signer, PublicKeys]
) -> None:
    _, trusted = signer
    generate(tmp_path / "other.pem", tmp_path / "other.pub.pem")
    other = load_signer(tmp_path / "other.pem")
    rows = chain(5)

    report = verify_file(
        write(tmp_path / "x.jsonl", FORMATS["jsonl"], rows, [checkpoint(other, rows[2])]), trusted
    )

    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (3, "unknown_key")
    assert report.broken.found == other.key_id


def test_a_checkpoint_past_the_end_shows_the_tail_was_removed(
    tmp_path: Path, signer: tuple[Signer, PublicKeys]
) -> None:
    key, trusted = signer
    rows = chain(10)
    path = write(tmp_path / "x.jsonl", FORMATS["jsonl"], rows[:6], [checkpoint(key, rows[8])])

    report = verify_file(path, trusted)

    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (9, "truncated")


def test_a_partial_export_verifies_from_its_first_event(tmp_path: Path, fmt: Format) -> None:
    rows = chain(10)[4:]

    report = verify_file(write(tmp_path / "x", fmt, rows), None)

    assert report.ok, report.broken
    assert (report.first_seq, report.last_seq) == (5, 10)
    assert any("starts at seq 5" in w for w in report.warnings)


def test_external_checkpoints_are_checked_against_an_export(
    tmp_path: Path, signer: tuple[Signer, PublicKeys]
) -> None:
    key, trusted = signer
    rows = chain(6)
    kept = tmp_path / "checkpoints.jsonl"
    kept.write_text(
        json.dumps({"record": "checkpoint", **checkpoint(key, rows[4]).to_dict()}) + "\n"
    )
    external = read_checkpoints(kept)

    def forged(i: int) -> EventDraft:
        return dataclasses.replace(draft(i), payload={}) if i == 2 else draft(i)

    assert verify_file(write(tmp_path / "ok.jsonl", FORMATS["jsonl"], rows), trusted, external).ok
    report = verify_file(
        write(tmp_path / "x.jsonl", FORMATS["jsonl"], chain(6, forged)), trusted, external
    )
    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (5, "checkpoint")


def test_external_checkpoints_outside_a_partial_export_are_skipped_not_failed(
    tmp_path: Path, signer: tuple[Signer, PublicKeys]
) -> None:
    key, trusted = signer
    rows = chain(12)
    outside = [checkpoint(key, rows[1]), checkpoint(key, rows[10])]  # seq 2 and 11
    inside = checkpoint(key, rows[6])  # seq 7

    report = verify_file(
        write(tmp_path / "x.jsonl", FORMATS["jsonl"], rows[4:9]), trusted, [*outside, inside]
    )

    assert report.ok, report.broken
    assert report.checkpoints_verified == 1 and report.authenticated_through_seq == 7
    assert any("2 external checkpoint(s) outside seq 5..9" in w for w in report.warnings)


def test_files_that_are_not_exports_are_refused_with_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "x.jsonl", FORMATS["jsonl"], chain(3))
    lines = path.read_text().splitlines(keepends=True)

    (tmp_path / "bad.jsonl").write_text(lines[0] + "{not json\n")
    with pytest.raises(ExportFormatError, match="line 2"):
        verify_file(tmp_path / "bad.jsonl", None)
    (tmp_path / "twice.jsonl").write_text("".join(lines + lines))
    with pytest.raises(ExportFormatError, match="after the end record"):
        verify_file(tmp_path / "twice.jsonl", None)
    (tmp_path / "no-header.jsonl").write_text("".join(lines[1:]))
    with pytest.raises(ExportFormatError, match="no header"):
        verify_file(tmp_path / "no-header.jsonl", None)
    (tmp_path / "x.csv").write_text("seq,at\n1,2\n")
    with pytest.raises(ExportFormatError, match="CSV header"):
        verify_file(tmp_path / "x.csv", None)
