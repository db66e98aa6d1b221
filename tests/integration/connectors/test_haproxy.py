"""The HAProxy connector against a real HAProxy 2.6: every enforcement is checked with
real HTTP requests through the proxy, from distinct loopback source addresses."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

from connectors.haproxy import _PART, HAProxyOptions, _Cli, _parts, sample_config
from controlplane.enforce.sdk import (
    ApplyResult,
    ConnectorError,
    Diff,
    Entry,
    EntryType,
    GatewayUnavailable,
)
from tests.integration.connectors.haproxy_fixtures import (  # noqa: F401 (fixtures)
    Gateway,
    fingerprint,
    haproxy_binary_fixture,
    haproxy_by_id_fixture,
    haproxy_fixture,
    haproxy_id_fixture,
    haproxy_session_fixture,
    model_stub_fixture,
)

REPO = Path(__file__).resolve().parents[3]
OK = 200


def block(value: str) -> Entry:
    return Entry(EntryType.BLOCK, "cidr" if "/" in value else "ip", value)


def revoke(key: str) -> Entry:
    return Entry(EntryType.REVOKE_KEY, "api_key", key)


def limit(key: str, per_minute: int, kind: str = "api_key") -> Entry:
    return Entry(EntryType.RATE_LIMIT, kind, key, per_minute)


def suspend(value: str, kind: str = "account") -> Entry:
    return Entry(EntryType.SUSPEND, kind, value)


def held(entry: Entry) -> str:
    """A limit's value in its map: requests per minute, then the reference to quote."""
    return f"{entry.requests_per_minute}:{entry.reference}"


async def apply(
    gateway: Gateway,
    add: Iterable[Entry] = (),
    remove: Iterable[Entry] = (),
    change: Iterable[Entry] = (),
    **options: object,
) -> ApplyResult:
    """Apply through a fresh connector and expect every entry done; the connector is
    closed after, so the files hold the change too (they are written coalesced)."""
    diff = Diff(add=tuple(add), remove=tuple(remove), change=tuple(change))
    connector = gateway.connector(**options)
    result = await connector.apply(diff)
    await connector.close()
    assert not result.failed and not result.rejected, (result.failed, result.rejected)
    assert len(result.done) == diff.size
    return result


def lines(path: str) -> list[str]:
    text = Path(path).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def chmod(path: str, mode: int) -> None:
    Path(path).chmod(mode)


def mode(path: str) -> int:
    return Path(path).stat().st_mode & 0o777


def leftovers(directory: str) -> list[Path]:
    """Temporary files an atomic write left behind."""
    return list(Path(directory).glob(".*.tmp"))


