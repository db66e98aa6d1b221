"""The NGINX connector against a real NGINX 1.22 (`nginx_fixtures.py`): each entry type
is enforced on real requests (403 from a blocked address or network, 401 for a
revoked key, 429 past a key's limit while other keys pass), lifts let traffic back,
hand edits are undone by a reconcile, values that would break the configuration are
refused one by one, a configuration that fails `nginx -t` is never reloaded and the
reason is reported, state survives a restart, and a verdict submitted to Tollgate is
enforced at the proxy."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col

from connectors.nginx import FILES, ConfigRejected, NginxConnector
from controlplane.enforce.desired import diff
from controlplane.enforce.registry import factory
from controlplane.enforce.sdk import (
    ConnectorConfig,
    ConnectorError,
    Diff,
    Entry,
    EntryType,
    GatewayUnavailable,
)
from controlplane.store.models import ActionRow
from tests.integration.connectors.nginx_fixtures import (  # noqa: F401 (fixtures)
    Nginx,
    backend_fixture,
    nginx_binary_fixture,
    nginx_fixture,
    nginx_stopped_fixture,
)
from tests.support.app import REPO, Running, make_settings, serve
from tests.support.store import fetch
from tests.support.verdicts import new_subject, verdict

BLOCK_IP = Entry(EntryType.BLOCK, "ip", "127.0.0.2")
BLOCK_CIDR = Entry(EntryType.BLOCK, "cidr", "127.0.1.0/24")
REVOKE = Entry(EntryType.REVOKE_KEY, "api_key", "key_revoked")
LIMIT = Entry(EntryType.RATE_LIMIT, "api_key", "key_limited", 10)


async def put(connector: NginxConnector, *entries: Entry) -> None:
    result = await connector.apply(Diff(add=entries))
    assert not result.failed and not result.rejected, (result.failed, result.rejected)
    assert len(result.done) == len(entries)


async def reconcile(connector: NginxConnector, desired: Iterable[Entry]) -> Diff:
    """What Tollgate's reconcile does: observe, diff, apply the difference."""
    change = diff(desired, (await connector.observe()).entries)
    if change:
        result = await connector.apply(change)
        assert not result.failed, result.failed
    return change


async def assert_limited(nginx: Nginx, key: str, limit: int) -> None:
    """`limit` requests of `key` pass at once, then 429s. NGINX refills the allowance at
    `limit` per minute while the requests go out, so on a slow machine one more may
    pass per 60/limit seconds spent: allowed, and no more than that."""
    started = time.monotonic()
    assert await nginx.statuses(limit, key=key) == [200] * limit
    extra = 0
    while await nginx.get(key=key) == 200:
        extra += 1
        refilled = int((time.monotonic() - started) * limit / 60)
        assert extra <= refilled, f"{limit + extra} requests passed a limit of {limit}"


# -- each entry type, enforced ----------------------------------------------------------


async def test_blocked_ip_and_cidr_get_403_and_other_addresses_pass(nginx: Nginx) -> None:
    connector = nginx.connector()
    await put(connector, BLOCK_IP, BLOCK_CIDR)

    assert await nginx.get("127.0.0.2") == 403
    assert await nginx.get("127.0.1.77") == 403
    assert await nginx.get("127.0.0.3") == 200
    assert await nginx.get("127.0.2.1") == 200
    assert (await connector.observe()).entries == {BLOCK_IP, BLOCK_CIDR}


async def test_revoked_key_gets_401_and_other_keys_pass(nginx: Nginx) -> None:
    await put(nginx.connector(), REVOKE)

    assert await nginx.get(key="key_revoked") == 401
    assert await nginx.get(key="key_other") == 200
    assert await nginx.get() == 200


async def test_rate_limited_key_gets_429_past_its_limit_while_others_pass(nginx: Nginx) -> None:
    await put(nginx.connector(), LIMIT)

    assert await nginx.statuses(10, key="key_limited") == [200] * 10
    assert await nginx.statuses(2, key="key_limited") == [429, 429]
    assert await nginx.statuses(12, key="key_other") == [200] * 12
    assert await nginx.statuses(12) == [200] * 12  # no key: never counted


