"""Audit export formats, JSON lines and CSV: written from the database, read back by the
offline verifier. docs/audit.md describes both.

An export is a header, the signed checkpoints inside its range, the events in seq
order with their chain fields, and an end record. The end record is how a reader
tells a complete export from a cut one: a streamed download can fail half-way after
its 200 was sent.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TextIO

from controlplane.audit.chain import HASHED_FIELDS
from controlplane.errors import InvalidInput

FORMAT_NAME = "tollgate-audit-export"
FORMAT_VERSION = 1

EVENT_FIELDS = (*HASHED_FIELDS, "prev_hash", "hash")
CSV_COLUMNS = ("record", *EVENT_FIELDS, "key_id", "signature")
NULL = "\\N"
"""How CSV writes a null (as PostgreSQL's COPY does): an empty cell is an empty string,
and the hash tells the two apart. A text that starts with a backslash gets one more."""


@dataclass(frozen=True)
class Checkpoint:
    """A signed (seq, hash), as stored or as read from an export."""

    seq: int
    hash: str
    at: str
    key_id: str
    signature: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "hash": self.hash,
            "at": self.at,
            "key_id": self.key_id,
            "signature": self.signature,
        }


class StoredEvent(NamedTuple):
    """An audit event as the database streams it for export and verification: `at` as
    the ISO 8601 text the hash covers, `payload` as the stored JSON text (parsed only
    where it must be: to recompute the hash)."""

    seq: int
    at: str
    type: str
    actor: str
    provider: str | None
    verdict_id: str | None
    decision_id: str | None
    action_id: str | None
    trace_id: str | None
    payload: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Event:
    """An event read from an export: the hashed fields (`at` as text), and the links."""

    document: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Header:
    meta: dict[str, Any]


@dataclass(frozen=True)
class End:
    events: int
    first_seq: int | None
    last_seq: int | None
    last_hash: str | None


Record = Header | Checkpoint | Event | End


class ExportFormatError(InvalidInput):
    """An export file that is not one Tollgate wrote (or was cut or edited past reading)."""


_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _compact(value: Any) -> str:
    return _COMPACT.encode(value)


def _one_line(payload: str) -> str:
    """Stored JSON text on one line (as written it always is; a row edited by hand
    might not be, and a line break would split the JSON lines record)."""
    return _compact(json.loads(payload)) if "\n" in payload or "\r" in payload else payload


class JsonLines:
    """One JSON document per line; each has `record`: header, checkpoint, event or end."""

    media_type = "application/x-ndjson"
    suffix = "jsonl"

    def header(self, meta: dict[str, Any]) -> str:
        return _compact({"record": "header", **meta}) + "\n"

    def checkpoints(self, checkpoints: Sequence[Checkpoint]) -> str:
        return "".join(
            _compact({"record": "checkpoint", **c.to_dict()}) + "\n" for c in checkpoints
        )

    def events(self, rows: Iterable[StoredEvent]) -> str:
        # The stored payload text is spliced in as it is (it is JSON already): decoding
        # and re-encoding it would double the cost of an export.
        return "".join(
            _compact(
                {
                    "record": "event",
                    "seq": r.seq,
                    "at": r.at,
                    "type": r.type,
                    "actor": r.actor,
                    "provider": r.provider,
                    "verdict_id": r.verdict_id,
                    "decision_id": r.decision_id,
                    "action_id": r.action_id,
                    "trace_id": r.trace_id,
                    "prev_hash": r.prev_hash,
                    "hash": r.hash,
                }
            )[:-1]
            + f',"payload":{_one_line(r.payload)}}}\n'
            for r in rows
        )

    def end(self, end: End) -> str:
        return (
            _compact(
                {
                    "record": "end",
                    "events": end.events,
                    "first_seq": end.first_seq,
                    "last_seq": end.last_seq,
                    "last_hash": end.last_hash,
                }
            )
            + "\n"
        )

    def read(self, lines: Iterable[str]) -> Iterator[Record]:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                kind = item.pop("record")
                if kind == "event":
                    prev_hash, digest = item.pop("prev_hash"), item.pop("hash")
                    if set(item) != _HASHED:
                        raise ValueError(f"event fields must be {sorted(_HASHED)}")
                    yield Event(item, prev_hash, digest)
                elif kind == "checkpoint":
                    yield Checkpoint(**item)
                elif kind == "header":
                    yield Header(item)
                elif kind == "end":
                    yield End(**item)
                else:
                    raise ValueError(f"unknown record {kind!r}")
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ExportFormatError(
                    f"line {number}: not an audit export record: {exc}"
                ) from None


_HASHED = {f for f in EVENT_FIELDS if f not in ("prev_hash", "hash")}


def _cell(value: str | None) -> str:
    if value is None:
        return NULL
    return "\\" + value if value.startswith("\\") else value


def _uncell(text: str) -> str | None:
    if text == NULL:
        return None
    return text[1:] if text.startswith("\\") else text


def _csv_row(**cells: Any) -> list[Any]:
    """A CSV row in `CSV_COLUMNS` order; columns not given are empty."""
    return [cells.get(column, "") for column in CSV_COLUMNS]


class Csv:
    """RFC 4180 CSV with a header row `CSV_COLUMNS`; `payload` holds the event's JSON."""

    media_type = "text/csv; charset=utf-8"
    suffix = "csv"

    def _rows(self, rows: Iterable[Sequence[Any]]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        return buffer.getvalue()

    def header(self, meta: dict[str, Any]) -> str:
        return self._rows([CSV_COLUMNS, _csv_row(record="header", payload=_compact(meta))])

    def checkpoints(self, checkpoints: Sequence[Checkpoint]) -> str:
        return self._rows(
            _csv_row(
                record="checkpoint",
                seq=c.seq,
                at=c.at,
                hash=c.hash,
                key_id=c.key_id,
                signature=c.signature,
            )
            for c in checkpoints
        )

    def events(self, rows: Iterable[StoredEvent]) -> str:
        return self._rows(
            [
                "event",
                r.seq,
                r.at,
                _cell(r.type),
                _cell(r.actor),
                _cell(r.provider),
                _cell(r.verdict_id),
                _cell(r.decision_id),
                _cell(r.action_id),
                _cell(r.trace_id),
                r.payload,
                r.prev_hash,
                r.hash,
                "",
                "",
            ]
            for r in rows
        )

    def end(self, end: End) -> str:
        summary = {"events": end.events, "first_seq": end.first_seq, "last_seq": end.last_seq}
        return self._rows(
            [_csv_row(record="end", payload=_compact(summary), hash=_cell(end.last_hash))]
        )

    def read(self, lines: Iterable[str]) -> Iterator[Record]:
        reader = csv.reader(lines)
        header = next(reader, None)
        if header is None or tuple(header) != CSV_COLUMNS:
            raise ExportFormatError(f"line 1: the CSV header must be {','.join(CSV_COLUMNS)}")
        for row in reader:
            number = reader.line_num
            try:
                if len(row) != len(CSV_COLUMNS):
                    raise ValueError(f"{len(row)} columns, expected {len(CSV_COLUMNS)}")
                (kind, seq, at, type_, actor, provider, verdict_id, decision_id, action_id,
                 trace_id, payload, prev_hash, digest, key_id, signature) = row  # fmt: skip
                if kind == "event":
                    document = {
                        "seq": int(seq),
                        "at": at,
                        "type": _uncell(type_),
                        "actor": _uncell(actor),
                        "provider": _uncell(provider),
                        "verdict_id": _uncell(verdict_id),
                        "decision_id": _uncell(decision_id),
                        "action_id": _uncell(action_id),
                        "trace_id": _uncell(trace_id),
                        "payload": json.loads(payload),
                    }
                    yield Event(document, prev_hash, digest)
                elif kind == "checkpoint":
                    yield Checkpoint(int(seq), digest, at, key_id, signature)
                elif kind == "header":
                    yield Header(json.loads(payload))
                elif kind == "end":
                    summary = json.loads(payload)
                    yield End(
                        events=summary["events"],
                        first_seq=summary["first_seq"],
                        last_seq=summary["last_seq"],
                        last_hash=_uncell(digest),
                    )
                else:
                    raise ValueError(f"unknown record {kind!r}")
            except (ValueError, KeyError, TypeError) as exc:
                raise ExportFormatError(
                    f"line {number}: not an audit export record: {exc}"
                ) from None


Format = JsonLines | Csv
FORMATS: dict[str, Format] = {"jsonl": JsonLines(), "csv": Csv()}


def sniff(stream: TextIO) -> Format:
    """JSON lines start with `{`; CSV with its header row."""
    start = stream.read(1)
    stream.seek(0)
    return FORMATS["jsonl"] if start == "{" else FORMATS["csv"]
