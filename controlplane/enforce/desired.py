"""From actions to gateway entries, and the difference between desired and observed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controlplane.enforce.sdk import Diff, Entry, EntryType


@dataclass
class DesiredState:
    """Entries by key, each with the actions that ask for it and since when."""

    entries: dict[tuple[str, str, str], Entry] = field(default_factory=dict)
    actions: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    since: dict[tuple[str, str, str], datetime] = field(default_factory=dict)

    def add(self, action_id: str, entry: Entry, created_at: datetime) -> None:
        key = entry.key
        current = self.entries.get(key)
        if current is None or _stricter(entry, current):
            self.entries[key] = entry
        self.actions.setdefault(key, []).append(action_id)
        if key not in self.since or created_at < self.since[key]:
            self.since[key] = created_at

    def allow(self, entry: Entry) -> None:
        """A carve-out: asked for by an exemption, not by actions."""
        self.entries[entry.key] = entry
        self.actions.setdefault(entry.key, [])


def entry_of(
    action_type: str, target_kind: str, target_value: str, params: dict[str, Any]
) -> Entry | None:
    """The gateway entry an action asks for; None for actions no gateway enforces."""
    try:
        kind = EntryType(action_type)
    except ValueError:
        return None  # flag_review: a review queue, not a gateway
    rpm = params.get("requests_per_minute") if kind is EntryType.RATE_LIMIT else None
    if kind is EntryType.RATE_LIMIT and not isinstance(rpm, int):
        return None
    return Entry(kind, target_kind, target_value, rpm)


def _stricter(candidate: Entry, current: Entry) -> bool:
    if candidate.requests_per_minute is None or current.requests_per_minute is None:
        return False
    return candidate.requests_per_minute < current.requests_per_minute


def diff(desired: Iterable[Entry], observed: Iterable[Entry]) -> Diff:
    """What to add, remove and change so the gateway holds exactly `desired`."""
    want = {e.key: e for e in desired}
    have = {e.key: e for e in observed}
    add = tuple(e for k, e in want.items() if k not in have)
    remove = tuple(e for k, e in have.items() if k not in want)
    change = tuple(
        e
        for k, e in want.items()
        if k in have and have[k].requests_per_minute != e.requests_per_minute
    )
    return Diff(add=add, remove=remove, change=change)