async def test_a_limit_between_tiers_goes_to_the_stricter_tier_and_is_reported_exactly(
    nginx: Nginx,
) -> None:
    connector = nginx.connector()
    between = Entry(EntryType.RATE_LIMIT, "api_key", "key_between", 45)
    await put(connector, between)

    assert (await connector.observe()).entries == {between}
    line = f'"key_between" "10 {between.reference}";  # requests_per_minute=45'
    assert line in (nginx.include_dir / "limits.conf").read_text()
    assert await nginx.statuses(11, key="key_between") == [200] * 10 + [429]


async def test_a_zero_limit_refuses_every_request_of_the_key(nginx: Nginx) -> None:
    stop = Entry(EntryType.RATE_LIMIT, "api_key", "key_zero", 0)
    await put(nginx.connector(), stop)

    assert await nginx.statuses(2, key="key_zero") == [429, 429]
    assert await nginx.get(key="key_other") == 200


async def test_lifts_let_traffic_through_again(nginx: Nginx) -> None:
    connector = nginx.connector()
    await put(connector, BLOCK_IP, BLOCK_CIDR, REVOKE, LIMIT)
    assert await nginx.statuses(11, key="key_limited") == [200] * 10 + [429]

    result = await connector.apply(Diff(remove=(BLOCK_IP, BLOCK_CIDR, REVOKE, LIMIT)))

    assert len(result.done) == 4 and not result.failed and not result.rejected
    assert await nginx.get("127.0.0.2") == 200
    assert await nginx.get("127.0.1.77") == 200
    assert await nginx.get(key="key_revoked") == 200
    assert await nginx.statuses(3, key="key_limited") == [200] * 3
    assert (await connector.observe()).entries == frozenset()


async def test_apply_is_idempotent(nginx: Nginx) -> None:
    connector = nginx.connector()
    await put(connector, BLOCK_IP, REVOKE)
    files = {p.name: p.read_bytes() for p in nginx.include_dir.glob("*.conf")}

    await put(connector, BLOCK_IP, REVOKE)
    gone = Entry(EntryType.BLOCK, "ip", "192.0.2.200")
    result = await connector.apply(Diff(remove=(gone,)))

    assert result.done == [gone]
    assert {p.name: p.read_bytes() for p in nginx.include_dir.glob("*.conf")} == files
    assert await nginx.get("127.0.0.2") == 403


# -- drift ------------------------------------------------------------------------------


async def test_a_hand_edited_include_is_corrected_by_a_reconcile(nginx: Nginx) -> None:
    connector = nginx.connector()
    desired = [BLOCK_IP, REVOKE]
    await put(connector, *desired)
    blocked = nginx.include_dir / "blocked.conf"
    revoked = nginx.include_dir / "revoked.conf"
    # By hand: the desired block deleted, a stray block added, a revocation removed.
    blocked.write_text("# edited by hand\n127.0.0.5 1;\n", encoding="utf-8")
    revoked.write_text("", encoding="utf-8")

    change = await reconcile(connector, desired)

    assert set(change.add) == {BLOCK_IP, REVOKE}
    assert change.remove == (Entry(EntryType.BLOCK, "ip", "127.0.0.5"),)
    assert await nginx.get("127.0.0.2") == 403
    assert await nginx.get("127.0.0.5") == 200
    assert await nginx.get(key="key_revoked") == 401
    assert not await reconcile(connector, desired)  # converged


async def test_garbage_in_an_include_is_dropped_not_reloaded_blindly(nginx: Nginx) -> None:
    connector = nginx.connector()
    await put(connector, BLOCK_IP)
    blocked = nginx.include_dir / "blocked.conf"
    blocked.write_text(blocked.read_text() + "this is } not nginx\n", encoding="utf-8")

    state = await connector.observe()

    assert state.entries == {BLOCK_IP}
    assert state.extra["ignored_lines"] == 1
    assert "not nginx" not in blocked.read_text()
    assert await nginx.get("127.0.0.2") == 403


