"""Canonical JSON: the bytes a signature covers and a keyed hash is taken of.

The form is RFC 8785 (JSON Canonicalization Scheme) restricted to the values Tollgate
publishes: objects with keys sorted by code point, no insignificant whitespace, UTF-8
strings with only the escapes JSON requires, integers, booleans and null. Floating-point
numbers are refused (STIX confidence is an integer; RFC 8785's number serialisation is
the one place where implementations differ), so any JCS implementation, in any
language, produces the same bytes for a Tollgate object.
"""

from __future__ import annotations

import json
from typing import Any

from controlplane.errors import InvalidInput


def canonical_json(document: Any) -> bytes:
    """The canonical bytes of `document` (see the module docstring)."""
    _refuse_floats(document, "$")
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _refuse_floats(value: Any, where: str) -> None:
    if isinstance(value, float):
        raise InvalidInput(
            f"{where}: {value!r} is a floating-point number; canonical objects carry "
            "integers only (scale the value, e.g. confidence 0..100)"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_floats(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_floats(item, f"{where}[{i}]")
