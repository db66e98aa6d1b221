"""Proving the audit trail intact: recompute the hash chain, event by event, in constant
memory, from the database or from an export file, and check signed checkpoints.

What each check catches:
- `hash`: an event's content (any hashed field) was edited;
- `link`: an event's `prev_hash` is not the previous event's hash (edited, or events
  were swapped);
- `gap` / `order`: seq skips (events deleted) or goes back (reordered, repeated);
- `truncated`: the chain ends before the head row, a checkpoint or the export's end
  record says it does (the newest events were deleted, or a file was cut);
- `head`: the head row's hash is not the last event's;
- `checkpoint`: the chain's hash at a checkpoint's seq is not the signed one: history
  up to there was rewritten, even if every hash was recomputed after the edit;
- `signature` / `unknown_key`: a checkpoint's signature does not verify with the
  public keys given, so it proves nothing (forged, or edited to match a rewrite).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.audit import repository
from controlplane.audit.chain import GENESIS_HASH, document_hash
from controlplane.audit.export import (
    FORMAT_NAME,
    Checkpoint,
    End,
    Event,
    ExportFormatError,
    Header,
    StoredEvent,
    sniff,
)
from controlplane.audit.keys import signature_valid
from controlplane.store.db import Database

PublicKeys = Mapping[str, Ed25519PublicKey]
"""Trusted public keys by key id."""


@dataclass(frozen=True)
class Break:
    """The first place the record stops proving itself."""

    seq: int | None
    """The event that fails; for `gap` and `order`, the seq that should have come next."""
    kind: str
    expected: str
    found: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind,
            "expected": self.expected,
            "found": self.found,
            "message": self.message,
        }


@dataclass
class Report:
    """What a verification found; `ok` is false exactly when `broken` is set. The CLI's
    `--json` and `GET /v1/audit/verify` both give `to_dict()`."""

    source: str
    events: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    checkpoints: int = 0
    checkpoints_verified: int = 0
    signatures_checked: bool = False
    key_ids: list[str] = field(default_factory=list)
    authenticated_through_seq: int | None = None
    """The highest seq a checkpoint with a valid signature vouches for: every event up to
    it is proven unchanged since that checkpoint was signed."""
    broken: Break | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.broken is None

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "source": self.source,
            "events": self.events,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash,
            "checkpoints": self.checkpoints,
            "checkpoints_verified": self.checkpoints_verified,
            "signatures_checked": self.signatures_checked,
            "key_ids": self.key_ids,
            "authenticated_through_seq": self.authenticated_through_seq,
            "broken": self.broken.to_dict() if self.broken else None,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events_per_second),
            "warnings": self.warnings,
        }


class ChainChecker:
    """Checks events fed in seq order against the chain rules and the checkpoints.

    `start_seq` / `anchor`: the seq and `prev_hash` the first event must have; None
    takes them from the first event (a partial export, whose first link cannot be
    checked offline). `keys`: None checks checkpoints against the chain only."""

    def __init__(
        self,
        report: Report,
        checkpoints: Sequence[Checkpoint],
        keys: PublicKeys | None,
        *,
        start_seq: int | None = 1,
        anchor: str | None = GENESIS_HASH,
    ) -> None:
        self.report = report
        self._keys = keys
        self._expected = start_seq
        self._prev = anchor
        self._pending: dict[int, list[Checkpoint]] = {}
        for checkpoint in checkpoints:
            self._pending.setdefault(checkpoint.seq, []).append(checkpoint)
        report.checkpoints += len(checkpoints)
        report.signatures_checked = keys is not None
        report.key_ids = sorted(keys) if keys else []

    def fail(self, seq: int | None, kind: str, expected: str, found: str, message: str) -> bool:
        self.report.broken = Break(seq, kind, expected, found, message)
        return False

    def event(self, document: dict[str, Any], prev_hash: str, stored: str) -> bool:
        """Check one event; False (with `report.broken` set) at the first break."""
        seq = document["seq"]
        if self._expected is None:
            self._expected = seq
        if seq != self._expected:
            if isinstance(seq, int) and seq > self._expected:
                return self.fail(
                    self._expected,
                    "gap",
                    str(self._expected),
                    str(seq),
                    f"seq {self._expected} to {seq - 1} are missing: events were deleted",
                )
            return self.fail(
                self._expected,
                "order",
                str(self._expected),
                str(seq),
                f"seq {seq} comes where {self._expected} should: events were reordered or repeated",
            )
        if self._prev is None:
            self._prev = prev_hash
        elif prev_hash != self._prev:
            return self.fail(
                seq,
                "link",
                self._prev,
                prev_hash,
                f"event {seq}'s prev_hash is not event {seq - 1}'s hash: an event was "
                "edited, replaced or moved",
            )
        computed = document_hash(document, self._prev)
        if computed != stored:
            return self.fail(
                seq,
                "hash",
                computed,
                stored,
                f"event {seq}'s content does not hash to its stored hash: it was edited",
            )
        if seq in self._pending and not self._checkpoints_at(seq, stored):
            return False
        report = self.report
        if report.first_seq is None:
            report.first_seq = seq
        report.events += 1
        report.last_seq, report.last_hash = seq, stored
        self._prev, self._expected = stored, seq + 1
        return True

    def _checkpoints_at(self, seq: int, stored: str) -> bool:
        for checkpoint in self._pending.pop(seq):
            if self._keys is not None:
                public = self._keys.get(checkpoint.key_id)
                if public is None:
                    return self.fail(
                        seq,
                        "unknown_key",
                        " or ".join(sorted(self._keys)) or "a trusted key",
                        checkpoint.key_id,
                        f"the checkpoint at seq {seq} is signed by key {checkpoint.key_id}, "
                        "which is not among the public keys given: pass the key that "
                        "signed it (--public-key repeats), or treat it as forged",
                    )
                if not signature_valid(
                    public, checkpoint.seq, checkpoint.hash, checkpoint.signature
                ):
                    return self.fail(
                        seq,
                        "signature",
                        f"an Ed25519 signature by {checkpoint.key_id} of (seq, hash)",
                        checkpoint.signature,
                        f"the checkpoint at seq {seq} does not verify: its hash or "
                        "signature was edited after signing",
                    )
            if checkpoint.hash != stored:
                return self.fail(
                    seq,
                    "checkpoint",
                    checkpoint.hash,
                    stored,
                    f"the chain's hash at seq {seq} is not the one checkpointed at "
                    f"{checkpoint.at}: history up to seq {seq} was rewritten",
                )
            self.report.checkpoints_verified += 1
            if self._keys is not None:
                self.report.authenticated_through_seq = seq
        return True

    def finish(self) -> bool:
        """After the last event: a checkpoint beyond it means the chain was cut."""
        if self._pending:
            seq = min(self._pending)
            last = self.report.last_seq
            return self.fail(
                seq,
                "truncated",
                f"events up to seq {seq} (checkpointed)",
                f"the chain ends at seq {last}" if last else "no events",
                f"a checkpoint vouches for seq {seq} but the chain ends before it: "
                "the newest events were deleted",
            )
        return True


def _document(row: StoredEvent) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": row.at,
        "type": row.type,
        "actor": row.actor,
        "provider": row.provider,
        "verdict_id": row.verdict_id,
        "decision_id": row.decision_id,
        "action_id": row.action_id,
        "trace_id": row.trace_id,
        "payload": json.loads(row.payload),
    }


def _feed(checker: ChainChecker, rows: Iterable[StoredEvent]) -> bool:
    """Check a chunk of stored events; False at the first break. Run in a worker thread
    (a chunk of 5,000 events is a tenth of a second of hashing, which on the event loop
    would hold up every request meanwhile)."""
    return all(checker.event(_document(row), row.prev_hash, row.hash) for row in rows)


def _external(
    checker_checkpoints: list[Checkpoint],
    extra: Iterable[Checkpoint],
    first: int,
    last: int | None,
) -> list[str]:
    """Add checkpoints kept outside the database (a file, an earlier export). Those
    outside `first..last` cannot be checked and are reported, not failed; with `last`
    None (the database) one past the end is kept: it shows the tail was deleted."""
    skipped = 0
    for checkpoint in extra:
        if first <= checkpoint.seq and (last is None or checkpoint.seq <= last):
            checker_checkpoints.append(checkpoint)
        else:
            skipped += 1
    if not skipped:
        return []
    return [f"{skipped} external checkpoint(s) outside seq {first}..{last} not checked"]


async def verify_database(
    db: Database, keys: PublicKeys | None, external: Sequence[Checkpoint] = ()
) -> Report:
    """`verify_chain` in a read session of its own: for the CLI's local path, which
    has a database and no request."""
    async with db.read() as session:
        return await verify_chain(session, keys, external)


async def verify_chain(
    session: AsyncSession, keys: PublicKeys | None, external: Sequence[Checkpoint] = ()
) -> Report:
    """Recompute the whole chain from genesis, check the head row and every checkpoint
    (stored, and `external` ones kept elsewhere)."""
    report = Report(source="database")
    started = time.perf_counter()
    stored = await repository.checkpoints(session)
    head_seq, head_hash = await repository.head(session)
    checkpoints = list(stored)
    report.warnings += _external(checkpoints, external, 1, None)
    checker = ChainChecker(report, checkpoints, keys)
    intact = True
    if head_seq:
        async with aclosing(repository.stream_events(session, 1, head_seq)) as chunks:
            async for rows in chunks:
                intact = await asyncio.to_thread(_feed, checker, rows)
                if not intact:
                    break
    if intact and checker.finish():
        _check_head(checker, head_seq, head_hash)
    report.seconds = time.perf_counter() - started
    _advise(report, keys, bool(stored))
    return report


def _check_head(checker: ChainChecker, head_seq: int, head_hash: str) -> None:
    report = checker.report
    last = report.last_seq or 0
    if last < head_seq:
        checker.fail(
            last + 1,
            "truncated",
            f"events up to seq {head_seq} (the head row)",
            f"the chain ends at seq {last}" if last else "no events",
            f"the head row records seq {head_seq} but the last event is seq {last}: the "
            "newest events were deleted",
        )
    elif head_seq and report.last_hash != head_hash:
        checker.fail(
            head_seq,
            "head",
            report.last_hash or "",
            head_hash,
            "the head row's hash is not the last event's: the head or the chain was edited",
        )


def _advise(report: Report, keys: PublicKeys | None, has_checkpoints: bool) -> None:
    if not report.ok:
        return
    if keys is None and has_checkpoints:
        report.warnings.append(
            "checkpoint signatures were not checked: pass --public-key to prove history "
            "was not rewritten by someone who recomputed the hashes"
        )
    elif keys is not None and report.authenticated_through_seq is None and report.events:
        report.warnings.append(
            "no checkpoint signed by the given key(s) covers these events: a rewrite "
            "with recomputed hashes would not show"
        )
    if (
        report.authenticated_through_seq is not None
        and report.last_seq is not None
        and report.authenticated_through_seq < report.last_seq
    ):
        report.warnings.append(
            f"events after seq {report.authenticated_through_seq} are chained but not yet "
            "covered by a signed checkpoint"
        )


async def verify_range(session: AsyncSession, after: int, anchor: str, last: int) -> Report:
    """Check events `after+1 .. last` link to `anchor` (the hash at `after`) and hash
    right: what a new checkpoint must hold before it signs `last`."""
    report = Report(source="database")
    checker = ChainChecker(report, [], None, start_seq=after + 1, anchor=anchor)
    intact = True
    async with aclosing(repository.stream_events(session, after + 1, last)) as chunks:
        async for rows in chunks:
            intact = await asyncio.to_thread(_feed, checker, rows)
            if not intact:
                break
    if intact and (report.last_seq or after) < last:
        checker.fail(
            (report.last_seq or after) + 1,
            "truncated",
            f"events up to seq {last}",
            f"the chain ends at seq {report.last_seq or after}",
            "events are missing before the head",
        )
    return report


def verify_file(path: Path, keys: PublicKeys | None, external: Sequence[Checkpoint] = ()) -> Report:
    """Verify an export offline: its events chain, its end record matches (not cut), and
    its checkpoints (and `external` ones) hold."""
    report = Report(source=str(path))
    started = time.perf_counter()
    try:
        with path.open(encoding="utf-8", newline="") as stream:
            _verify_stream(report, sniff(stream).read(stream), keys, external)
    except OSError as exc:
        raise ExportFormatError(f"cannot read {path}: {exc.strerror}") from None
    report.seconds = time.perf_counter() - started
    _advise(report, keys, report.checkpoints > 0)
    return report


def _verify_stream(
    report: Report,
    records: Iterable[Any],
    keys: PublicKeys | None,
    external: Sequence[Checkpoint],
) -> None:
    header: Header | None = None
    checkpoints: list[Checkpoint] = []
    checker: ChainChecker | None = None
    end: End | None = None
    for record in records:
        if end is not None:
            raise ExportFormatError("records after the end record: the file was appended to")
        if isinstance(record, Header):
            if header is not None or checker is not None:
                raise ExportFormatError("a second header: two exports were concatenated")
            if record.meta.get("format") != FORMAT_NAME:
                raise ExportFormatError(f"the header's format is not {FORMAT_NAME!r}")
            header = record
        elif isinstance(record, Checkpoint):
            if checker is not None:
                raise ExportFormatError("a checkpoint after the first event: write them first")
            checkpoints.append(record)
        elif isinstance(record, Event):
            if checker is None:
                checker = _file_checker(report, header, checkpoints, keys, external, record)
            if not checker.event(record.document, record.prev_hash, record.hash):
                return
        elif isinstance(record, End):
            end = record
    if header is None:
        raise ExportFormatError("no header record: not a Tollgate audit export")
    if checker is None:
        checker = ChainChecker(report, checkpoints, keys, start_seq=None, anchor=None)
    if not checker.finish():
        return
    if end is None:
        checker.fail(
            (report.last_seq or 0) + 1,
            "truncated",
            "an end record",
            f"the file ends after seq {report.last_seq}",
            "the export has no end record: it was cut short (a failed download?)",
        )
        return
    if end.events != report.events or end.last_seq != report.last_seq:
        checker.fail(
            report.last_seq,
            "truncated",
            f"{end.events} events up to seq {end.last_seq} (the end record)",
            f"{report.events} events up to seq {report.last_seq}",
            "the end record does not match the events read: events were removed",
        )
    elif end.last_hash != report.last_hash:
        checker.fail(
            report.last_seq,
            "head",
            end.last_hash or "",
            report.last_hash or "",
            "the end record's hash is not the last event's",
        )


def _file_checker(
    report: Report,
    header: Header | None,
    checkpoints: list[Checkpoint],
    keys: PublicKeys | None,
    external: Sequence[Checkpoint],
    first: Event,
) -> ChainChecker:
    start = header.meta.get("first_seq") if header else None
    start_seq = start if isinstance(start, int) else first.document["seq"]
    anchor = GENESIS_HASH if start_seq == 1 else None
    if anchor is None:
        report.warnings.append(
            f"the export starts at seq {start_seq}: its first event's link to the events "
            "before it cannot be checked offline"
        )
    last = header.meta.get("last_seq") if header else None
    report.warnings += _external(
        checkpoints, external, start_seq, last if isinstance(last, int) else None
    )
    return ChainChecker(report, checkpoints, keys, start_seq=start_seq, anchor=anchor)


def read_checkpoints(path: Path) -> list[Checkpoint]:
    """Checkpoints kept outside the database: a file of `tollgate audit checkpoint
    --json` lines, or any export (its checkpoint records)."""
    try:
        with path.open(encoding="utf-8", newline="") as stream:
            first = stream.read(1)
            stream.seek(0)
            if first == "{":
                return _checkpoint_lines(stream)
            return [r for r in sniff(stream).read(stream) if isinstance(r, Checkpoint)]
    except OSError as exc:
        raise ExportFormatError(f"--checkpoints: cannot read {path}: {exc.strerror}") from None


def _checkpoint_lines(stream: Iterable[str]) -> list[Checkpoint]:
    found = []
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if item.get("record", "checkpoint") != "checkpoint":
                continue
            found.append(
                Checkpoint(
                    int(item["seq"]),
                    str(item["hash"]),
                    str(item["at"]),
                    str(item["key_id"]),
                    str(item["signature"]),
                )
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ExportFormatError(
                f"--checkpoints line {number}: not a checkpoint: {exc}"
            ) from None
    return found
