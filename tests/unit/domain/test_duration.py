"""`parse_duration`: the TTLs policies write."""

from __future__ import annotations

from datetime import timedelta

import pytest

from controlplane.domain.action import parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("30m", timedelta(minutes=30)),
        ("90s", timedelta(seconds=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1m30s", timedelta(minutes=1, seconds=30)),
        ("1s500ms", timedelta(seconds=1, milliseconds=500)),
        ("0s", timedelta(0)),
        ("36h", timedelta(days=1, hours=12)),
    ],
)
def test_valid_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "24", "h", "1.5h", "-1h", "24h ", " 24h", "1hx", "x1h", "1 h", "1H", "1y", "1h-", "d7"],
)
def test_invalid_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration like '30m', '24h', '7d' or '1h30m'"):
        parse_duration(text)
