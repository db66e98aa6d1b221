"""The HAProxy connector's `observe` at scale: the `show` replies are read in a thread, in
parts, in one pass, and must mean exactly what the plain reading of them always meant
(`plain_reading`: every line split, every key canonicalised with the toolkit's
`observed`, the model and the entries in two passes); meanwhile the event loop runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import connectors.haproxy as haproxy_module
from connectors.haproxy import PROMPT, _File, _Observed, _Survey
from controlplane.enforce.sdk import ConnectorError, Diff, Entry, EntryType
from controlplane.enforce.toolkit import observed
from tests.integration.connectors.haproxy_fixtures import (  # noqa: F401 (fixtures)
    Gateway,
    fingerprint,
    haproxy_binary_fixture,
    haproxy_fixture,
    haproxy_session_fixture,
    model_stub_fixture,
)


def plain_reading(spec: _File, reply: str) -> tuple[dict[str, str], list[Entry], int]:
    """The model, the entries and the number of lines of a `show` reply (decoded, the
    prompt cut off), as observe read them before it was made to scale."""
    copies = []
    for line in reply.splitlines():
        parts = line.split(" ", 2)
        assert line.startswith("0x") and len(parts) >= 2, line
        copies.append((parts[1], parts[2] if len(parts) == 3 else ""))

    def key_of(raw: str) -> str:
        if spec.kind != "acl" and not spec.references:
            return raw
        try:
            return observed("cidr" if "/" in raw else "ip", raw)
        except ValueError:
            return raw

    model: dict[str, str] = {}
    for raw, value in copies:
        key, line = key_of(raw), spec.line(raw, value)
        model[key] = line if key not in model else f"{model[key]}\n{line}"
    entries: dict[str, Entry] = {}
    for raw, value in copies:
        if spec.kind == "acl":
            key = key_of(raw)
            entries.setdefault(key, Entry(spec.type, "cidr" if "/" in raw else "ip", key))
        elif raw not in entries:
            entries[raw] = spec.entry(raw, value)
    return model, [] if spec.references else list(entries.values()), len(copies)


def _survey(spec: _File, reply: bytes) -> _Survey:
    """A whole `show` reply (its prompt included) fed to a survey in parts of at least
    `_SURVEY_PART` bytes, cut where `_Cli.survey` cuts them: before a newline."""
    survey = _Survey(spec)
    body = reply[: -len(PROMPT)]
    at = 0
    while at < len(body):
        cut = body.find(b"\n", at + haproxy_module._SURVEY_PART)
        stop = len(body) if cut < 0 else cut
        survey.feed(body[at:stop])
        at = stop
    return survey


def surveyed(spec: _File, reply: bytes) -> tuple[dict[str, str], list[Entry], int]:
    """The model a survey builds, and the entries an observe reads from it."""
    found = _survey(spec, reply)
    assert found.lines == list(found.held.values())
    entries = [] if spec.references else list(_Observed([(spec, found.held)]))
    return found.held, entries, found.copies


LIMIT = fingerprint("sk-limit")
REPLIES = {
    _File("/x/blocked.acl", "acl", EntryType.BLOCK, "ip"): [
        b"\n\n0x1 127.0.0.2",
        b"0x2 127.0.0.2",  # a copy of the same string
        b"0x3 ::ffff:127.0.0.2",  # the same address, spelled otherwise
        b"0x4 127.0.0.2/32",  # a network, not the address
        b"0x5 10.1.2.3/8",
        b"0x6 10.0.0.0/8",
        b"0x7 10.1.2.3/255.0.0.0",  # a netmask: no network Tollgate spells, kept as held
        b"0x8 1.2.3.4/08",
        b"0x9 2001:DB8::1",
        b"0xa 2001:db8::1",
        b"0xb 2001:db8:0:0:0:0:0:0/33",
        b"0xc ::ffff:10.0.0.0/104",
        b"0xd 0.0.0.0/0",
        b"0xe ::/0",
        b"0xf 192.0.2.1 and more words",
        b"0x10 192.0.2.2\r",  # \r\n ends a line too
        b"0x11 not\xff\xfe-an-address",  # not UTF-8
        b"0x12 10.0.0.07",
    ],
    _File("/x/blocked_ref.map", "map", EntryType.BLOCK, "ip", references=True): [
        b"0x1 ::ffff:127.0.0.2 TG-A",
        b"0x2 127.0.0.2 TG-B",
        b"0x3 10.1.2.3/8 TG-C with words",
        b"0x4 10.0.0.0/8 TG-\xc3\xa9",  # UTF-8 across a part's boundary
        b"0x5 192.0.2.9",  # no value
    ],
    _File("/x/rate_limit.map", "map", EntryType.RATE_LIMIT, "api_key"): [
        f"0x1 {LIMIT} 60:{Entry(EntryType.RATE_LIMIT, 'api_key', LIMIT).reference}".encode(),
        f"0x2 {LIMIT} 99".encode(),  # a second copy: the first is what HAProxy matches
        b"0x3 acct-b 5:TG-WRONG",  # not its reference: observed without a limit
        b"0x4 acct-c many:TG-X",
        b"0x5 acct-d\n\n\n",
    ],
}


@pytest.mark.parametrize("part", [1, 7, 64, 1 << 20])
def test_a_survey_in_parts_reads_a_reply_as_the_plain_reading_does(
    monkeypatch: pytest.MonkeyPatch, part: int
) -> None:
    monkeypatch.setattr(haproxy_module, "_SURVEY_PART", part)
    for spec, lines in REPLIES.items():
        reply = b"\n".join(lines) + PROMPT
        text = reply[: -len(PROMPT)].decode(errors="replace").strip("\n")

        assert surveyed(spec, reply) == plain_reading(spec, text)
    assert surveyed(_File("/x/allowed.acl", "acl", EntryType.ALLOW, "ip"), PROMPT) == ({}, [], 0)


def test_a_reply_that_lists_no_entries_says_the_file_is_not_loaded() -> None:
    spec = _File("/x/blocked.acl", "acl", EntryType.BLOCK, "ip")
    reply = b"0x1 10.0.0.1\nUnknown ACL identifier. Please use #<id> or <file>.\n" + PROMPT

    with pytest.raises(ConnectorError, match=r"no acl loaded from /x/blocked\.acl") as caught:
        _survey(spec, reply)
    assert caught.value.retryable is False
    assert "Unknown ACL identifier" in str(caught.value)


def block_reference(value: str) -> str:
    return Entry(EntryType.BLOCK, "ip", value).reference


HELD_BY_HAND = [
    *("127.0.0.2", "127.0.0.2", "::ffff:127.0.0.2", "127.0.0.2/32", "10.1.2.3/8"),
    *("10.0.0.0/8", "10.1.2.3/255.0.0.0", "1.2.3.4/08", "2001:DB8::1", "2001:db8::1"),
    *("2001:db8:0:0:0:0:0:0/33", "::ffff:10.0.0.0/104", "0.0.0.0/0", "::/0"),
]
"""What HAProxy 2.6 takes in a `src` ACL, spelled every way it keeps."""


@pytest.mark.parametrize("part", [1, 7, 1 << 20])
async def test_observe_at_a_real_haproxy_reads_what_the_plain_reading_does(
    haproxy: Gateway, monkeypatch: pytest.MonkeyPatch, part: int
) -> None:
    """Whatever the parts the replies are read in (`_SURVEY_PART` bytes at most)."""
    monkeypatch.setattr(haproxy_module, "_SURVEY_PART", part)
    o = haproxy.proxy.options
    key = fingerprint("sk-observe")
    limit = Entry(EntryType.RATE_LIMIT, "api_key", key, 30)
    by_hand = [
        *(f"add acl {o.blocked_acl} {value}" for value in HELD_BY_HAND),
        f"add acl {o.allowed_acl} 2001:DB8::7",
        f"add acl {o.allowed_acl} 127.0.0.4/32",
        f"add map {o.blocked_ref_map} ::ffff:127.0.0.2 TG-A",
        f"add map {o.blocked_ref_map} 10.1.2.3/8 TG-B",
        f"add map {o.revoked_map} {key} by-hand-1",
        f"add map {o.revoked_map} {key} by-hand-2",
        f"add map {o.revoked_map} key:with/odd=chars@1 é",
        f"add map {o.rate_limit_map} {key} {limit.requests_per_minute}:{limit.reference}",
        f"add map {o.rate_limit_map} sk-no-reference 12",
        f"add acl {o.blocked_acl} 127.0.0.9",
        f"add map {o.blocked_ref_map} 127.0.0.9 {block_reference('127.0.0.9')}",
    ]
    for command in by_hand:
        assert await haproxy.runtime(command) == "", command
    connector = haproxy.connector()

    state = await connector.observe()

    expected: list[Entry] = []
    for spec in connector._files:
        shown = await haproxy.runtime(f"show {spec.kind} {spec.path}")
        model, entries, count = plain_reading(spec, shown)
        assert connector._held[spec.path] == model, spec.path
        assert state.extra["entries_per_file"][spec.path] == count
        expected += entries
    # A block is held with the reference its refusal quotes: those added by hand with
    # none (or another) are not, and the reconcile writes them again, reference and all.
    references = connector._held[o.blocked_ref_map]
    expected = [
        e
        for e in expected
        if e.type is not EntryType.BLOCK
        or references.get(e.target_value, "").partition("\n")[0].partition(" ")[2] == e.reference
    ]
    assert state.entries == frozenset(expected)
    assert (
        not {
            Entry(EntryType.BLOCK, "ip", "127.0.0.2"),
            Entry(EntryType.BLOCK, "cidr", "127.0.0.2/32"),
            Entry(EntryType.BLOCK, "cidr", "10.0.0.0/8"),
            Entry(EntryType.BLOCK, "ip", "2001:db8::1"),
        }
        & state.entries
    )
    assert {
        Entry(EntryType.BLOCK, "ip", "127.0.0.9"),
        Entry(EntryType.ALLOW, "ip", "2001:db8::7"),
        Entry(EntryType.REVOKE_KEY, "api_key", key),
        limit,
        Entry(EntryType.RATE_LIMIT, "api_key", "sk-no-reference"),
    } <= state.entries
    held = connector._held[o.blocked_acl]
    assert held["127.0.0.2"] == "127.0.0.2\n127.0.0.2\n::ffff:127.0.0.2"
    assert held["10.0.0.0/8"] == "10.1.2.3/8\n10.0.0.0/8\n::ffff:10.0.0.0/104"


LARGE = 50_000


def write(path: str, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8")


def address(i: int) -> str:
    return f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


async def test_the_event_loop_runs_while_observe_reads_a_large_file(
    haproxy: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a part of a `show` reply is parsed into the model, the loop keeps running
    other tasks: a ticker counts its turns in those windows. The reading once took all of
    each window, on the loop: no turn at all. From a thread, the loop takes the GIL back
    at least every switch interval (5 ms) of a reading that takes tens of them."""
    o = haproxy.proxy.options
    write(o.blocked_acl, "".join(f"{address(i)}\n" for i in range(LARGE)))
    write(
        o.blocked_ref_map,
        "".join(f"{address(i)} {block_reference(address(i))}\n" for i in range(LARGE)),
    )
    haproxy.proxy.reload()  # HAProxy loads the files
    reading = False
    turns = 0
    feed = _Survey.feed

    def spy_feed(survey: _Survey, part: bytes) -> None:
        nonlocal reading
        reading = True
        try:
            feed(survey, part)
        finally:
            reading = False

    monkeypatch.setattr(_Survey, "feed", spy_feed)
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal turns
        while not done.is_set():
            turns += reading
            await asyncio.sleep(0)

    connector = haproxy.connector()
    ticking = asyncio.create_task(ticker())
    try:
        state = await connector.observe()
    finally:
        done.set()
        await ticking

    assert len(state.entries) == LARGE
    assert turns >= 10
    # One string per blocked value, however many models hold it.
    acl, refs = connector._held[o.blocked_acl], connector._held[o.blocked_ref_map]
    assert len(refs) == LARGE and all(acl[key] is key for key in refs)


