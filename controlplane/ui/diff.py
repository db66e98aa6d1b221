"""What a policy revision changed: its modules and data against the revision before it."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from controlplane.engine.bundle import short_revision
from controlplane.store.models import PolicyRevisionRow


@dataclass
class FileChange:
    path: str
    change: str
    """`added`, `removed` or `changed`."""
    added: int
    removed: int
    lines: list[tuple[str, str]] = field(default_factory=list)
    """(css class, text) per line of the unified diff: `add`, `del`, `hunk` or ``."""


def _sources(row: PolicyRevisionRow) -> dict[str, str]:
    files = dict(row.modules)
    for path, document in row.data:
        files[f"data: {path or '(root)'}"] = json.dumps(document, indent=2, sort_keys=True) + "\n"
    return files


def changes(before: PolicyRevisionRow | None, after: PolicyRevisionRow) -> list[FileChange]:
    """Per file (modules and data documents), what `after` changed from `before`."""
    old = _sources(before) if before else {}
    new = _sources(after)
    found: list[FileChange] = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a == b:
            continue
        kind = "added" if a is None else "removed" if b is None else "changed"
        lines = list(
            difflib.unified_diff(
                (a or "").splitlines(),
                (b or "").splitlines(),
                fromfile=f"{short_revision(before.id) if before else 'nothing'}/{path}",
                tofile=f"{short_revision(after.id)}/{path}",
                lineterm="",
                n=3,
            )
        )
        found.append(
            FileChange(
                path=path,
                change=kind,
                added=sum(1 for x in lines if x.startswith("+") and not x.startswith("+++")),
                removed=sum(1 for x in lines if x.startswith("-") and not x.startswith("---")),
                lines=[(_css(x), x) for x in lines[2:]],
            )
        )
    return found


def _css(line: str) -> str:
    if line.startswith("@@"):
        return "hunk"
    if line.startswith("+"):
        return "add"
    if line.startswith("-"):
        return "del"
    return ""


def tests_summary(tests: dict[str, Any]) -> str:
    if not tests:
        return ""
    return f"{tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed"