def write(path: str, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8")


def inode(path: str) -> int:
    """Changes when a file is replaced (an atomic write renames a new file over it)."""
    return Path(path).stat().st_ino


def make_unwritable(path: str) -> None:
    """A directory where the file was: it cannot be replaced, whoever runs the test
    (root included). `make_writable` puts the file back."""
    Path(path).rename(f"{path}.away")
    Path(path).mkdir()


def make_writable(path: str) -> None:
    Path(path).rmdir()
    Path(f"{path}.away").rename(path)


async def version_of(gateway: Gateway, kind: str, path: str) -> int:
    """The committed version of an ACL or map (`prepare`/`commit` raises it)."""
    listing = await gateway.runtime(f"show {kind}")
    [line] = [row for row in listing.splitlines() if f"({path})" in row]
    found = re.search(r"curr_ver=(\d+)", line)
    assert found is not None, line
    return int(found.group(1))


async def test_blocked_ips_and_cidrs_get_403_and_others_200(haproxy: Gateway) -> None:
    await apply(haproxy, add=[block("127.0.0.2"), block("127.0.1.0/24")])

    assert await haproxy.get("127.0.0.2") == 403
    assert await haproxy.get("127.0.1.77") == 403
    assert await haproxy.get("127.0.0.3") == OK
    assert await haproxy.get("127.0.2.1") == OK


async def test_a_revoked_key_gets_401_matched_by_its_fingerprint(haproxy: Gateway) -> None:
    await apply(haproxy, add=[revoke(fingerprint("sk-revoked-1"))])

    assert await haproxy.get(**{"x-api-key": "sk-revoked-1"}) == 401
    assert await haproxy.get(**{"x-api-key": "sk-someone-else"}) == OK
    assert await haproxy.get() == OK


async def test_a_limited_key_gets_429_past_its_limit_and_others_do_not(haproxy: Gateway) -> None:
    await apply(haproxy, add=[limit(fingerprint("sk-limited-1"), 5)])

    assert await haproxy.statuses(8, **{"x-api-key": "sk-limited-1"}) == [OK] * 5 + [429] * 3
    assert await haproxy.statuses(8, **{"x-api-key": "sk-heavy-but-fine"}) == [OK] * 8


async def test_lifting_gives_access_back(haproxy: Gateway) -> None:
    entries = [
        block("127.0.0.4"),
        revoke(fingerprint("sk-lift-a")),
        limit(fingerprint("sk-lift-b"), 0),
    ]
    await apply(haproxy, add=entries)
    assert await haproxy.get("127.0.0.4") == 403
    assert await haproxy.get(**{"x-api-key": "sk-lift-a"}) == 401
    assert await haproxy.get(**{"x-api-key": "sk-lift-b"}) == 429

    await apply(haproxy, remove=entries)

    assert await haproxy.get("127.0.0.4") == OK
    assert await haproxy.get(**{"x-api-key": "sk-lift-a"}) == OK
    assert await haproxy.get(**{"x-api-key": "sk-lift-b"}) == OK
    assert lines(haproxy.proxy.options.blocked_acl) == []


async def test_observe_is_canonical_and_removal_deletes_the_stored_spelling(
    haproxy: Gateway,
) -> None:
    acl, refs = haproxy.proxy.options.blocked_acl, haproxy.proxy.options.blocked_ref_map
    for by_hand, canonical in (
        ("127.0.0.2/32", "127.0.0.2/32"),
        ("127.0.0.9", "127.0.0.9"),
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("2001:DB8::1", "2001:db8::1"),
    ):
        assert await haproxy.runtime(f"add acl {acl} {by_hand}") == ""
        reference = block(canonical).reference
        assert await haproxy.runtime(f"add map {refs} {canonical} {reference}") == ""

    state = await haproxy.connector().observe()

    assert state.entries == {
        block("127.0.0.2/32"),  # a /32 is a CIDR entry, not the IP 127.0.0.2
        block("127.0.0.9"),
        block("10.0.0.0/8"),
        block("2001:db8::1"),
    }
    await apply(haproxy, remove=state.entries)
    assert await haproxy.runtime(f"show acl {acl}") == ""


async def test_maps_have_no_upsert_so_add_sets_and_set_adds(haproxy: Gateway) -> None:
    path = haproxy.proxy.options.rate_limit_map
    key = fingerprint("sk-upsert")
    await apply(haproxy, add=[limit(key, 10)])
    await apply(haproxy, add=[limit(key, 20)])  # an add of a held key: a set
    assert lines(path) == [f"{key} {held(limit(key, 20))}"]

    assert await haproxy.runtime(f"del map {path} {key}") == ""
    await apply(haproxy, change=[limit(key, 30)])  # a change of a missing key: an add
    assert lines(path) == [f"{key} {held(limit(key, 30))}"]

    assert await haproxy.runtime(f"add map {path} {key} 99") == ""  # a duplicate by hand
    await apply(haproxy, change=[limit(key, 40)])
    assert [
        line.split()[2] for line in (await haproxy.runtime(f"show map {path}")).splitlines()
    ] == [held(limit(key, 40))] * 2
    assert {e.requests_per_minute for e in (await haproxy.connector().observe()).entries} == {40}


async def test_every_change_is_written_to_the_files_atomically(haproxy: Gateway) -> None:
    o = haproxy.proxy.options
    chmod(o.revoked_map, 0o640)
    await apply(
        haproxy,
        add=[block("127.0.0.5"), revoke(fingerprint("sk-file")), limit(fingerprint("sk-f2"), 7)],
    )

    assert lines(o.blocked_acl) == ["127.0.0.5"]
    revoked = revoke(fingerprint("sk-file"))
    assert lines(o.revoked_map) == [f"{revoked.target_value} {revoked.reference}"]
    assert lines(o.rate_limit_map) == [
        f"{fingerprint('sk-f2')} {held(limit(fingerprint('sk-f2'), 7))}"
    ]
    assert mode(o.revoked_map) == 0o640  # the old file's mode kept
    assert leftovers(o.state_dir) == []


async def test_state_survives_a_reload_and_a_restart(haproxy: Gateway) -> None:
    entries = [
        block("127.0.0.6"),
        revoke(fingerprint("sk-reload-a")),
        limit(fingerprint("sk-reload-b"), 2),
    ]
    await apply(haproxy, add=entries)
    before = haproxy.proxy.pids()

    haproxy.proxy.reload()
    assert haproxy.proxy.pids() != before
    assert await haproxy.get("127.0.0.6") == 403
    assert await haproxy.get(**{"x-api-key": "sk-reload-a"}) == 401
    assert await haproxy.statuses(3, **{"x-api-key": "sk-reload-b"}) == [OK, OK, 429]

    haproxy.proxy.stop()
    haproxy.proxy.start()
    assert (await haproxy.connector().observe()).entries == set(entries)
    assert await haproxy.get("127.0.0.6") == 403
    assert await haproxy.get(**{"x-api-key": "sk-reload-a"}) == 401
    assert await haproxy.statuses(3, **{"x-api-key": "sk-reload-b"}) == [OK, OK, 429]


async def test_a_large_change_is_staged_and_committed_at_once(haproxy: Gateway) -> None:
    acl = haproxy.proxy.options.blocked_acl
    cidrs = [block(f"10.{i // 256}.{i % 256}.0/24") for i in range(300)]
    start = await version_of(haproxy, "acl", acl)

    await apply(haproxy, add=cidrs, bulk_threshold=100)
    assert await version_of(haproxy, "acl", acl) == start + 1  # one prepare/commit
    await apply(haproxy, add=[block("127.0.0.7")], bulk_threshold=100)
    assert await version_of(haproxy, "acl", acl) == start + 1  # one entry: one command
    await apply(haproxy, remove=cidrs[:200], bulk_threshold=100)
    assert await version_of(haproxy, "acl", acl) == start + 2

    state = await haproxy.connector().observe()
    assert state.entries == {*cidrs[200:], block("127.0.0.7")}
    assert sorted(lines(acl)) == sorted(e.target_value for e in state.entries)
    assert await haproxy.get("127.0.0.7") == 403


async def test_observe_rewrites_a_file_that_lost_the_runtime_state(haproxy: Gateway) -> None:
    acl = haproxy.proxy.options.blocked_acl
    await apply(haproxy, add=[block("127.0.0.8")])
    write(acl, "127.0.0.99\n")  # edited by hand

    await haproxy.connector().observe()

    assert lines(acl) == ["127.0.0.8"]  # a reload now loads what is enforced


async def test_observe_leaves_a_file_that_holds_the_runtime_state_alone(haproxy: Gateway) -> None:
    o = haproxy.proxy.options
    await apply(haproxy, add=[block("127.0.0.8"), revoke(fingerprint("sk-kept"))])
    write(o.blocked_acl, "\n".join(["# Written by hand", *lines(o.blocked_acl), "# a note", ""]))
    files = {path: inode(path) for path in (o.blocked_acl, o.revoked_map, o.blocked_ref_map)}

    await haproxy.connector().observe()

    # Byte for byte the same, or the same entries (a comment aside): nothing rewritten.
    assert {path: inode(path) for path in files} == files


def test_a_file_written_in_parts_is_the_whole_file() -> None:
    header = "# Written by Tollgate"
    for count in (0, 1, _PART, _PART + 1, 2 * _PART + 3):
        model = [f"k{i} v{i}" for i in range(count)]
        whole = "\n".join([header, *model]) + "\n"
        assert b"".join(_parts(header, model)) == whole.encode()


async def test_the_files_hold_every_copy_the_runtime_holds_in_its_order(
    haproxy: Gateway,
) -> None:
    o = haproxy.proxy.options
    a, b, c = (fingerprint(f"sk-copies-{name}") for name in "abc")
    for by_hand in (
        f"add map {o.revoked_map} {b} by-hand",
        f"add map {o.revoked_map} {a} by-hand-1",
        f"add map {o.revoked_map} {a} by-hand-2",  # a second copy of the key
        f"add acl {o.blocked_acl} 127.0.0.2/32",
        f"add acl {o.blocked_acl} 10.1.2.3/8",  # held as spelled, observed as 10.0.0.0/8
    ):
        assert await haproxy.runtime(by_hand) == ""
    connector = haproxy.connector(file_flush_seconds=3600.0)
    await connector.observe()

    result = await connector.apply(
        Diff(
            add=(revoke(a), revoke(c), block("127.0.0.3")),
            remove=(revoke(b), block("127.0.0.2/32")),
        )
    )
    await connector.close()

    assert not result.failed and not result.rejected
    for kind, path in (("map", o.revoked_map), ("acl", o.blocked_acl), ("map", o.blocked_ref_map)):
        shown = (await haproxy.runtime(f"show {kind} {path}")).splitlines()
        assert lines(path) == [line.split(" ", 1)[1] for line in shown]
    assert lines(o.revoked_map) == [
        f"{a} {revoke(a).reference}",  # `set map` set both copies
        f"{a} {revoke(a).reference}",
        f"{c} {revoke(c).reference}",
    ]
    assert lines(o.blocked_acl) == ["10.1.2.3/8", "127.0.0.3"]


async def test_what_haproxy_cannot_enforce_is_rejected_with_why(haproxy: Gateway) -> None:
    good = block("127.0.0.10")
    diff = Diff(
        add=(
            good,
            revoke("key_3"),  # a key id, while the keys are matched by fingerprint
            limit("acct_9", 10, kind="account"),  # no account header configured
            Entry(EntryType.BLOCK, "api_key", "key_4"),
        )
    )

    result = await haproxy.connector().apply(diff)

    assert result.done == [good] and not result.failed
    why = {e.target_value: reason for e, reason in result.rejected}
    assert "fingerprint" in why["key_3"] and "key_match: id" in why["key_3"]
    assert "account_header" in why["acct_9"]
    assert "IPs and CIDRs" in why["key_4"]
    assert await haproxy.get("127.0.0.10") == 403


async def test_an_unreachable_or_mismatched_haproxy_is_reported(
    haproxy: Gateway, tmp_path: Path
) -> None:
    gone = haproxy.connector(socket=str(tmp_path / "none.sock"))
    with pytest.raises(GatewayUnavailable, match="cannot reach"):
        await gone.observe()
    assert (await gone.health()).ok is False

    elsewhere = haproxy.connector(blocked_acl=str(tmp_path / "other.acl"))
    with pytest.raises(ConnectorError, match=r"haproxy\.cfg must name exactly this file"):
        await elsewhere.observe()
    assert (await elsewhere.health()).ok is False

    health = await haproxy.connector().health()
    assert health.ok and health.gateway.startswith("haproxy 2.6")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sockett": "/x"}, "unknown option"),
        ({"key_match": "hash"}, "key_match must be"),
        ({"read_timeout": "soon"}, "read_timeout must be a float"),
        ({"key_header": "x api key"}, "not a header name"),
        ({"blocked_acl": "/etc/my acls/blocked.acl"}, "without spaces"),
        ({"socket": "run/admin.sock"}, "absolute path"),
    ],
)
async def test_bad_options_are_refused_naming_the_option(
    haproxy: Gateway, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConnectorError, match=message):
        haproxy.connector(**options)


