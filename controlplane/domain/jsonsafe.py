"""What every JSON value Tollgate accepts must be: finite numbers, strings that are real
text, and a bounded depth.

Python's `json` reads `NaN`, `Infinity`, `1e999` (as infinity) and `"\\ud800"` (a lone
surrogate) without complaint, but OPA refuses such an input, PostgreSQL refuses NUL
characters and surrogates in JSON and text, and deep nesting exhausts the parser's stack.
Left in, any of them turns a verdict into an undecidable one or a stored value into a
server error, so they are refused where input enters, each named by its path.
"""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects a body may have (the body itself is level 1)."""
MAX_PROBLEMS = 20
"""Problems reported per body: enough to fix it, bounded for a hostile one."""


def child(path: str, key: str | int) -> str:
    """The path of an item: `verdicts[0]`, `signals.x` (the root is the empty path)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored or evaluated, or None."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (e.g. \\ud800): not valid Unicode text"
    return None


def problems(value: Any, path: str = "", depth: int = 1) -> list[dict[str, str]]:
    """Each bad number, string, key or nesting in `value`, as `{field, message}`."""
    if _clean(value, depth):
        return []
    found: list[dict[str, str]] = []
    _walk(value, path, depth, found)
    return found[:MAX_PROBLEMS]


def _clean(value: Any, depth: int) -> bool:
    """Whether `_walk` would find nothing, found without the path of every item: nearly
    every body is clean, and naming each of its items cost more than reading it."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return _text_ok(value)
    if isinstance(value, dict | list):
        if depth > MAX_DEPTH:
            return False
        if isinstance(value, dict):
            return all(
                _text_ok(str(key)) and _clean(item, depth + 1) for key, item in value.items()
            )
        return all(_clean(item, depth + 1) for item in value)
    return True


def _text_ok(text: str) -> bool:
    """`text_problem(text) is None`, in one scan for the usual ASCII text."""
    return "\x00" not in text and (text.isascii() or text_problem(text) is None)


def _walk(value: Any, path: str, depth: int, found: list[dict[str, str]]) -> None:
    if len(found) >= MAX_PROBLEMS:
        return
    where = path or "body"
    if isinstance(value, float) and not math.isfinite(value):
        found.append({"field": where, "message": f"{value} is not a finite number"})
    elif isinstance(value, str):
        why = text_problem(value)
        if why:
            found.append({"field": where, "message": f"the string {why}"})
    elif isinstance(value, dict | list):
        if depth > MAX_DEPTH:
            found.append({"field": where, "message": f"nested deeper than {MAX_DEPTH} levels"})
            return
        if isinstance(value, dict):
            for key, item in value.items():
                name = str(key)
                why = text_problem(name)
                if why:
                    found.append({"field": where, "message": f"a key {why}"})
                    continue
                _walk(item, child(path, name), depth + 1, found)
        else:
            for index, item in enumerate(value):
                _walk(item, child(path, index), depth + 1, found)
