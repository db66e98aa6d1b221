"""The sandbox: no engine Tollgate builds holds a policy that can leave the process,
however the call is spelled; pure builtins (`net.cidr_*`) stay."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import opa_bindings
import pytest

from controlplane.engine.bundle import PolicyBundle, load_bundle
from controlplane.engine.embedded import PROBE_INPUT, EmbeddedEngine
from controlplane.engine.sandbox import DENIED_BUILTINS, denied_uses, new_engine
from controlplane.errors import PolicyError
from controlplane.policy.testing import run_tests
from tests.support.app import POLICY_DIR
from tests.support.escapes import DECISION, HELPER, escapes
from tests.support.listener import http_listener
from tests.unit.policy.policy_dirs import VALID

ROOT = Path(__file__).resolve().parents[3]
NAMES = sorted(escapes("http://127.0.0.1:1"))


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str]]]:
    with http_listener() as running:
        yield running


def escaped(url: str, name: str) -> PolicyBundle:
    modules = escapes(url)[name].apply({DECISION: VALID})
    return PolicyBundle(root=Path("escape"), revision=name, modules=modules, data=[])


@pytest.mark.parametrize("name", NAMES)
def test_each_escape_reaches_the_network_from_a_bare_engine(
    name: str, listener: tuple[str, list[str]]
) -> None:
    """Without the sandbox each spelling makes its request: the tests below can fail."""
    url, asked = listener
    engine = opa_bindings.OpaEngine()
    try:
        for path, source in escaped(url, name).modules.items():
            engine.add_policy(path, source)
        engine.eval_document("tollgate.decision", PROBE_INPUT)
    finally:
        engine.close()
    assert asked == ["/schema" if name == "schema-ref" else f"/{name}"]


@pytest.mark.parametrize("name", NAMES)
def test_the_embedded_engine_refuses_each_escape_and_calls_nothing(
    name: str, listener: tuple[str, list[str]]
) -> None:
    url, asked = listener
    builtin = "json.verify_schema" if name == "schema-ref" else "http.send"

    with pytest.raises(PolicyError) as refused:
        EmbeddedEngine(escaped(url, name), "tollgate.decision")

    where = HELPER if name == "helper-package" else DECISION
    assert f"{where}: rule" in refused.value.message
    assert f"uses {builtin}, which is not allowed" in refused.value.message
    assert asked == []


@pytest.mark.parametrize("name", NAMES)
def test_policy_tests_refuse_each_escape_and_call_nothing(
    name: str, listener: tuple[str, list[str]]
) -> None:
    url, asked = listener
    bundle = escaped(url, name)
    modules = {**bundle.modules, "t_test.rego": "package t_test\n\ntest_sent if data.tollgate\n"}

    with pytest.raises(PolicyError, match="not allowed"):
        run_tests(PolicyBundle(bundle.root, bundle.revision, modules, []))

    assert asked == []


@pytest.mark.parametrize(
    ("spelling", "builtin"),
    [
        ('net.lookup_ip_addr("example.org")', "net.lookup_ip_addr"),
        ('net["lookup_ip_addr"]("example.org")', "net.lookup_ip_addr"),
        ("opa.runtime().env", "opa.runtime"),
        ('json.match_schema({}, {"$ref": "file:///etc/passwd"})', "json.match_schema"),
        ('[r | r := http.send({"method": "GET", "url": "x"})]', "http.send"),
        ('$"{http.send({})}"', "http.send"),
    ],
)
def test_every_builtin_that_leaves_the_process_is_found(spelling: str, builtin: str) -> None:
    module = f"package p\n\n_leaks := {spelling}\n"
    assert [(u.rule, u.builtin) for u in denied_uses({"p.rego": module})] == [("_leaks", builtin)]


def test_pure_builtins_and_mentions_in_text_are_allowed() -> None:
    module = (
        "package p\n\n"
        "# a comment may say http.send(x)\n"
        '_in_range := net.cidr_contains("10.0.0.0/8", "10.1.2.3")\n\n'
        '_merged := net.cidr_merge(["10.0.0.0/9", "10.128.0.0/9"])\n\n'
        '_reason := "never call http.send({}) or net.lookup_ip_addr(x)"\n'
    )
    assert denied_uses({"p.rego": module}) == []


def test_the_repository_policies_load() -> None:
    new_engine(load_bundle(POLICY_DIR)).close()


def test_a_module_that_does_not_parse_is_refused_not_passed() -> None:
    with pytest.raises(PolicyError, match=r"p\.rego:\d+: rego_parse_error"):
        denied_uses({"p.rego": "package p\n\n_x := http.send(\n"})


def test_the_denied_list_covers_what_opa_gates_behind_allow_net() -> None:
    # OPA's own capabilities gate exactly these two behind `allow_net`.
    assert {"http.send", "net.lookup_ip_addr"} <= set(DENIED_BUILTINS)


def test_only_the_sandbox_makes_opa_engines() -> None:
    """Every engine that holds policies comes from `controlplane.engine.sandbox`, which
    refuses denied builtins first: no other module may construct one."""
    makers = []
    for folder in ("controlplane", "connectors"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute | ast.Name) and "OpaEngine" in (
                    node.attr if isinstance(node, ast.Attribute) else node.id
                ):
                    makers.append(path.relative_to(ROOT).as_posix())
    assert set(makers) == {"controlplane/engine/sandbox.py"}
