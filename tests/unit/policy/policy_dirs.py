"""Small policy directories written for one test, and the CLI run against them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from typer.testing import CliRunner, Result

from controlplane.cli.main import app
from controlplane.settings import get_settings

DECISION = "tollgate/decision/decision.rego"
DECISION_TEST = "tollgate/decision/decision_test.rego"

# A decision policy that passes `policy check`: METADATA on the package and on every
# rule that can emit an action, an entrypoint that answers the probe.
VALID = """\
# METADATA
# title: Decision
# description: The entrypoint of a test policy set.
# custom:
#   owner: tests
package tollgate.decision

# METADATA
# title: actions
# description: Nothing is ever asked for.
# custom:
#   owner: tests
actions := []

# METADATA
# title: shadow
# description: Live.
# custom:
#   owner: tests
shadow := false
"""

PASSING_TEST = """\
package tollgate.decision_test

import data.tollgate.decision

test_no_actions if {
	count(decision.actions) == 0
}
"""


def write_policies(root: Path, files: dict[str, str]) -> Path:
    """`root` holding `files` (path -> text) beside the valid decision policy."""
    for name, text in {DECISION: VALID, **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def line_of(root: Path, name: str, marker: str) -> int:
    """The 1-based line of `name` that holds `marker` (exactly one must)."""
    lines = (root / name).read_text(encoding="utf-8").splitlines()
    found = [n for n, text in enumerate(lines, 1) if marker in text]
    assert len(found) == 1, f"{marker!r} is on lines {found} of {name}"
    return found[0]


@contextmanager
def fresh_settings() -> Iterator[None]:
    """The CLI reads settings once per process (`lru_cache`): read them again here."""
    get_settings.cache_clear()
    try:
        yield
    finally:
        get_settings.cache_clear()


def tollgate(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run the CLI; a wide terminal, so rich does not fold `file:line` across lines."""
    with fresh_settings():
        return CliRunner().invoke(app, list(args), env={"COLUMNS": "250", **(env or {})})
