"""`tollgate policy test`: every `test_*` rule with `opa test` semantics (true passes;
false, undefined or an error fails, each with its reason), coverage, and the text,
JSON, JUnit and GitHub formats CI reads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from xml.etree import ElementTree

import pytest

from controlplane.engine.bundle import load_bundle
from controlplane.policy import testing
from controlplane.policy.testing import run_tests
from tests.support.app import POLICY_DIR
from tests.unit.policy.policy_dirs import (
    DECISION,
    DECISION_TEST,
    VALID,
    line_of,
    tollgate,
    write_policies,
)

# Four tests, one per outcome `opa test` knows.
MIXED = """\
package tollgate.decision_test

import data.tollgate.decision

test_passes if {
	decision.shadow == false
}

test_is_false := false

test_is_undefined if {
	decision.actions[0]
}

test_errors if {
	_conflicting == 1
}

_conflicting := 1

_conflicting := 2
"""

REASONS = {
    "test_is_false": "returned False, not true",
    "test_is_undefined": "undefined (a condition in its body failed)",
    "test_errors": "eval_conflict_error",
}


def rego_test_count(root: Path) -> int:
    """`test_*` rules as written in the files, independently of the runner."""
    names = {
        (path, match)
        for path in root.rglob("*_test.rego")
        for match in re.findall(r"^(test_\w+)\b", path.read_text(encoding="utf-8"), re.M)
    }
    return len(names)


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    return write_policies(tmp_path, {DECISION_TEST: MIXED})


def by_name(outcomes: list[testing.TestOutcome]) -> dict[str, testing.TestOutcome]:
    return {o.name: o for o in outcomes}


def test_the_repository_policies_all_pass() -> None:
    report = run_tests(load_bundle(POLICY_DIR))

    assert [f"{o.package}.{o.name}: {o.message}" for o in report.outcomes if not o.passed] == []
    assert report.passed == rego_test_count(POLICY_DIR) >= 40
    assert report.failed == 0
    assert {o.package for o in report.outcomes} >= {
        "tollgate.decision_test",
        "tollgate.graduated_test",
        "tollgate.intel_test",
    }


def test_each_way_of_failing_is_reported_with_its_reason(mixed: Path) -> None:
    seen: list[str] = []

    report = run_tests(load_bundle(mixed), on_result=lambda o: seen.append(o.name))

    outcomes = by_name(report.outcomes)
    assert seen == ["test_passes", "test_is_false", "test_is_undefined", "test_errors"]
    assert (report.passed, report.failed) == (1, 3)
    assert outcomes["test_passes"].passed and outcomes["test_passes"].message == ""
    for name, reason in REASONS.items():
        outcome = outcomes[name]
        assert not outcome.passed
        assert reason in outcome.message, outcome.message
        assert outcome.file == DECISION_TEST
        assert outcome.line == line_of(mixed, DECISION_TEST, name)
        assert outcome.package == "tollgate.decision_test"
    assert outcomes["test_errors"].message.startswith("error: ")


def test_with_mocks_work(tmp_path: Path) -> None:
    mocked = (
        "package tollgate.decision_test\n\nimport data.tollgate.decision\n\n"
        "test_mocked if {\n\tdecision.shadow == true with decision.shadow as true\n}\n"
    )
    report = run_tests(load_bundle(write_policies(tmp_path, {DECISION_TEST: mocked})))
    assert [(o.name, o.passed) for o in report.outcomes] == [("test_mocked", True)]


def test_coverage_is_reported_per_policy_file() -> None:
    report = run_tests(load_bundle(POLICY_DIR), coverage=True)

    assert report.coverage, "no coverage"
    assert not any(f.endswith("_test.rego") for f in report.coverage)
    assert "tollgate/graduated/graduated.rego" in report.coverage
    for entry in report.coverage.values():
        assert set(entry["covered"]).isdisjoint(entry["not_covered"])
    assert 50.0 < report.coverage_percent <= 100.0


def test_cli_runs_the_repository_tests() -> None:
    result = tollgate("policy", "test", str(POLICY_DIR))

    assert result.exit_code == 0, result.output
    count = rego_test_count(POLICY_DIR)
    assert result.stdout.splitlines()[-1] == f"{count} passed, 0 failed"
    assert "test_first_offense_rate_limits_the_key" in result.stdout


def test_cli_text_reports_failures_and_exits_1(mixed: Path) -> None:
    result = tollgate("policy", "test", str(mixed))

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[-1] == "1 passed, 3 failed"
    for name in REASONS:
        [row] = [line for line in lines if f" {name} " in line]
        assert "FAIL" in row
        assert f"{DECISION_TEST}:{line_of(mixed, DECISION_TEST, name)}" in row
    assert "returned False, not true" in result.stdout
    assert "undefined (a condition in its body failed)" in result.stdout


def test_cli_coverage_under_the_bar_exits_1() -> None:
    met = tollgate("policy", "test", str(POLICY_DIR), "--coverage", "--fail-under", "50")
    missed = tollgate("policy", "test", str(POLICY_DIR), "--coverage", "--fail-under", "101")

    assert met.exit_code == 0, met.output
    assert "total coverage:" in met.stdout
    assert missed.exit_code == 1, missed.output
    assert "is under 101.0%" in missed.stdout


def test_cli_json(mixed: Path) -> None:
    result = tollgate("policy", "test", str(mixed), "--format", "json")

    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert (document["passed"], document["failed"]) == (1, 3)
    assert document["coverage"] is None
    tests = {t["name"]: t for t in document["tests"]}
    assert set(tests) == {"test_passes", *REASONS}
    assert tests["test_is_undefined"]["passed"] is False
    assert tests["test_is_undefined"]["line"] == line_of(mixed, DECISION_TEST, "test_is_undefined")


def test_cli_json_with_coverage() -> None:
    result = tollgate("policy", "test", str(POLICY_DIR), "--format", "json", "--coverage")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["passed"], document["failed"]) == (rego_test_count(POLICY_DIR), 0)
    assert 0 < document["coverage"]["percent"] <= 100
    assert "tollgate/intel/intel.rego" in document["coverage"]["files"]


def test_cli_junit(mixed: Path) -> None:
    result = tollgate("policy", "test", str(mixed), "--format", "junit")

    assert result.exit_code == 1
    suite = ElementTree.fromstring(result.stdout.encode())
    assert suite.tag == "testsuite"
    assert (suite.get("tests"), suite.get("failures")) == ("4", "3")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert cases["test_passes"].find("failure") is None
    for name, reason in REASONS.items():
        failure = cases[name].find("failure")
        assert failure is not None
        assert reason in (failure.get("message") or "")
        assert cases[name].get("file") == DECISION_TEST
        assert cases[name].get("line") == str(line_of(mixed, DECISION_TEST, name))


def test_cli_github_annotations(mixed: Path) -> None:
    result = tollgate("policy", "test", str(mixed), "--format", "github")

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    errors = [line for line in lines if line.startswith("::error ")]
    assert len(errors) == 3
    for name, reason in REASONS.items():
        line = line_of(mixed, DECISION_TEST, name)
        # An undefined test points at the expression in its body that failed, an
        # error at where OPA says it arose (the second `_conflicting`).
        line += 1 if name == "test_is_undefined" else 0
        if name == "test_errors":
            line = MIXED.splitlines().index("_conflicting := 2") + 1
        [annotation] = [e for e in errors if f"title=tollgate.decision_test.{name}::" in e]
        assert annotation.startswith(f"::error file={DECISION_TEST},line={line},")
        assert reason in annotation
    assert lines[-1] == "1 passed, 3 failed"


def test_cli_github_annotations_stay_on_one_line(tmp_path: Path) -> None:
    # A type error fails every test with OPA's multi-line message; GitHub reads one
    # line per workflow command, so newlines (and %) must be escaped, not printed.
    typed = (
        "package tollgate.decision_test\n\n"
        "test_count if {\n\tcount(1) == 1\n}\n\n"
        'test_upper if {\n\tupper(1) == "A"\n}\n'
    )
    root = write_policies(tmp_path, {DECISION_TEST: typed})

    result = tollgate("policy", "test", str(root), "--format", "github")

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[-1] == "0 passed, 2 failed"
    assert len(lines) == 3 and all(line.startswith("::error file=") for line in lines[:2])
    for line in lines[:2]:
        assert "rego_type_error: count" in line and "rego_type_error: upper" in line
        assert "%0A" in line


def test_cli_without_tests_fails(tmp_path: Path) -> None:
    result = tollgate("policy", "test", str(write_policies(tmp_path, {})))

    assert result.exit_code == 1
    assert "no test_* rules found" in result.stdout
    assert result.stdout.splitlines()[-1] == "0 passed, 0 failed"


def test_a_failing_test_names_the_expression_that_failed(tmp_path: Path) -> None:
    body = """\
