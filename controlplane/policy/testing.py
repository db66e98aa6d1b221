"""`opa test` semantics on the embedded engine: every `test_*` rule of every package
is evaluated; true passes, false, undefined or an error fails. `with` mocks work."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controlplane.engine.bundle import PolicyBundle
from controlplane.engine.sandbox import new_engine, opa_module
from controlplane.policy.rego import Rule, read_module


@dataclass(frozen=True)
class TestOutcome:
    package: str
    name: str
    file: str
    line: int
    passed: bool
    message: str
    duration_ms: float


@dataclass
class TestReport:
    outcomes: list[TestOutcome] = field(default_factory=list)
    coverage: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per policy file (tests excluded): covered and not covered lines, percent."""

    @property
    def passed(self) -> int:
        return sum(o.passed for o in self.outcomes)

    @property
    def failed(self) -> int:
        return len(self.outcomes) - self.passed

    @property
    def coverage_percent(self) -> float:
        covered = sum(len(f["covered"]) for f in self.coverage.values())
        missing = sum(len(f["not_covered"]) for f in self.coverage.values())
        return 100.0 * covered / (covered + missing) if covered + missing else 100.0


def run_tests(
    bundle: PolicyBundle,
    *,
    coverage: bool = False,
    on_result: Callable[[TestOutcome], None] | None = None,
) -> TestReport:
    """Run every test rule of the bundle on one fresh engine. `PolicyError` for a
    bundle that does not load or uses a builtin that leaves the process."""
    opa = opa_module()
    engine = new_engine(bundle)
    report = TestReport()
    covered: dict[str, set[int]] = {}
    not_covered: dict[str, set[int]] = {}
    try:
        tests: dict[str, list[tuple[str, Rule]]] = {}
        for path, source in bundle.modules.items():
            module = read_module(path, source)
            for rule in module.rules:
                if rule.is_test:
                    tests.setdefault(module.package, []).append((path, rule))
        for package, rules in tests.items():
            # One evaluation of the whole package runs all its tests at once; a test
            # that is not plainly true is then run alone, to say why it failed.
            start = time.perf_counter()
            try:
                document = engine.eval_document(package, coverage=coverage)
            except opa.OpaError:
                document = {}
            share = (time.perf_counter() - start) * 1000 / len(rules)
            if coverage and engine.last_coverage:
                _merge(engine.last_coverage, covered, not_covered)
            for path, rule in rules:
                if isinstance(document, dict) and document.get(rule.name) is True:
                    outcome = TestOutcome(package, rule.name, path, rule.line, True, "", share)
                else:
                    outcome = _run_one(engine, opa, package, path, rule)
                report.outcomes.append(outcome)
                if on_result:
                    on_result(outcome)
    finally:
        engine.close()
    if coverage:
        for file in sorted(set(covered) | set(not_covered)):
            if file.endswith("_test.rego"):
                continue
            hit = covered.get(file, set())
            miss = not_covered.get(file, set()) - hit
            total = len(hit) + len(miss)
            report.coverage[file] = {
                "covered": sorted(hit),
                "not_covered": sorted(miss),
                "percent": 100.0 * len(hit) / total if total else 100.0,
            }
    return report


def _run_one(engine: Any, opa: Any, package: str, path: str, rule: Rule) -> TestOutcome:
    start = time.perf_counter()
    try:
        value = engine.eval_document(f"{package}.{rule.name}")
        passed = value is True
        message = "" if passed else f"returned {value!r}, not true"
    except opa.OpaUndefinedError:
        passed, message = False, "undefined (a condition in its body failed)"
    except opa.OpaError as exc:
        passed, message = False, f"error: {exc.message}"
    duration = (time.perf_counter() - start) * 1000
    return TestOutcome(package, rule.name, path, rule.line, passed, message, duration)


def _merge(
    result: dict[str, Any], covered: dict[str, set[int]], not_covered: dict[str, set[int]]
) -> None:
    for file, entry in (result.get("files") or {}).items():
        for key, target in (("covered", covered), ("not_covered", not_covered)):
            lines = target.setdefault(file, set())
            for span in entry.get(key) or []:
                start, end = span["start"]["row"], span["end"]["row"]
                lines.update(range(start, end + 1))
