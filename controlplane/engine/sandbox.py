"""Policies never leave the process: the only place Tollgate makes an OPA engine.

Some OPA builtins reach outside the evaluator: `http.send` makes HTTP requests,
`net.lookup_ip_addr` asks DNS, `json.match_schema` and `json.verify_schema` follow a
schema's `$ref` to any `http://` or `file://` URL, and `opa.runtime` hands the policy
the environment of the OPA process (on an OPA server: its variables, credentials
among them). A policy that could use them could post every verdict to a host of its
author's choosing, or copy secrets into a decision's reason.

The binding exposes no OPA capabilities, and a function registered under a builtin's
name does not replace the builtin (OPA looks builtins up first), so the builtins cannot
be taken away from the evaluator. Instead every module is parsed by OPA's own parser
(`rego.parse_module`, the first stage of its compiler), and a bundle whose syntax tree
refers to one of them, however it is spelled (`http.send`, `http["send"]`, a `with`
replacement, inside a comprehension or a template string), is refused before any
engine holds it. The tree is complete: Rego has no dynamic calls, and an import can
only name `data`, `input`, `future` or `rego`, never a builtin, so a call through an
alias or a helper package shows as the builtin's name in the module that makes it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from controlplane.engine.bundle import PolicyBundle
from controlplane.errors import EngineUnavailable, PolicyError

INSTALL_STEP = (
    "pip install --no-deps --ignore-requires-python --require-hashes -r requirements/opa-engine.txt"
)

DENIED_BUILTINS: dict[str, str] = {
    "http.send": "makes HTTP requests",
    "net.lookup_ip_addr": "asks DNS",
    "json.match_schema": "fetches a schema's $ref from any URL or file",
    "json.verify_schema": "fetches a schema's $ref from any URL or file",
    "opa.runtime": "reads the OPA process's environment",
}
"""Builtins that leave the evaluator, and what each would do."""

HINT = (
    "compute what you need before evaluation and pass it in input.context or as data; "
    "policies must not reach the network, files or the process environment"
)


def opa_module() -> Any:
    """The `opa_bindings` module, or `EngineUnavailable` naming the install step."""
    try:
        import opa_bindings
    except ImportError as exc:
        raise EngineUnavailable(
            f"the embedded OPA engine (opa-golib-python-bindings) is not installed ({exc}). "
            f"Install it in its own step: `{INSTALL_STEP}` (`make demo` and `make test` do this)."
        ) from None
    return opa_bindings


_PARSE = "module := rego.parse_module(input.path, input.source)"


@dataclass(frozen=True)
class DeniedUse:
    """A module whose rule refers to a denied builtin."""

    path: str
    rule: str
    builtin: str

    def __str__(self) -> str:
        return f"{self.path}: rule {self.rule} uses {self.builtin}, which is not allowed"


class _Parser:
    """One engine without policies, kept for parsing: it evaluates nothing but `_PARSE`."""

    def __init__(self) -> None:
        self._engine: Any = None
        self._lock = threading.Lock()

    def parse(self, path: str, source: str) -> dict[str, Any]:
        opa = opa_module()
        with self._lock:
            if self._engine is None:
                self._engine = opa.OpaEngine()
            try:
                rows = self._engine.eval_query(_PARSE, {"path": path, "source": source})
            except opa.OpaError as exc:
                raise PolicyError(f"{path}: {_parse_message(exc.message)}") from None
        module: dict[str, Any] = rows[0]["module"]
        return module


_parser = _Parser()


def denied_uses(modules: Mapping[str, str]) -> list[DeniedUse]:
    """Every (module, rule, builtin) where a rule refers to a denied builtin, read from
    OPA's syntax tree of each module. `PolicyError` for a module that does not parse."""
    return [use for path, source in modules.items() for use in _module_uses(path, source)]


@lru_cache(maxsize=512)
def _module_uses(path: str, source: str) -> tuple[DeniedUse, ...]:
    """Cached: every engine of a revision (one per worker) is checked, parsed once."""
    tree = _parser.parse(path, source)
    found: list[DeniedUse] = []
    for rule in tree.get("rules") or []:
        name = _rule_name(rule)
        for builtin in sorted(set(_builtins_in(rule))):
            found.append(DeniedUse(path, name, builtin))
    return tuple(found)


