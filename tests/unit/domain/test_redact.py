from __future__ import annotations

import hashlib

from controlplane.domain.redact import key_handle, redact_keys


def test_handle_is_stable_and_not_the_key() -> None:
    handle = key_handle("key_live_7f3a")
    assert handle == "key:" + hashlib.sha256(b"key_live_7f3a").hexdigest()[:12]
    assert "key_live" not in handle


def test_redaction_replaces_longest_ids_first() -> None:
    text = "refused key_1 and key_10"
    out = redact_keys(text, ["key_1", "key_10"])
    assert out == f"refused {key_handle('key_1')} and {key_handle('key_10')}"
