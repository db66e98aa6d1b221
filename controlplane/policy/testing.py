"""`opa test` semantics on the embedded engine: every `test_*` rule of every package
is evaluated; true passes, false, undefined or an error fails. `with` mocks work.

Two things beyond `opa test`: a failing test names the expression that failed (its
file, line and source, from the engine's trace), and every decision a test makes the
entrypoint produce is held to the output contract (`parse_decision`): a rule that
emits a bad target, TTL or type fails `policy test`, not production.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from controlplane.domain.action import MalformedDecision, parse_decision
from controlplane.enforce.targets import DEFAULT_FLOOR, PrefixFloor
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
    failed_at: str = ""
    """`file:line` of the expression that failed (or of the decision that broke the
    contract); empty when the test passed."""

    @property
    def failed_line(self) -> int:
        """The line to point at: the failing expression's, else the test's."""
        where = self.failed_at.rpartition(":")
        return int(where[2]) if where[1] and where[2].isdigit() else self.line


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
    entrypoint: str | None = None,
    floor: PrefixFloor = DEFAULT_FLOOR,
) -> TestReport:
    """Run every test rule of the bundle on one fresh engine. With `entrypoint`, every
    decision a test makes it produce must also meet the output contract (targets
    within `floor`). `PolicyError` for a bundle that does not load or uses a builtin
    that leaves the process."""
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
                    # Traced again (slower) only where the test's module names the
                    # entrypoint: the others cannot make it produce a decision.
                    if entrypoint and f"data.{entrypoint}" in bundle.modules[path]:
                        outcome = _contract(engine, opa, outcome, entrypoint, floor)
                else:
                    outcome = _run_one(engine, opa, package, path, rule, bundle.modules)
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


def _run_one(
    engine: Any, opa: Any, package: str, path: str, rule: Rule, modules: dict[str, str]
) -> TestOutcome:
    start = time.perf_counter()
    failed_at = ""
    try:
        value = engine.eval_document(f"{package}.{rule.name}", trace=True)
        passed = value is True
        message = "" if passed else f"returned {value!r}, not true"
    except opa.OpaUndefinedError:
        passed, message = False, "undefined (a condition in its body failed)"
        failed_at, expression = _failing_expression(engine.last_trace or [], path, modules)
        if failed_at:
            message = f"undefined (a condition in its body failed): {failed_at}: `{expression}`"
    except opa.OpaError as exc:
        passed, message = False, f"error: {exc.message}"
        failed_at = _location_in(exc.message) or ""
    duration = (time.perf_counter() - start) * 1000
    return TestOutcome(package, rule.name, path, rule.line, passed, message, duration, failed_at)


def _failing_expression(
    trace: list[dict[str, Any]], path: str, modules: dict[str, str]
) -> tuple[str, str]:
    """Where the test's own body first failed: (`file:line`, the source of that line)."""
    body = next(
        (
            e["query_id"]
            for e in trace
            if e.get("op") == "Enter" and str(e.get("location", "")).startswith(f"{path}:")
        ),
        None,
    )
    for event in trace:
        if event.get("op") == "Fail" and event.get("query_id") == body:
            location = str(event.get("location", ""))
            file, _, line = location.rpartition(":")
            source = modules.get(file, "").splitlines()
            number = int(line) if line.isdigit() else 0
            text = source[number - 1].strip() if 0 < number <= len(source) else event["node"]
            return location, text
    return "", ""


_LOCATION = re.compile(r"([\w./-]+\.rego:\d+)")


def _location_in(message: str) -> str | None:
    found = _LOCATION.search(message)
    return found.group(1) if found else None


def _contract(
    engine: Any, opa: Any, outcome: TestOutcome, entrypoint: str, floor: PrefixFloor
) -> TestOutcome:
    """Re-run a passing test with the trace on; every value the entrypoint (or its
    `actions`) took during the test must meet the output contract."""
    try:
        engine.eval_document(f"{outcome.package}.{outcome.name}", trace=True)
    except opa.OpaError:
        return outcome
    for location, decision in _decisions(engine.last_trace or [], entrypoint):
        try:
            parse_decision(decision, floor)
        except MalformedDecision as exc:
            return TestOutcome(
                outcome.package,
                outcome.name,
                outcome.file,
                outcome.line,
                False,
                f"{location}: the decision it evaluates breaks the output contract: {exc}",
                outcome.duration_ms,
                location,
            )
    return outcome