async def test_a_hand_changed_tier_is_put_back(nginx: Nginx) -> None:
    connector = nginx.connector()
    await put(connector, LIMIT)
    limits = nginx.include_dir / "limits.conf"
    limits.write_text(limits.read_text().replace('"10 ', '"600 '), encoding="utf-8")

    assert (await connector.observe()).entries == {LIMIT}
    assert f'"key_limited" "10 {LIMIT.reference}";' in limits.read_text()
    assert await nginx.statuses(11, key="key_limited") == [200] * 10 + [429]


# -- what would break the configuration -------------------------------------------------


async def test_values_that_would_break_the_configuration_are_refused_one_by_one(
    nginx: Nginx,
) -> None:
    connector = nginx.connector()
    good = Entry(EntryType.REVOKE_KEY, "api_key", "key_fine")
    keyword = Entry(EntryType.REVOKE_KEY, "api_key", "default")  # a map keyword
    fingerprint = Entry(EntryType.REVOKE_KEY, "api_key", "ab" * 32)  # 64 chars
    bad = [
        Entry(EntryType.REVOKE_KEY, "api_key", 'key"; default 1; #'),
        Entry(EntryType.REVOKE_KEY, "api_key", "key with space"),
        Entry(EntryType.REVOKE_KEY, "api_key", "~.*"),
        Entry(EntryType.REVOKE_KEY, "api_key", "k" * 111),
        Entry(EntryType.REVOKE_KEY, "api_key", "KEY_FINE"),  # maps ignore case
        Entry(EntryType.BLOCK, "ip", "127.0.0.9; }"),
        Entry(EntryType.BLOCK, "ip", "fe80::1%lo"),
        Entry(EntryType.BLOCK, "cidr", "10.0.0.0/99"),
        Entry(EntryType.BLOCK, "api_key", "key_fine"),
        Entry(EntryType.RATE_LIMIT, "api_key", "key_slow", 5),  # below every tier
        Entry(EntryType.RATE_LIMIT, "account", "acct_1", 60),
    ]

    result = await connector.apply(Diff(add=(good, keyword, fingerprint, *bad)))

    assert set(result.done) == {good, keyword, fingerprint}
    [(twin, why)] = result.failed  # fine once its twin is lifted: may succeed later
    assert twin == bad[4] and "ignoring case" in why
    reasons = dict(result.rejected)  # never holdable: permanent
    assert set(reasons) == set(bad) - {twin}
    assert "add a tier at or below 5" in reasons[bad[9]]
    assert "not accounts" in reasons[bad[10]]
    assert await nginx.get(key="key_fine") == 401
    assert await nginx.get(key="default") == 401
    assert await nginx.get(key="ab" * 32) == 401
    assert await nginx.get(key="anyone") == 200  # `default` was a key, not the default
    assert (await connector.observe()).entries == {good, keyword, fingerprint}