package tollgate.decision_test

import data.tollgate.decision

test_three_conditions if {
	decision.shadow == false
	x := count(decision.actions)
	x == 2
	x < 10
}
"""
    root = write_policies(tmp_path, {DECISION_TEST: body})
    [outcome] = run_tests(load_bundle(root)).outcomes
    assert not outcome.passed
    assert outcome.failed_at == f"{DECISION_TEST}:8"
    assert outcome.message.endswith(f"{DECISION_TEST}:8: `x == 2`")

    result = tollgate("policy", "test", str(root), "--format", "github")
    assert result.stdout.startswith(f"::error file={DECISION_TEST},line=8,")


# A rule that emits what the output contract refuses; its own test passes in OPA.
WIDE_BLOCK = VALID.replace(
    "actions := []",
    """actions := [{"type": "block", "target": {"kind": "cidr", "value": "10.0.0.0/8"},
	"params": {}, "ttl": "7d", "rule": "decision.wide", "reason": "too wide"}] if {
	input.verdict.score > 0.5
}

default actions := []""",
)
BAD_TTL = VALID.replace(
    "actions := []",
    """actions := {{"type": "revoke_key", "target": {"kind": "api_key", "value": "key_1"},
	"params": {}, "ttl": "forever", "rule": "decision.ttl", "reason": "bad ttl"}}""",
)
COUNTS_ACTIONS = """\
package tollgate.decision_test

