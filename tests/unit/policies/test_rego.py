"""The repository's Rego tests, run from pytest with `opa test` semantics: every `test_*`
rule of every package under policies/ is evaluated on the embedded engine, loaded with
all modules and data, and must be true. One pytest test per Rego test, named after it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import opa_bindings
import pytest

from controlplane.engine.bundle import load_bundle
from tests.support.app import POLICY_DIR

PACKAGE = re.compile(r"^package\s+([A-Za-z_][\w.]*)\s*$", re.MULTILINE)
TEST_RULE = re.compile(r"^(test_\w+)\b", re.MULTILINE)


class RegoTest(NamedTuple):
    package: str
    rule: str
    file: Path

    @property
    def document(self) -> str:
        return f"{self.package}.{self.rule}"


def discover(root: Path) -> list[RegoTest]:
    found: dict[str, RegoTest] = {}
    for path in sorted(root.rglob("*.rego")):
        text = path.read_text(encoding="utf-8")
        package = PACKAGE.search(text)
        assert package, f"{path}: no package line"
        for rule in TEST_RULE.findall(text):
            test = RegoTest(package[1], rule, path.relative_to(root))
            found.setdefault(test.document, test)
    return list(found.values())


TESTS = discover(POLICY_DIR)


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    bundle = load_bundle(POLICY_DIR)
    opa = opa_bindings.OpaEngine()
    try:
        for path, source in bundle.modules.items():
            opa.add_policy(path, source)
        for path, document in bundle.data:
            opa.add_data(document, path)
        yield opa
    finally:
        opa.close()


@pytest.mark.parametrize("test", TESTS, ids=[t.document for t in TESTS])
def test_rego(engine: Any, test: RegoTest) -> None:
    try:
        result = engine.eval_document(test.document)
    except opa_bindings.OpaUndefinedError:
        pytest.fail(f"{test.file}: {test.rule} is undefined: one of its conditions is false")
    except opa_bindings.OpaError as exc:
        pytest.fail(f"{test.file}: {test.rule} failed: {exc.code}: {exc.message}")
    assert result is True, f"{test.file}: {test.rule} evaluated to {result!r}, not true"


def test_every_policy_has_tests_beside_it() -> None:
    tested = {t.file.parent for t in TESTS if t.file.name.endswith("_test.rego")}
    policies = {
        p.relative_to(POLICY_DIR).parent
        for p in POLICY_DIR.rglob("*.rego")
        if not p.name.endswith("_test.rego")
    }
    assert policies, "no policies found"
    assert sorted(map(str, policies - tested)) == []


def test_discovery_finds_the_tests() -> None:
    packages = {t.package for t in TESTS}
    assert "tollgate.graduated_test" in packages
    assert "tollgate.decision_test" in packages
    assert len(TESTS) >= 40