async def test_a_diff_that_could_not_be_written_is_not_carried_into_the_next(
    nginx: Nginx, monkeypatch: pytest.MonkeyPatch
) -> None:
    connector = nginx.connector()
    await put(connector, BLOCK_IP)

    def disk_full(path: Path | str, data: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr("connectors.nginx.atomic_write", disk_full)
        with pytest.raises(ConnectorError, match="cannot write"):
            await connector.apply(Diff(add=(BLOCK_CIDR,)))

    # The files are as they were (nothing shows the failure), and so are the lists.
    other = Entry(EntryType.BLOCK, "ip", "127.0.0.3")
    await put(connector, other)

    assert (await connector.observe()).entries == {BLOCK_IP, other}
    assert await nginx.get("127.0.1.77") == 200


async def test_a_broken_main_config_is_never_reloaded_and_the_reason_is_reported(
    nginx: Nginx,
) -> None:
    connector = nginx.connector()
    await put(connector, BLOCK_IP)
    files = {p.name: p.read_bytes() for p in nginx.include_dir.glob("*.conf")}
    workers = _worker_pids(nginx)
    assert workers
    good_config = nginx.main_config.read_text()
    nginx.main_config.write_text(good_config.replace("worker_connections 256;", "worker_conn 1;"))

    with pytest.raises(ConfigRejected) as caught:
        await connector.apply(Diff(add=(BLOCK_CIDR,)))

    assert caught.value.retryable is False
    assert 'unknown directive "worker_conn"' in str(caught.value)
    assert {p.name: p.read_bytes() for p in nginx.include_dir.glob("*.conf")} == files
    assert _worker_pids(nginx) == workers  # no reload was even tried
    assert await nginx.get("127.0.0.2") == 403  # the running configuration still serves
    assert await nginx.get("127.0.1.77") == 200
    with pytest.raises(ConfigRejected, match="worker_conn"):
        await connector.observe()  # a reconcile reports it too

    nginx.main_config.write_text(good_config)
    await put(connector, BLOCK_CIDR)
    assert await nginx.get("127.0.1.77") == 403


async def test_an_include_corrupted_between_applies_is_rewritten_and_tested(nginx: Nginx) -> None:
    connector = nginx.connector()
    await put(connector, BLOCK_IP)
    server = nginx.include_dir / "server.conf"
    server.write_text("if ($tollgate_blocked) { return 403\n", encoding="utf-8")

    await put(connector, REVOKE)

    assert "return 403 '" in server.read_text()
    assert await nginx.get("127.0.0.2") == 403
    assert await nginx.get(key="key_revoked") == 401


async def test_a_main_config_without_the_includes_is_reported_not_trusted(nginx: Nginx) -> None:
    connector = nginx.connector()
    config = nginx.main_config.read_text()
    nginx.main_config.write_text(config.replace(f"include {nginx.include_dir}/server.conf;", ""))

    with pytest.raises(ConfigRejected, match=r"does not include .*server\.conf"):
        await connector.apply(Diff(add=(BLOCK_IP,)))


async def test_bad_options_are_refused_naming_the_option(nginx: Nginx) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tiers": [60, 60]}, "without repeats"),
        ({"tiers": [0]}, "tiers"),
        ({"key_header": "X_Api_Key"}, "key_header"),
        ({"zone_size": "ten"}, "zone_size"),
        ({"colour": "red"}, "unknown option"),
    ]
    for options, words in cases:
        with pytest.raises(ConnectorError, match=words) as caught:
            nginx.connector(**options)
        assert caught.value.retryable is False


async def test_changed_tiers_retier_the_limits_at_the_next_reconcile(nginx: Nginx) -> None:
    between = Entry(EntryType.RATE_LIMIT, "api_key", "key_between", 45)
    await put(nginx.connector(), between)

    retiered = nginx.connector(tiers=[10, 30])
    assert (await retiered.observe()).entries == {between}

    limits = (nginx.include_dir / "limits.conf").read_text()
    assert f'"key_between" "30 {between.reference}";  # requests_per_minute=45' in limits
    assert "rate=30r/m" in (nginx.include_dir / "http.conf").read_text()
    await assert_limited(nginx, "key_between", 30)


# -- restarts and first contact ---------------------------------------------------------


async def test_first_contact_writes_the_files_nginx_needs_to_start(nginx_stopped: Nginx) -> None:
    connector = nginx_stopped.connector()

    with pytest.raises(GatewayUnavailable, match="not running"):
        await connector.observe()
    assert sorted(p.name for p in nginx_stopped.include_dir.glob("*.conf")) == [
        "allowed.conf",
        "blocked.conf",
        "http.conf",
        "limits.conf",
        "revoked.conf",
        "server.conf",
        "suspended_account.conf",
        "suspended_org.conf",
    ]
    assert not (await connector.health()).ok

    nginx_stopped.start()

    assert (await connector.observe()).entries == frozenset()
    health = await connector.health()
    assert health.ok and "nginx/1.22" in health.gateway