def test_the_documented_config_is_the_tested_one() -> None:
    documented = (REPO / "docs" / "examples" / "haproxy.cfg").read_text(encoding="utf-8")
    assert documented == sample_config(HAProxyOptions())


async def test_key_ids_account_limits_and_forwarded_client_ips(haproxy_id: Gateway) -> None:
    await apply(
        haproxy_id,
        add=[block("203.0.113.0/24"), revoke("key_ab"), limit("acct_1", 3, kind="account")],
    )

    # 127.0.0.1 is the trusted balancer: its X-Forwarded-For names the client.
    assert await haproxy_id.get(**{"x-forwarded-for": "203.0.113.7"}) == 403
    assert await haproxy_id.get(**{"x-forwarded-for": "198.51.100.1"}) == OK
    # Anyone else's X-Forwarded-For is ignored: the client is its own address.
    assert await haproxy_id.get("127.0.0.2", **{"x-forwarded-for": "203.0.113.7"}) == OK
    assert await haproxy_id.get(**{"x-api-key-id": "key_ab"}) == 401
    assert await haproxy_id.statuses(4, **{"x-account-id": "acct_1"}) == [OK, OK, OK, 429]
    assert await haproxy_id.get(**{"x-account-id": "acct_2"}) == OK


# -- cost per apply, and the files written coalesced ------------------------------------


