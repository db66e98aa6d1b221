"""`tollgate policy check`: every problem a revision can have is reported at its
`file:line` with a hint, by `check_dir` and by the CLI (exit 1; exit 0 when clean)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.policy.checks import Problem, check_dir
from tests.support.app import POLICY_DIR
from tests.support.escapes import escapes
from tests.support.listener import http_listener
from tests.unit.policy.policy_dirs import DECISION, VALID, line_of, tollgate, write_policies

ENTRYPOINT = "tollgate.decision"
METADATA_HINT = "every rule that can emit an action needs title, description and custom.owner"

SYNTAX_ERROR = """\
# METADATA
# title: Extra
# description: Broken on purpose.
# custom:
#   owner: tests
package tollgate.extra

_broken if { input.x == }
"""


def with_valid(text: str) -> str:
    """The valid decision policy with `text` after it."""
    return f"{VALID}\n{text}"


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def test_the_repository_policies_pass() -> None:
    assert [str(p) for p in check_dir(POLICY_DIR, ENTRYPOINT)] == []


def test_a_minimal_valid_policy_passes(tmp_path: Path) -> None:
    assert check_dir(write_policies(tmp_path, {}), ENTRYPOINT) == []


def test_syntax_error_is_located(tmp_path: Path) -> None:
    root = write_policies(tmp_path, {"tollgate/extra/extra.rego": SYNTAX_ERROR})

    problem = only(check_dir(root, ENTRYPOINT))

    assert problem.file == "tollgate/extra/extra.rego"
    assert problem.line == line_of(root, "tollgate/extra/extra.rego", "_broken")
    assert "rego_parse_error" in problem.message
    assert problem.hint == "fix the syntax"


def test_type_error_is_located(tmp_path: Path) -> None:
    root = write_policies(tmp_path, {DECISION: with_valid("_typed := count(1)\n")})

    problem = only(check_dir(root, ENTRYPOINT))

    assert problem.file == DECISION
    assert problem.line == line_of(root, DECISION, "_typed")
    assert "rego_type_error" in problem.message and "count" in problem.message
    assert "does not compile" in problem.hint


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str]]]:
    with http_listener() as running:
        yield running


def test_network_builtins_are_refused_and_never_called(
    tmp_path: Path, listener: tuple[str, list[str]]
) -> None:
    url, asked = listener
    root = write_policies(
        tmp_path,
        {
            DECISION: with_valid(
                f'_fetched := http.send({{"method": "GET", "url": "{url}/from-check"}})\n\n'
                '_addresses := net.lookup_ip_addr("localhost")\n'
            )
        },
    )

    problems = check_dir(root, ENTRYPOINT)

    assert [(p.file, p.line, p.message) for p in problems] == [
        (
            DECISION,
            line_of(root, DECISION, "http.send"),
            "http.send is not allowed in Tollgate policies (rule _fetched)",
        ),
        (
            DECISION,
            line_of(root, DECISION, "net.lookup_ip_addr"),
            "net.lookup_ip_addr is not allowed in Tollgate policies (rule _addresses)",
        ),
    ]
    assert all("must not reach the network" in p.hint for p in problems)
    # Refusing a call must not make it: checking a pull request's policy is no way
    # to reach the network from CI or from the server that gates it.
    assert asked == []


@pytest.mark.parametrize("name", sorted(escapes("http://127.0.0.1:1")))
def test_every_spelling_of_a_network_call_is_refused_and_never_called(
    name: str, tmp_path: Path, listener: tuple[str, list[str]]
) -> None:
    url, asked = listener
    escape = escapes(url)[name]
    root = write_policies(tmp_path, escape.apply({DECISION: VALID}))

    refused = [p for p in check_dir(root, ENTRYPOINT) if "not allowed" in p.message]

    builtin = "json.verify_schema" if name == "schema-ref" else "http.send"
    assert [p.message.split(" (")[0] for p in refused] == [
        f"{builtin} is not allowed in Tollgate policies"
    ]
    assert asked == []


def test_a_policy_with_network_calls_is_still_compiled(tmp_path: Path) -> None:
    root = write_policies(
        tmp_path,
        {
            DECISION: with_valid(
                '_addresses := net.lookup_ip_addr("localhost")\n\n_typed := count(1)\n'
            )
        },
    )

    problems = check_dir(root, ENTRYPOINT)

    assert [(p.line, p.message.split(":")[0]) for p in problems] == [
        (
            line_of(root, DECISION, "net.lookup_ip_addr"),
            "net.lookup_ip_addr is not allowed in Tollgate policies (rule _addresses)",
        ),
        (line_of(root, DECISION, "_typed"), "rego_type_error"),
    ]


def test_network_builtin_in_a_comment_or_string_is_not_a_call(tmp_path: Path) -> None:
    root = write_policies(
        tmp_path,
        {
            DECISION: with_valid(
                "# policies must never use http.send(...) here\n"
                '_said := "http.send({}) is refused"\n'
            )
        },
    )
    assert check_dir(root, ENTRYPOINT) == []


def test_rules_without_metadata_or_owner_are_located(tmp_path: Path) -> None:
    root = write_policies(
        tmp_path,
        {
            DECISION: with_valid(
                "bare_rule := 1\n\n"
                "# METADATA\n# title: ownerless\n# description: Nobody owns it.\n"
                "ownerless := 2\n\n"
                "_helper := 3\n"
            )
        },
    )

    problems = check_dir(root, ENTRYPOINT)

    assert [(p.file, p.line, p.message) for p in problems] == [
        (
            DECISION,
            line_of(root, DECISION, "bare_rule"),
            "rule bare_rule lacks METADATA title, description, custom.owner",
        ),
        (
            DECISION,
            line_of(root, DECISION, "ownerless :="),
            "rule ownerless lacks METADATA custom.owner",
        ),
    ]
    assert all(METADATA_HINT in p.hint for p in problems)


def test_package_without_metadata_is_located(tmp_path: Path) -> None:
    root = write_policies(
        tmp_path, {"tollgate/extra/extra.rego": "package tollgate.extra\n\n_x := 1\n"}
    )

    problem = only(check_dir(root, ENTRYPOINT))

    assert (problem.file, problem.line) == ("tollgate/extra/extra.rego", 1)
    assert problem.message == "package has no METADATA"
    assert "package tollgate.extra" in problem.hint


def test_test_files_need_no_metadata(tmp_path: Path) -> None:
    root = write_policies(
        tmp_path,
        {"tollgate/decision/decision_test.rego": "package tollgate.decision_test\n\ntest_x := 1\n"},
    )
    assert check_dir(root, ENTRYPOINT) == []


def test_undefined_entrypoint(tmp_path: Path) -> None:
    root = write_policies(tmp_path, {})

    problem = only(check_dir(root, "data.tollgate.nowhere"))

    assert problem.file == str(root)
    assert problem.message == "entrypoint data.tollgate.nowhere is undefined"
    assert "TOLLGATE_ENTRYPOINT" in problem.hint


def test_missing_directory(tmp_path: Path) -> None:
    problem = only(check_dir(tmp_path / "absent", ENTRYPOINT))
    assert "does not exist" in problem.message


def test_cli_exits_0_on_the_repository_policies() -> None:
    result = tollgate("policy", "check", str(POLICY_DIR))

    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{POLICY_DIR}: ok"


def test_cli_takes_the_directory_from_the_environment(tmp_path: Path) -> None:
    root = write_policies(tmp_path, {DECISION: with_valid("bare_rule := 1\n")})

    result = tollgate("policy", "check", env={"TOLLGATE_POLICY_DIR": str(root)})

    assert result.exit_code == 1, result.output
    assert f"{DECISION}:{line_of(root, DECISION, 'bare_rule')}: rule bare_rule" in result.output


def test_cli_prints_file_line_and_hint_and_exits_1(tmp_path: Path) -> None:
    root = write_policies(tmp_path, {DECISION: with_valid("bare_rule := 1\n")})

    result = tollgate("policy", "check", str(root))

    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    located = f"{DECISION}:{line_of(root, DECISION, 'bare_rule')}: rule bare_rule lacks METADATA"
    [at] = [n for n, line in enumerate(lines) if line.startswith(located)]
    assert lines[at + 1].strip().startswith("hint: every rule that can emit an action")
    assert lines[-1] == f"1 problem(s) in {root}"


def test_cli_entrypoint_option(tmp_path: Path) -> None:
    root = write_policies(tmp_path, {})

    result = tollgate("policy", "check", str(root), "--entrypoint", "tollgate.nowhere")

    assert result.exit_code == 1
    assert "entrypoint data.tollgate.nowhere is undefined" in result.output