async def test_state_survives_an_nginx_restart(nginx: Nginx) -> None:
    connector = nginx.connector()
    await put(connector, BLOCK_IP, REVOKE, LIMIT)
    nginx.stop()
    with pytest.raises(GatewayUnavailable):
        await connector.observe()
    with pytest.raises(GatewayUnavailable):
        await connector.apply(Diff(add=(BLOCK_CIDR,)))  # written and tested, not reloaded

    nginx.start()

    assert (await connector.observe()).entries == {BLOCK_IP, REVOKE, LIMIT, BLOCK_CIDR}
    assert await nginx.get("127.0.0.2") == 403
    assert await nginx.get("127.0.1.77") == 403
    assert await nginx.get(key="key_revoked") == 401
    assert await nginx.statuses(11, key="key_limited") == [200] * 10 + [429]


async def test_ten_thousand_entries_in_one_apply(nginx: Nginx) -> None:
    connector = nginx.connector()
    cidrs = [Entry(EntryType.BLOCK, "cidr", f"10.{i // 256}.{i % 256}.0/24") for i in range(10_000)]
    keys = [Entry(EntryType.REVOKE_KEY, "api_key", f"key_{i:05d}") for i in range(10_000)]
    limits = [Entry(EntryType.RATE_LIMIT, "api_key", f"lim_{i:05d}", 60) for i in range(10_000)]

    await put(connector, *cidrs, *keys, *limits, BLOCK_CIDR)

    assert len((await connector.observe()).entries) == 30_001
    assert await nginx.get("127.0.1.9") == 403
    assert await nginx.get(key="key_09999") == 401
    assert await nginx.get(key="lim_04321") == 200
    assert connector.last_reload_seconds is not None
    assert "could not build" not in nginx.log()  # the frame sizes the map hashes


