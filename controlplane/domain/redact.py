"""API key ids never appear in clear outside the action that names them: spans, logs,
error texts and the console show a stable handle instead (DESIGN.md, 'Security')."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

HANDLE_PREFIX = "key:"


def key_handle(api_key_id: str) -> str:
    """`key:` and the first 12 hex digits of the id's SHA-256: stable, not reversible."""
    return HANDLE_PREFIX + hashlib.sha256(api_key_id.encode()).hexdigest()[:12]


def redact_keys(text: str, api_key_ids: Iterable[str]) -> str:
    """`text` with each of `api_key_ids` replaced by its handle (longest first, so a key
    id that contains another is replaced whole)."""
    for key_id in sorted(set(api_key_ids), key=len, reverse=True):
        if key_id and key_id in text:
            text = text.replace(key_id, key_handle(key_id))
    return text
