"""The embedded OPA engine is installed the documented way: its own hash-pinned step,
because its metadata claims a Python newer than the one it runs on here."""

from __future__ import annotations

import importlib.metadata
import re
import sys

from controlplane.engine.sandbox import INSTALL_STEP
from tests.support.app import REPO

DISTRIBUTION = "opa-golib-python-bindings"
PINNED = "0.4.4"


def test_the_pinned_version_is_installed_and_imports() -> None:
    import opa_bindings

    assert importlib.metadata.version(DISTRIBUTION) == PINNED
    engine = opa_bindings.OpaEngine()
    try:
        engine.add_policy("t.rego", "package t\n\nanswer := input.x * 2\n")
        assert engine.eval_document("t.answer", {"x": 21}) == 42
    finally:
        engine.close()


def test_it_runs_on_a_python_its_metadata_refuses() -> None:
    """Why the install step needs --ignore-requires-python (DESIGN.md, 'Engines')."""
    requires = importlib.metadata.metadata(DISTRIBUTION)["Requires-Python"]
    minimum = re.fullmatch(r">=\s*(\d+)\.(\d+)", requires or "")
    assert minimum, f"unexpected Requires-Python {requires!r}"
    assert sys.version_info[:2] < (int(minimum[1]), int(minimum[2]))


def test_requirements_file_pins_it_by_hash() -> None:
    text = (REPO / "requirements" / "opa-engine.txt").read_text(encoding="utf-8")

    assert f"{DISTRIBUTION}=={PINNED}" in text
    assert len(re.findall(r"--hash=sha256:[0-9a-f]{64}", text)) >= 1


def test_make_and_the_error_message_give_the_same_install_step() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    flags = "--no-deps --ignore-requires-python --require-hashes -r requirements/opa-engine.txt"

    assert flags in makefile
    assert f"pip install {flags}" == INSTALL_STEP