async def test_the_documented_nginx_conf_passes_nginx_t_with_the_connector_files(
    nginx_stopped: Nginx,
) -> None:
    """docs/examples/nginx.conf as shipped, only its paths moved into the test's directory."""
    root = nginx_stopped.root
    example = (REPO / "docs" / "examples" / "nginx.conf").read_text()
    for path in ("/etc/nginx/tollgate", "/run/nginx.pid", "/var/log/nginx"):
        assert path in example
    conf = root / "example.conf"
    conf.write_text(
        example.replace("/etc/nginx/tollgate", str(nginx_stopped.include_dir))
        .replace("/run/nginx.pid", str(root / "example.pid"))
        .replace("/var/log/nginx", str(root))
    )
    connector = nginx_stopped.connector(main_config=str(conf), pid_file=str(root / "example.pid"))

    with pytest.raises(GatewayUnavailable, match="not running"):
        await connector.observe()  # written, passed nginx -T, included: only not running

    checked = await asyncio.create_subprocess_exec(
        nginx_stopped.binary, "-t", "-c", str(conf), stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(checked.communicate(), 10)
    assert checked.returncode == 0, stderr.decode()


# -- cost per apply and coalesced reloads -----------------------------------------------


async def test_a_burst_of_small_diffs_goes_live_in_a_few_reloads(nginx: Nginx) -> None:
    connector = nginx.connector()
    await put(connector, BLOCK_IP)
    before = _reloads(nginx)
    keys = [Entry(EntryType.REVOKE_KEY, "api_key", f"key_burst_{i:03d}") for i in range(300)]

    results = await asyncio.gather(*(connector.apply(Diff(add=(key,))) for key in keys))

    assert [r.done for r in results] == [[key] for key in keys]
    reloads = _reloads(nginx) - before
    assert 1 <= reloads <= 10, f"{reloads} reloads for {len(keys)} diffs"
    # Each apply returned once its entry was live.
    assert await nginx.get(key="key_burst_000") == 401
    assert await nginx.get(key="key_burst_299") == 401
    assert (await connector.observe()).entries == {BLOCK_IP, *keys}


async def test_an_apply_does_not_read_the_includes_again(
    nginx: Nginx, monkeypatch: pytest.MonkeyPatch
) -> None:
    connector = nginx.connector()
    held = [
        Entry(EntryType.BLOCK, "cidr", f"127.{100 + i // 256}.{i % 256}.0/24") for i in range(5_000)
    ]
    await put(connector, *held)
    await connector.observe()
    reads: list[str] = []
    read = NginxConnector._read

    def counted(self: NginxConnector) -> Any:
        reads.append("read")
        return read(self)

    monkeypatch.setattr(NginxConnector, "_read", counted)
    await put(connector, REVOKE)
    await put(connector, BLOCK_IP)

    assert reads == []  # the tables in memory were enough
    assert await nginx.get(key="key_revoked") == 401
    assert await nginx.get("127.0.0.2") == 403
    assert await nginx.get("127.100.7.1") == 403  # what was there before is still there


def test_the_lists_follow_each_put_and_removal_sorted_as_the_tables_say(tmp_path: Path) -> None:
    """The lines kept per include (rendered once per put) give the file that rendering
    the whole table, sorted, gives: across chunk splits, updates and removals."""
    config = ConnectorConfig("edge-nginx", "nginx", ("*",), {"include_dir": str(tmp_path)})
    connector = NginxConnector(config, None)  # type: ignore[arg-type]  # no HTTP here
    tables = connector._parse({name: None for name in FILES})
    blocked: dict[str, str] = {}
    limits: dict[str, int] = {}
    rng = random.Random(7)
    for step in range(40):
        add, remove = [], []
        for _ in range(200):
            n = rng.randrange(8000)
            ip = Entry(EntryType.BLOCK, "ip", f"10.{n // 256}.{n % 256}.1")
            key = "default" if n == 7 else f"key_{n % 500}"  # a map keyword is a key too
            rpm = rng.choice([0, 10, 59, 60, 600, 900])
            if rng.random() < 0.7:
                add += [ip, Entry(EntryType.RATE_LIMIT, "api_key", key, rpm)]
            else:
                remove += [ip, Entry(EntryType.RATE_LIMIT, "api_key", key)]
        for entry in remove:  # a diff's removals go first, then its puts in order
            blocked.pop(entry.target_value, None)
            limits.pop(entry.target_value, None)
        for entry in add:
            if entry.type is EntryType.BLOCK:
                blocked[entry.target_value] = entry.target_kind
            else:
                limits[entry.target_value] = entry.requests_per_minute or 0
        touched: set[str] = set()
        connector._plan(tables, Diff(add=tuple(add), remove=tuple(remove)), touched)
        rendered = connector._render_lists(tables, {"blocked.conf", "limits.conf"})

        lines = rendered["blocked.conf"].decode().splitlines()
        assert lines[2:] == [
            f"{ip} {Entry(EntryType.BLOCK, kind, ip).reference};"
            for ip, kind in sorted(blocked.items())
        ], step
        lines = rendered["limits.conf"].decode().splitlines()
        tier = {0: 0, 10: 10, 59: 10, 60: 60, 600: 600, 900: 600}
        assert lines[2:] == [
            f'"{chr(92) * 2 if key == "default" else ""}{key}" "{tier[rpm]} '
            f'{Entry(EntryType.RATE_LIMIT, "api_key", key).reference}";'
            f"  # requests_per_minute={rpm}"
            for key, rpm in sorted(limits.items())
        ], step
    assert len(blocked) > 3_000  # lines in more than one chunk


# -- through Tollgate -------------------------------------------------------------------


@pytest.fixture
async def tollgate(nginx: Nginx, database_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    connector = {
        "name": "edge-nginx",
        "type": "nginx",
        "providers": ["lab-a"],
        "reconcile_seconds": 3600,
        "options": nginx.options(),
    }
    data = tmp_path / "data"
    data.mkdir()
    settings = make_settings(database_url, data, connectors=[connector])
    async with serve(settings) as running:
        await running.runtime.enforcer.settle()
        yield running


async def test_the_entry_point_is_registered(nginx: Nginx) -> None:
    config = ConnectorConfig("edge-nginx", "nginx", ("*",), nginx.options())
    assert isinstance(factory("nginx")(config, nginx.unused), NginxConnector)


async def test_a_verdict_is_enforced_at_the_proxy(tollgate: Running, nginx: Nginx) -> None:
    subject = new_subject()
    key = subject["api_key_id"]

    [first] = (await tollgate.submit(verdict(subject=subject)))["results"]
    await tollgate.runtime.enforcer.settle()

    [limit] = first["actions"]
    assert limit["type"] == "rate_limit"
    assert await _state(tollgate, limit["id"]) == "applied"
    await assert_limited(nginx, key, 60)  # a first offense: 60/min
    exhausted = time.monotonic()
    assert await nginx.get(key="key_someone_else") == 200

    await tollgate.submit(verdict(subject=subject))  # a repeat revokes the key
    await tollgate.runtime.enforcer.settle()
    assert await nginx.get(key=key) == 401

    (nginx.include_dir / "revoked.conf").write_text("")  # removed by hand
    report = (await tollgate.client.post("/v1/connectors/edge-nginx/reconcile")).json()
    assert report["drift_repaired"] == 1 and report["ok"] is True
    assert await nginx.get(key=key) == 401

    revoke_ids = await _active(tollgate, "revoke_key", key)
    for action_id in revoke_ids:
        lifted = await tollgate.client.post(
            f"/v1/actions/{action_id}/lift", json={"reason": "appeal upheld"}
        )
        assert lifted.status_code == 200
    await tollgate.runtime.enforcer.settle()
    # The revocation went, the limit holds: its allowance refills at 1/s since exhausted.
    refilled = int(time.monotonic() - exhausted) + 1
    statuses = await nginx.statuses(refilled + 1, key=key)
    assert 401 not in statuses and 429 in statuses
    [status] = (await tollgate.client.get("/v1/connectors")).json()
    assert status["healthy"] is True and status["type"] == "nginx"


async def test_shared_intel_blocks_a_range_at_the_proxy(tollgate: Running, nginx: Nginx) -> None:
    shared = await tollgate.client.post(
        "/v1/intel/indicators",
        json={"indicators": [{"value": "127.0.3.0/24", "source": "lab-b", "confidence": 0.95}]},
    )
    assert shared.status_code in {200, 201}, shared.text

    [result] = (await tollgate.submit(verdict(subject=new_subject(ips=["127.0.3.9"]))))["results"]
    await tollgate.runtime.enforcer.settle()

    [block] = [a for a in result["actions"] if a["type"] == "block"]
    assert block["target"] == {"kind": "cidr", "value": "127.0.3.0/24"}
    assert await _state(tollgate, block["id"]) == "applied"
    assert await nginx.get("127.0.3.200") == 403
    assert await nginx.get("127.0.4.1") == 200


async def test_a_rejected_configuration_is_visible_in_tollgate(
    tollgate: Running, nginx: Nginx
) -> None:
    nginx.main_config.write_text(nginx.main_config.read_text() + "\nbroken;\n")

    report = (await tollgate.client.post("/v1/connectors/edge-nginx/reconcile")).json()

    assert report["ok"] is False and "nginx -t failed" in report["error"]
    [status] = (await tollgate.client.get("/v1/connectors")).json()
    assert 'unknown directive "broken"' in status["last_error"]


async def _state(api: Running, action_id: str) -> str:
    [row] = await fetch(api.runtime.db, ActionRow, col(ActionRow.id) == action_id)
    return row.state


async def _active(api: Running, kind: str, key: str) -> list[str]:
    rows = await fetch(
        api.runtime.db,
        ActionRow,
        col(ActionRow.type) == kind,
        col(ActionRow.target_value) == key,
    )
    return [r.id for r in rows if r.state in {"pending", "applied", "failed"}]


def _worker_pids(nginx: Nginx) -> set[int]:
    """The master's workers that accept connections (a reload's old workers, shutting
    down, come and go on their own)."""
    assert nginx.process is not None
    master = nginx.process.pid
    live = set()
    for child in Path(f"/proc/{master}/task/{master}/children").read_text().split():
        try:
            title = Path(f"/proc/{child}/cmdline").read_bytes().decode()
        except FileNotFoundError:
            continue
        if "worker process" in title and "shutting down" not in title:
            live.add(int(child))
    return live


def _reloads(nginx: Nginx) -> int:
    """Reloads the master logged (at `notice`, as the test configuration logs)."""
    return nginx.error_log.read_text(errors="replace").count("signal 1 (SIGHUP) received")