import data.tollgate.decision

test_one_action if {
	count(decision.actions) == 1 with input as {"verdict": {"score": 0.9}}
}
"""


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        (WIDE_BLOCK, "decision.actions[0].target.value from rule decision.wide"),
        (BAD_TTL, "decision.actions[0].ttl: 'forever' is not a duration"),
    ],
)
def test_a_decision_that_breaks_the_output_contract_fails_its_test(
    tmp_path: Path, policy: str, problem: str
) -> None:
    root = write_policies(tmp_path, {DECISION: policy, DECISION_TEST: COUNTS_ACTIONS})
    bundle = load_bundle(root)
    [plain] = run_tests(bundle).outcomes
    assert plain.passed, "OPA alone lets it pass"

    [checked] = run_tests(bundle, entrypoint="tollgate.decision").outcomes
    assert not checked.passed
    assert "breaks the output contract" in checked.message and problem in checked.message
    assert checked.failed_at == f"{DECISION_TEST}:6"

    result = tollgate("policy", "test", str(root))
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == "0 passed, 1 failed"


def test_a_decision_within_the_contract_passes(tmp_path: Path) -> None:
    narrow = WIDE_BLOCK.replace("10.0.0.0/8", "203.0.113.0/24")
    root = write_policies(tmp_path, {DECISION: narrow, DECISION_TEST: COUNTS_ACTIONS})
    [outcome] = run_tests(load_bundle(root), entrypoint="tollgate.decision").outcomes
    assert outcome.passed, outcome.message


def test_rego_values_are_read_as_opa_prints_them() -> None:
    assert testing.rego_value('{{"a": 1, "b": [1, 2.5, "x = y"]}, {"c": null}} = __local1__') == [
        {"a": 1, "b": [1, 2.5, "x = y"]},
        {"c": None},
    ]
    assert testing.rego_value("set() = x") == []
    assert testing.rego_value('{"k": {1, 2}, "e": {}}') == {"k": [1, 2], "e": {}}
    with pytest.raises(ValueError):
        testing.rego_value("__local3__ = 2")