def _decisions(trace: list[dict[str, Any]], entrypoint: str) -> list[tuple[str, Any]]:
    """(where, decision) for each value `data.<entrypoint>` or its `.actions` took: the
    trace shows an `Eval` of `X = data.<entrypoint>...`, then a `Unify` with the value.
    Values of another shape (a partial document seen piecewise) are left alone."""
    ref = re.compile(rf"^\S+ = data\.{re.escape(entrypoint)}(?P<actions>\.actions)?(?: with .*)?$")
    found: list[tuple[str, Any]] = []
    pending: dict[int, tuple[str, bool]] = {}
    for event in trace:
        node, query = str(event.get("node", "")), int(event.get("query_id", -1))
        if event.get("op") == "Eval" and (match := ref.match(node)):
            pending[query] = (str(event.get("location", "")), bool(match["actions"]))
        elif event.get("op") == "Unify" and query in pending and "data." not in node:
            location, actions_only = pending.pop(query)
            try:
                value = rego_value(node)
            except ValueError:
                continue
            if actions_only and isinstance(value, list):
                found.append((location, {"actions": value}))
            elif not actions_only and isinstance(value, dict) and "actions" in value:
                found.append((location, value))
    return found


def rego_value(text: str) -> Any:
    """The value at the start of `text`, written as OPA prints values (JSON, plus sets
    `{a, b}` and `set()`, read as arrays). `ValueError` when it is not a plain value."""
    return _Reader(text).value()


class _Reader:
    _WORDS: ClassVar[dict[str, Any]] = {"true": True, "false": False, "null": None}
    _NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0
        self._json = json.JSONDecoder()

    def _skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\n":
            self.pos += 1

    def _at(self, token: str) -> bool:
        self._skip()
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def value(self) -> Any:
        self._skip()
        text, pos = self.text, self.pos
        if self._at("set()"):
            return []
        char = text[pos : pos + 1]
        if char == '"':
            value, self.pos = self._json.raw_decode(text, pos)
            return value
        if self._at("["):
            return self._items("]")
        if self._at("{"):
            return self._braces()
        for word, value in self._WORDS.items():
            if self._at(word):
                return value
        if number := self._NUMBER.match(text, pos):
            self.pos = number.end()
            return json.loads(number.group())
        raise ValueError(f"not a value at {pos}: {text[pos : pos + 20]!r}")

    def _items(self, close: str) -> list[Any]:
        items: list[Any] = []
        while not self._at(close):
            if self.pos >= len(self.text):
                raise ValueError("unterminated")
            items.append(self.value())
            self._at(",")
        return items

    def _braces(self) -> Any:
        """An object (`{k: v}`) or a set (`{a, b}`): the first separator tells."""
        if self._at("}"):
            return {}
        first = self.value()
        if not self._at(":"):
            self._at(",")
            return [first, *self._items("}")]
        result: dict[str, Any] = {}
        key = first
        while True:
            result[key if isinstance(key, str) else json.dumps(key)] = self.value()
            self._at(",")
            if self._at("}"):
                return result
            if self.pos >= len(self.text):
                raise ValueError("unterminated")
            key = self.value()
            if not self._at(":"):
                raise ValueError(f"expected ':' at {self.pos}")


def _merge(
    result: dict[str, Any], covered: dict[str, set[int]], not_covered: dict[str, set[int]]
) -> None:
    for file, entry in (result.get("files") or {}).items():
        for key, target in (("covered", covered), ("not_covered", not_covered)):
            lines = target.setdefault(file, set())
            for span in entry.get(key) or []:
                start, end = span["start"]["row"], span["end"]["row"]
                lines.update(range(start, end + 1))