async def test_observed_entries_stay_what_observe_saw_and_share_the_models_strings(
    haproxy: Gateway,
) -> None:
    """`observe` returns a view of its models, not a set of entries made up front: an
    apply while the view is held changes a copy of the model, so the view still says what
    the gateway held; and its entries hold the model's key strings (no copies to index)."""
    o = haproxy.proxy.options
    key = fingerprint("sk-view")
    for command in (
        f"add acl {o.blocked_acl} 127.0.0.2",
        f"add map {o.blocked_ref_map} 127.0.0.2 {block_reference('127.0.0.2')}",
        f"add map {o.revoked_map} {key} TG-X",
    ):
        assert await haproxy.runtime(command) == "", command
    connector = haproxy.connector()
    state = await connector.observe()
    before = {
        Entry(EntryType.BLOCK, "ip", "127.0.0.2"),
        Entry(EntryType.REVOKE_KEY, "api_key", key),
    }
    assert state.entries == before and len(state.entries) == 2
    models = {path: held for path, held in connector._held.items()}
    for entry in state.entries:
        path = o.blocked_acl if entry.type is EntryType.BLOCK else o.revoked_map
        [held] = [k for k in models[path] if k == entry.target_value]
        assert entry.target_value is held

    result = await connector.apply(
        Diff(
            add=(Entry(EntryType.BLOCK, "ip", "127.0.0.3"),),
            remove=(Entry(EntryType.REVOKE_KEY, "api_key", key),),
        )
    )

    assert not result.failed and not result.rejected
    assert state.entries == before
    assert Entry(EntryType.BLOCK, "ip", "127.0.0.3") not in state.entries
    assert Entry(EntryType.REVOKE_KEY, "api_key", key) in state.entries
    assert (await connector.observe()).entries == {
        Entry(EntryType.BLOCK, "ip", "127.0.0.2"),
        Entry(EntryType.BLOCK, "ip", "127.0.0.3"),
    }