async def test_an_apply_among_20k_held_entries_sends_only_its_own_commands(
    haproxy: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    acl = haproxy.proxy.options.blocked_acl
    held = [block(f"10.{i // 256 % 256}.{i % 256}.{i // 65536}") for i in range(20_000)]
    connector = haproxy.connector(file_flush_seconds=3600.0)  # files only at observe/close
    await connector.apply(Diff(add=tuple(held)))
    await connector.observe()  # the model and the file, as a reconcile leaves them
    assert len(lines(acl)) == 20_000
    written = inode(acl)
    sent: list[str] = []
    run = _Cli.run

    async def spy(cli: _Cli, command: str) -> str:
        sent.append(command)
        return await run(cli, command)

    monkeypatch.setattr(_Cli, "run", spy)
    result = await connector.apply(Diff(add=(block("127.0.0.30"),)))

    assert result.done == [block("127.0.0.30")]
    refs, reference = haproxy.proxy.options.blocked_ref_map, block("127.0.0.30").reference
    assert sent == [  # no `show acl`: one add, and the reference a refusal quotes
        "prompt",
        f"add acl {acl} 127.0.0.30",
        f"add map {refs} 127.0.0.30 {reference}",
    ]
    assert await haproxy.get("127.0.0.30") == 403
    assert inode(acl) == written  # the file is not rewritten per push
    assert "127.0.0.30" not in lines(acl)

    await connector.close()
    assert sorted(lines(acl)) == sorted([*(e.target_value for e in held), "127.0.0.30"])
    haproxy.proxy.reload()  # a reload loads the files: it comes back to what was enforced
    assert await haproxy.get("127.0.0.30") == 403
    assert len((await haproxy.runtime(f"show acl {acl}")).splitlines()) == 20_001


async def test_the_files_follow_the_runtime_in_the_background(haproxy: Gateway) -> None:
    o = haproxy.proxy.options
    connector = haproxy.connector(file_flush_seconds=0.05)
    await connector.apply(Diff(add=(block("127.0.0.31"), revoke(fingerprint("sk-bg")))))
    await connector.apply(Diff(remove=(block("127.0.0.31"),), add=(block("127.0.0.32"),)))

    for _ in range(400):  # written by the connector's own task, with no further call
        if lines(o.blocked_acl) == ["127.0.0.32"] and lines(o.revoked_map):
            break
        await asyncio.sleep(0.025)
    assert lines(o.blocked_acl) == ["127.0.0.32"]
    assert lines(o.revoked_map) == [
        f"{fingerprint('sk-bg')} {revoke(fingerprint('sk-bg')).reference}"
    ]


async def test_a_file_that_cannot_be_written_is_reported_and_written_later(
    haproxy: Gateway,
) -> None:
    acl = haproxy.proxy.options.blocked_acl
    make_unwritable(acl)
    connector = haproxy.connector(file_flush_seconds=3600.0)
    try:
        result = await connector.apply(Diff(add=(block("127.0.0.33"),)))
        assert result.done == [block("127.0.0.33")]  # enforced now: only the file lags
        await connector.close()

        health = await connector.health()
        assert not health.ok
        assert acl in health.detail and "reload would lose it" in health.detail
        assert await haproxy.get("127.0.0.33") == 403
    finally:
        make_writable(acl)

    await connector.close()  # the next flush writes it
    assert lines(acl) == ["127.0.0.33"]
    assert (await connector.health()).ok


async def test_a_value_the_runtime_cannot_parse_is_rejected(haproxy_id: Gateway) -> None:
    # Misconfigured on purpose: revocations sent to the map keyed by addresses (map_ip),
    # and blocks' references to another map.
    o = haproxy_id.proxy.options
    connector = haproxy_id.connector(
        revoked_map=o.blocked_ref_map, blocked_ref_map=o.account_suspend_map
    )
    key = revoke("key_unparsable")

    result = await connector.apply(Diff(add=(key,)))

    assert not result.done and not result.failed, result
    [(entry, why)] = result.rejected
    assert entry == key and "is not a valid" in why


# -- references on refusals, suspensions ----------------------------------------------------


async def test_every_refusal_quotes_the_reference_of_the_entry_that_refused(
    haproxy_id: Gateway,
) -> None:
    """The header and the JSON body of a 403, 401 and 429 name the entry's reference,
    which is what `decision explain` and an appeal take."""
    blocked, revoked = block("203.0.113.0/24"), revoke("key_ref")
    key_limit, account_limit = limit("key_lim", 1), limit("acct_lim", 1, kind="account")
    suspended = suspend("acct_sus")
    await apply(haproxy_id, add=[blocked, revoked, key_limit, account_limit, suspended])

    async def refusal(status: int, entry: Entry, **headers: str) -> None:
        response = await haproxy_id.response(**headers)
        assert response.status_code == status, (entry, response.text)
        assert response.headers["x-tollgate-reference"] == entry.reference
        assert response.json()["reference"] == entry.reference

    await refusal(403, blocked, **{"x-forwarded-for": "203.0.113.9"})
    await refusal(403, suspended, **{"x-account-id": "acct_sus", "x-api-key-id": "key_new"})
    await refusal(401, revoked, **{"x-api-key-id": "key_ref"})
    assert await haproxy_id.get(**{"x-api-key-id": "key_lim"}) == OK
    await refusal(429, key_limit, **{"x-api-key-id": "key_lim"})
    assert await haproxy_id.get(**{"x-account-id": "acct_lim"}) == OK
    await refusal(429, account_limit, **{"x-account-id": "acct_lim"})
    served = await haproxy_id.response(**{"x-api-key-id": "key_fine"})
    assert served.status_code == OK and "x-tollgate-reference" not in served.headers


async def test_a_suspension_refuses_every_key_of_the_account_until_it_is_lifted(
    haproxy_id: Gateway,
) -> None:
    suspended = suspend("acct_gone")
    await apply(haproxy_id, add=[suspended])
    for key in ("key_a", "key_never_seen"):
        assert await haproxy_id.get(**{"x-account-id": "acct_gone", "x-api-key-id": key}) == 403
    assert await haproxy_id.get(**{"x-account-id": "acct_other", "x-api-key-id": "key_a"}) == OK

    await apply(haproxy_id, remove=[suspended])
    assert await haproxy_id.get(**{"x-account-id": "acct_gone", "x-api-key-id": "key_a"}) == OK


async def test_a_limit_held_without_its_reference_is_written_again_whole(
    haproxy: Gateway,
) -> None:
    """A limit put in the map by hand (or before refusals quoted a reference) is observed
    without a limit, so a reconcile rewrites it with the reference its 429 quotes."""
    path, key = haproxy.proxy.options.rate_limit_map, fingerprint("sk-legacy")
    assert await haproxy.runtime(f"add map {path} {key} 5") == ""
    connector = haproxy.connector()
    [seen] = (await connector.observe()).entries
    assert seen.key == limit(key, 5).key and seen.requests_per_minute is None

    result = await connector.apply(Diff(change=(limit(key, 5),)))

    assert result.done == [limit(key, 5)]
    assert (await haproxy.runtime(f"show map {path}")).split()[2] == held(limit(key, 5))
    assert {e.requests_per_minute for e in (await connector.observe()).entries} == {5}


async def test_a_block_without_its_reference_is_not_held_until_written_again(
    haproxy: Gateway,
) -> None:
    """A block in the ACL whose reference the map lacks (lost, or added by hand) would
    refuse with nothing to quote: observe does not count it held, so the reconcile
    adds it again, and the add writes its reference."""
    o = haproxy.proxy.options
    assert await haproxy.runtime(f"add acl {o.blocked_acl} 127.0.0.40") == ""
    connector = haproxy.connector()

    assert block("127.0.0.40") not in (await connector.observe()).entries
    result = await connector.apply(Diff(add=(block("127.0.0.40"),)))

    assert result.done == [block("127.0.0.40")]
    held = await haproxy.runtime(f"show map {o.blocked_ref_map}")
    assert f"127.0.0.40 {block('127.0.0.40').reference}" in held
    assert block("127.0.0.40") in (await connector.observe()).entries
    assert len((await haproxy.runtime(f"show acl {o.blocked_acl}")).splitlines()) == 1
