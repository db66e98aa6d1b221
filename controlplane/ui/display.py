"""How the console shows values it must not show as they are.

An API key id (the lab's key id, or a fingerprint of the key) never appears in the
console, its URLs or its page source: it is shown as a stable handle, `key:` and the
first 12 hex digits of its SHA-256. The handle is the same everywhere (timeline,
subject page, action page, traces), so an auditor can follow one key without seeing it.
Free text and JSON that may quote a key id (a rule's reason, a decision's input, rule
bindings) go through a `Redactor` holding the key ids of the page.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from controlplane.domain.redact import key_handle
from controlplane.domain.vocabulary import SubjectKind
from controlplane.engine.bundle import short_revision

HANDLE = re.compile(r"^key:[0-9a-f]{12}$")
MENTION = re.compile(r"(?<![\w-])api_key:(\S+?)(?=:\s|[;,)]|\s|$)")
"""`api_key:<id>`, as connector failures name their target (`revoke_key api_key:k: why`)."""


def is_handle(value: str) -> bool:
    return bool(HANDLE.match(value))


def subject_label(kind: str, value: str) -> str:
    """A subject as the console shows it: API keys by handle, the rest as they are."""
    return key_handle(value) if kind == SubjectKind.API_KEY.value else value


class Handles:
    """Handles the console has shown, and the key ids behind them, so following a
    link to a key's page needs no search. Bounded; a miss falls back to a search."""

    def __init__(self, size: int = 50_000) -> None:
        self._size = size
        self._known: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, api_key_id: str) -> str:
        handle = key_handle(api_key_id)
        with self._lock:
            self._known[handle] = api_key_id
            self._known.move_to_end(handle)
            if len(self._known) > self._size:
                self._known.popitem(last=False)
        return handle

    def lookup(self, handle: str) -> str | None:
        with self._lock:
            return self._known.get(handle)


handles = Handles()


class Redactor:
    """Replaces the given key ids, wherever they occur in text or JSON, by handles."""

    def __init__(self, api_key_ids: Iterable[str | None] = ()) -> None:
        ids = sorted({k for k in api_key_ids if k}, key=len, reverse=True)
        self._handles = {k: handles.remember(k) for k in ids}
        # Whole identifiers only: `key_3` is not redacted inside `key_30`.
        alternatives = "|".join(re.escape(k) for k in ids)
        self._pattern = re.compile(f"(?<![\\w-])(?:{alternatives})(?![\\w-])") if ids else None

    def text(self, value: str | None) -> str:
        """`value` with the known key ids, and any key named as `api_key:<id>`, as handles."""
        if not value:
            return ""
        if self._pattern is not None:
            value = self._pattern.sub(lambda m: self._handles[m.group(0)], value)
        return mentions(value)

    def value(self, value: Any) -> Any:
        """A JSON-like value with every string (keys included) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value

    def subject(self, kind: str, value: str) -> str:
        if kind == SubjectKind.API_KEY.value:
            return handles.remember(value)
        return self.text(value)


def mentions(text: str) -> str:
    """Text with every `api_key:<id>` written `api_key:<handle>`: what a page shows when
    it cannot know which keys a message (a connector's error) may name."""

    def handle(match: re.Match[str]) -> str:
        value = match.group(1)
        return match.group(0) if is_handle(value) else f"api_key:{handles.remember(value)}"

    return MENTION.sub(handle, text)


def when(value: datetime | None) -> str:
    """A timestamp as the console shows it: UTC, to the second."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def short(revision: str | None) -> str:
    """A revision as a column shows it (`short_revision`)."""
    return short_revision(revision)


def duration_ms(start_ns: int, end_ns: int) -> str:
    ms = (end_ns - start_ns) / 1e6
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms"


def since_ns(value: datetime | None) -> int:
    return int(value.timestamp() * 1e9) if value else 0