def refuse_denied(modules: Mapping[str, str]) -> None:
    """`PolicyError` naming every denied builtin the modules use (or the module that
    does not parse); nothing is evaluated."""
    uses = denied_uses(modules)
    if uses:
        raise PolicyError(
            f"policies may not use {', '.join(sorted({u.builtin for u in uses}))}: "
            f"{'; '.join(str(u) for u in uses)} ({HINT})",
            details=[{"field": u.path, "message": str(u)} for u in uses],
        )


def new_engine(bundle: PolicyBundle) -> Any:
    """A fresh OPA engine holding the bundle's modules and data, refused (`PolicyError`)
    when they use a denied builtin; `PolicyError` also names the module or data document
    that does not load. Adding compiles nothing and runs nothing: the refusal comes
    before anything can be evaluated."""
    opa = opa_module()
    engine = opa.OpaEngine()
    try:
        for path, source in bundle.modules.items():
            try:
                engine.add_policy(path, source)
            except opa.OpaError as exc:
                raise PolicyError(f"{bundle.root / path}: {exc.message}") from None
        for path, document in bundle.data:
            try:
                engine.add_data(document, path)
            except opa.OpaError as exc:
                where = f"data.{path}" if path else "data"
                raise PolicyError(f"data file mounted at {where}: {exc.message}") from None
        refuse_denied(bundle.modules)
    except BaseException:
        engine.close()
        raise
    return engine


@dataclass(frozen=True)
class LoadError:
    """A module or data document that does not load, or a set that does not compile."""

    stage: str
    """`module`, `data` or `compile`."""
    where: str
    """The module's path, `data.<path>` of a data document, `` for the whole set."""
    message: str


def compile_only(bundle: PolicyBundle) -> list[LoadError]:
    """Load and compile the bundle on a throwaway engine that evaluates no rule, so a
    check can report every error of a revision it must not evaluate (one that uses a
    denied builtin) as well as of one it may."""
    opa = opa_module()
    engine = opa.OpaEngine()
    errors: list[LoadError] = []
    try:
        for path, source in bundle.modules.items():
            try:
                engine.add_policy(path, source)
            except opa.OpaError as exc:
                errors.append(LoadError("module", path, exc.message))
        for path, document in bundle.data:
            try:
                engine.add_data(document, path)
            except opa.OpaError as exc:
                errors.append(LoadError("data", f"data.{path}" if path else "data", exc.message))
        if not errors:
            try:
                engine.eval_query("true")  # compiles every module; `true` reads no rule
            except opa.OpaError as exc:
                errors.append(LoadError("compile", "", exc.message))
    finally:
        engine.close()
    return errors


def _rule_name(rule: dict[str, Any]) -> str:
    head = rule.get("head") or {}
    ref = head.get("ref")
    if isinstance(ref, list) and ref:
        return ".".join(str(term.get("value")) for term in ref if isinstance(term, dict))
    return str(head.get("name") or "?")


def _builtins_in(node: Any) -> list[str]:
    """Denied builtins named by any reference in the tree: a call, a `with` target or
    value, a bare reference. Walked generically, so new node kinds are covered too."""
    found: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if item.get("type") == "ref" and isinstance(item.get("value"), list):
                name = _ref_name(item["value"])
                if name in DENIED_BUILTINS:
                    found.append(name)
            stack.extend(item.values())
    return found


def _ref_name(terms: list[Any]) -> str:
    """`http.send` for the terms of `http.send`, `http["send"]` or `http.send.x`: the
    longest run of the head variable and constant strings that names a denied builtin."""
    parts: list[str] = []
    for index, term in enumerate(terms):
        if not isinstance(term, dict):
            break
        kind, value = term.get("type"), term.get("value")
        if (kind == "var" if index == 0 else kind == "string") and isinstance(value, str):
            parts.append(value)
        else:
            break
    names = [".".join(parts[:end]) for end in range(len(parts), 0, -1)]
    return next((name for name in names if name in DENIED_BUILTINS), "")


def _parse_message(message: str) -> str:
    """OPA's parse error without the wrapping of the builtin that reported it."""
    marker = "rego.parse_module: "
    return message.rsplit(marker, 1)[-1] if marker in message else message
