"""How audit events are hashed: any change to an event or its place breaks the chain."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime

import pytest

from controlplane.audit.chain import (
    GENESIS_HASH,
    HASHED_FIELDS,
    EventDraft,
    canonical,
    canonical_document,
    document_hash,
    event_hash,
)
from controlplane.store.models import AuditEventRow
from tests.support.store import assert_chain_intact

AT = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC)
DRAFT = EventDraft(
    type="action.planned",
    actor="tollgate",
    at=AT,
    provider="lab-a",
    verdict_id="v-1",
    decision_id="dec_1",
    action_id="act_1",
    trace_id="ab" * 16,
    payload={"type": "block", "target": {"kind": "cidr", "value": "203.0.113.0/24"}, "n": 1.5},
)


def test_canonical_form_is_sorted_compact_utf8() -> None:
    draft = dataclasses.replace(DRAFT, actor="détecteur", payload={"b": 1, "a": [2, 1]})

    text = canonical(7, draft).decode("utf-8")

    assert json.loads(text) == {
        "seq": 7,
        "at": "2026-11-26T12:00:00.123456+00:00",
        "type": "action.planned",
        "actor": "détecteur",
        "provider": "lab-a",
        "verdict_id": "v-1",
        "decision_id": "dec_1",
        "action_id": "act_1",
        "trace_id": "ab" * 16,
        "payload": {"b": 1, "a": [2, 1]},
    }
    assert " " not in text
    assert text.index('"action_id"') < text.index('"actor"') < text.index('"at"')
    assert '"a":[2,1],"b":1' in text
    assert "détecteur" in text


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"payload": {}},
        {"payload": {"seq": 1, "z": {"y": "}", "x": ',"seq":'}, "q": [None, True, 1e16, -0.5]}},
        {"actor": 'a"b\\c\u2028é', "type": "zzz", "trace_id": None, "verdict_id": None},
        {"provider": None, "decision_id": None, "action_id": None},
    ],
)
@pytest.mark.parametrize("seq", [0, 1, 99, 2**63 - 1])
def test_the_parts_built_ahead_are_the_verifiers_document(
    change: dict[str, object], seq: int
) -> None:
    """The chain hashes each event from its two halves either side of `seq`, built
    ahead; a verifier hashes the whole document: the bytes are the same."""
    draft = dataclasses.replace(DRAFT, **change)  # type: ignore[arg-type]
    document = {f: getattr(draft, f, None) for f in HASHED_FIELDS} | {
        "seq": seq,
        "at": draft.at.isoformat(),
    }
    assert canonical(seq, draft) == canonical_document(document)
    assert event_hash(seq, draft, "f" * 64) == document_hash(document, "f" * 64)


def test_hash_is_sha256_of_canonical_form_and_previous_hash() -> None:
    expected = hashlib.sha256(canonical(1, DRAFT) + GENESIS_HASH.encode()).hexdigest()
    assert event_hash(1, DRAFT, GENESIS_HASH) == expected
    assert GENESIS_HASH == "0" * 64


def test_payload_key_order_does_not_change_the_hash() -> None:
    reordered = dataclasses.replace(DRAFT, payload=dict(reversed(list(DRAFT.payload.items()))))
    assert event_hash(3, reordered, GENESIS_HASH) == event_hash(3, DRAFT, GENESIS_HASH)


@pytest.mark.parametrize(
    "change",
    [
        {"type": "action.lifted"},
        {"actor": "someone"},
        {"at": AT.replace(microsecond=123457)},
        {"provider": "lab-b"},
        {"verdict_id": "v-2"},
        {"decision_id": None},
        {"action_id": "act_2"},
        {"trace_id": None},
        {"payload": {**DRAFT.payload, "n": 1.50001}},
    ],
    ids=lambda change: next(iter(change)),
)
def test_every_field_is_covered_by_the_hash(change: dict[str, object]) -> None:
    changed = dataclasses.replace(DRAFT, **change)  # type: ignore[arg-type]
    assert event_hash(1, changed, GENESIS_HASH) != event_hash(1, DRAFT, GENESIS_HASH)


def test_place_in_the_chain_is_covered_by_the_hash() -> None:
    assert event_hash(2, DRAFT, GENESIS_HASH) != event_hash(1, DRAFT, GENESIS_HASH)
    assert event_hash(1, DRAFT, "1" * 64) != event_hash(1, DRAFT, GENESIS_HASH)


def chain(drafts: list[EventDraft]) -> list[AuditEventRow]:
    rows, prev = [], GENESIS_HASH
    for seq, draft in enumerate(drafts, start=1):
        digest = event_hash(seq, draft, prev)
        rows.append(
            AuditEventRow(
                seq=seq,
                **{f.name: getattr(draft, f.name) for f in dataclasses.fields(draft)},
                prev_hash=prev,
                hash=digest,
            )
        )
        prev = digest
    return rows


def test_the_chain_check_catches_tampering() -> None:
    """The check the integration tests use: it accepts a good chain, refuses a bad one."""
    drafts = [dataclasses.replace(DRAFT, action_id=f"act_{i}") for i in range(4)]
    assert_chain_intact(chain(drafts))

    edited = chain(drafts)
    edited[2].payload = {**edited[2].payload, "type": "rate_limit"}
    with pytest.raises(AssertionError, match="event 3: bad hash"):
        assert_chain_intact(edited)

    dropped = chain(drafts)
    del dropped[1]
    with pytest.raises(AssertionError):
        assert_chain_intact(dropped)

    relinked = chain(drafts)
    relinked[0].prev_hash = "f" * 64
    with pytest.raises(AssertionError, match="event 1 does not link"):
        assert_chain_intact(relinked)
