"""The connector toolkit: canonical rendering, atomic files, options, write rates and
retries, mapping tables."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Literal

import pytest

from controlplane.enforce import toolkit
from controlplane.enforce.sdk import ConnectorError, Entry, EntryType
from controlplane.enforce.targets import PrefixFloor
from controlplane.enforce.toolkit import (
    Refused,
    Terms,
    WriteRate,
    atomic_write,
    bounded,
    observed,
    observed_once,
    parse_options,
    positive,
    rendered,
    with_retries,
)


def test_rendered_sends_canonical_values_only() -> None:
    assert rendered(Entry(EntryType.BLOCK, "cidr", "198.51.100.0/24")) == "198.51.100.0/24"
    with pytest.raises(Refused, match="not canonical"):
        rendered(Entry(EntryType.BLOCK, "cidr", "198.51.100.7/24"))
    with pytest.raises(Refused, match="covers more than a block may"):
        rendered(Entry(EntryType.BLOCK, "cidr", "10.0.0.0/8"), PrefixFloor(16, 32))
    with pytest.raises(Refused) as caught:
        rendered(Entry(EntryType.REVOKE_KEY, "api_key", "key; drop"))
    assert "drop" not in str(caught.value) and caught.value.retryable is False


def test_observed_reads_a_gateway_value_back_in_tollgates_spelling() -> None:
    assert observed("cidr", "10.1.2.3/8") == "10.0.0.0/8"
    assert observed("ip", "::ffff:192.0.2.7") == "192.0.2.7"
    assert observed("cidr", "192.0.2.7") == "192.0.2.7/32"
    with pytest.raises(ValueError):
        observed("ip", "fe80::1%eth0")


ODD_VALUES = [
    *("10.0.0.1", "0.0.0.0", "255.255.255.255", "256.0.0.1", "10.0.0.01", "010.0.0.1"),
    *("1.2.3", "1.2.3.4.5", "1.2.3.4 ", " 1.2.3.4", "1..2.3", "", "\u0661.2.3.4", "1.2.3.4\n"),
    *("10.0.0.0/8", "10.1.2.3/8", "10.0.0.1/32", "10.0.0.1/31", "0.0.0.0/0", "1.0.0.0/0"),
    *("10.0.0.0/08", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/255.0.0.0", "/8"),
    *("192.0.2.7", "::ffff:192.0.2.7", "::ffff:10.0.0.0/104", "2001:DB8::1", "2001:db8::/32"),
    *("2001:db8:0:0::/48", "fe80::1%eth0", "::", "::/0", "::1/128", "api-key", "x/y"),
]


@pytest.mark.parametrize("kind", ["ip", "cidr"])
def test_observed_once_reads_every_value_as_observed_does(kind: str) -> None:
    """The survey's fast path for canonical IPv4 gives `observed`'s answer, errors too."""
    rng = Random(7)
    values = [*ODD_VALUES]
    for _ in range(3000):
        address = ".".join(
            str(rng.choice([0, 1, 9, 10, 99, 100, 199, 200, 249, 250, 255])) for _ in range(4)
        )
        values += [address, f"{address}/{rng.randrange(0, 34)}"]

    for value in values:
        try:
            expected: str | type[ValueError] = observed(kind, value)
        except ValueError:
            expected = ValueError
        try:
            got: str | type[ValueError] = observed_once(kind, value)
        except ValueError:
            got = ValueError
        assert got == expected, value


def test_atomic_write_replaces_keeping_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "blocked.acl"
    atomic_write(path, "one\n")
    assert (path.read_text(), path.stat().st_mode & 0o777) == ("one\n", 0o644)
    path.chmod(0o600)
    inode = path.stat().st_ino

    atomic_write(path, b"two\n")

    assert path.read_text() == "two\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.stat().st_ino != inode  # a new file moved into place, not rewritten
    assert [p.name for p in tmp_path.iterdir()] == ["blocked.acl"]


def test_atomic_write_in_parts_writes_them_in_order_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "rate_limit.map"
    atomic_write(path, iter([b"# head\n", b"k1 v1\n", b"k2 v2\n"]))
    assert path.read_bytes() == b"# head\nk1 v1\nk2 v2\n"

    def broken() -> Iterator[bytes]:
        yield b"k3 v3\n"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(path, broken())
    assert path.read_bytes() == b"# head\nk1 v1\nk2 v2\n"  # never half of a file
    assert [p.name for p in tmp_path.iterdir()] == ["rate_limit.map"]


def test_atomic_write_failing_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "x.map"
    with pytest.raises(OSError):
        atomic_write(path, "x")
    assert not path.parent.exists()


@dataclass(frozen=True)
class Options:
    url: str
    retries: int = bounded(3, 0, 10)
    timeout: float = 1.0
    strict: bool = True
    tiers: tuple[int, ...] = (10, 60)
    mode: Literal["fast", "safe"] = "safe"
    plans: Mapping[str, int] = field(default_factory=dict)
    rate: float = positive(1.0, 10)


def test_options_are_parsed_into_a_frozen_dataclass() -> None:
    given = {"url": "u", "timeout": 2, "tiers": [5], "mode": "fast", "plans": {"p": 3}}
    parsed = parse_options(Options, "w", given, retries=4)

    assert parsed == Options(
        url="u", retries=4, timeout=2.0, strict=True, tiers=(5,), mode="fast", plans={"p": 3}
    )
    assert isinstance(parsed.timeout, float)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "u", "retrys": 1}, "w: unknown ['retrys']"),
        ({}, "w.url is required"),
        ({"url": "u", "retries": 11}, "w.retries must be a number from 0 to 10"),
        ({"url": "u", "retries": True}, "w.retries must be an int"),
        ({"url": "u", "timeout": "soon"}, "w.timeout must be a float"),
        ({"url": "u", "strict": "yes"}, "w.strict must be true or false"),
        ({"url": "u", "tiers": [5, "x"]}, "w.tiers[1] must be an int"),
        ({"url": 7}, "w.url must be a str"),
        ({"url": "u", "mode": "quick"}, "w.mode must be one of 'fast', 'safe', got 'quick'"),
        ({"url": "u", "plans": [1]}, "w.plans must be a mapping"),
        ({"url": "u", "plans": {"p": "x"}}, "w.plans['p'] must be an int"),
        ({"url": "u", "plans": {"p": True}}, "w.plans['p'] must be an int"),
        ({"url": "u", "rate": 0}, "w.rate must be more than 0 and at most 10, got 0"),
        ({"url": "u", "rate": 11}, "w.rate must be more than 0 and at most 10, got 11"),
    ],
)
def test_each_bad_option_is_named(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConnectorError) as caught:
        parse_options(Options, "w", options)
    assert message in str(caught.value) and caught.value.retryable is False


def test_a_mapping_table_reads_both_ways() -> None:
    scopes = Terms({"ip": "Ip", "cidr": "Range"}, fold=str.lower)
    files = Terms({EntryType.BLOCK: "blocked.conf", EntryType.REVOKE_KEY: "revoked.conf"})

    assert (scopes.theirs("cidr"), scopes.ours("RANGE"), scopes.ours("country")) == (
        "Range",
        "cidr",
        None,
    )
    assert files[EntryType.BLOCK] == "blocked.conf"
    assert files.ours("revoked.conf") is EntryType.REVOKE_KEY
    assert files.theirs(EntryType.RATE_LIMIT) is None and EntryType.RATE_LIMIT not in files
    with pytest.raises(ValueError, match="one-to-one"):
        Terms({"ip": "Ip", "cidr": "ip"}, fold=str.lower)


def test_a_default_the_caller_gives_is_checked_like_an_option() -> None:
    with pytest.raises(ConnectorError, match=r"w\.rate must be more than 0"):
        parse_options(Options, "w", {"url": "u"}, rate=-1.0)


async def test_retries_stop_at_the_bound_and_on_errors_not_worth_retrying() -> None:
    calls: list[int] = []

    async def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise TimeoutError("slow")
        return len(calls)

    assert await with_retries(flaky, attempts=3, retry_on=lambda e: True, base_delay=0) == 3
    calls.clear()
    with pytest.raises(TimeoutError):
        await with_retries(flaky, attempts=2, retry_on=lambda e: True, base_delay=0)
    assert len(calls) == 2
    calls.clear()
    with pytest.raises(TimeoutError):
        await with_retries(flaky, attempts=5, retry_on=lambda e: False, base_delay=0)
    assert len(calls) == 1


def test_one_write_rate_per_scope_and_the_strictest_wins() -> None:
    one = WriteRate.for_scope(("test-toolkit", "r1"), 5.0, 10)
    two = WriteRate.for_scope(("test-toolkit", "r1"), 2.0, 20)
    assert one is two and one.per_second == 2.0 and one.burst == 10.0
    assert WriteRate.for_scope(("test-toolkit", "r2"), 5.0, 10) is not one


def _resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(
    toolkit._malloc_trim() is None or not Path("/proc/self/status").exists(),
    reason="glibc and /proc only",
)
def test_release_freed_memory_gives_what_was_freed_back_to_the_system() -> None:
    """Objects freed below one still held stay resident in the C heap until released:
    as the parts and lines of a large survey do."""
    blocks = [bytes(2000) + i.to_bytes(4, "big") for i in range(50_000)]  # 100 MB
    kept = blocks[-1]
    del blocks
    before = _resident_mb()

    toolkit.release_freed_memory()

    assert before - _resident_mb() > 50
    assert kept[-4:] == (49_999).to_bytes(4, "big")
