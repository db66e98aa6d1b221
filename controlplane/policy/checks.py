"""`tollgate policy check`: what must hold before a revision may be activated."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from controlplane.engine.bundle import PolicyBundle, load_bundle
from controlplane.engine.embedded import PROBE_INPUT, opa_module
from controlplane.errors import PolicyError
from controlplane.policy.rego import Module, read_module

REQUIRED_METADATA = ("title", "description", "custom.owner")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}" + (f" (hint: {self.hint})" if self.hint else "")


def check_dir(root: Path, entrypoint: str) -> list[Problem]:
    try:
        bundle = load_bundle(root)
    except PolicyError as exc:
        return [Problem(str(root), 0, exc.message)]
    return check_bundle(bundle, entrypoint)


def check_bundle(bundle: PolicyBundle, entrypoint: str) -> list[Problem]:
    """Parse and compile every module, probe the entrypoint, require METADATA on every
    rule that can emit an action, and refuse network builtins."""
    modules = [read_module(path, source) for path, source in bundle.modules.items()]
    problems = [p for m in modules for p in _static(m)]
    # Refusing a network call must not make it: such a revision is compiled, not probed.
    probe = not any(m.network_calls for m in modules)
    problems.extend(_compile(bundle, entrypoint.removeprefix("data."), probe))
    return problems


def _static(module: Module) -> list[Problem]:
    problems = [Problem(module.path, line, message) for line, message in module.metadata_errors]
    for line, builtin in module.network_calls:
        problems.append(
            Problem(
                module.path,
                line,
                f"{builtin} is not allowed in Tollgate policies",
                "compute what you need before evaluation and pass it in input.context "
                "or as data; policies must not call the network",
            )
        )
    if not module.package:
        problems.append(Problem(module.path, 1, "no package declaration"))
    if module.is_test_file:
        return problems
    if module.package_metadata is None:
        problems.append(
            Problem(
                module.path,
                module.package_line,
                "package has no METADATA",
                _metadata_hint(module.package),
            )
        )
    for rule in module.rules:
        if rule.is_helper or rule.is_test:
            continue
        missing = _missing(rule.metadata)
        if missing:
            problems.append(
                Problem(
                    module.path,
                    rule.line,
                    f"rule {rule.name} lacks METADATA {', '.join(missing)}",
                    "every rule that can emit an action needs title, description and "
                    "custom.owner; name helper rules with a leading _",
                )
            )
    return problems


def _missing(metadata: dict[str, object] | None) -> list[str]:
    if metadata is None:
        return list(REQUIRED_METADATA)
    missing = []
    for key in REQUIRED_METADATA:
        node: object = metadata
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not node:
            missing.append(key)
    return missing


def _metadata_hint(package: str) -> str:
    return (
        f"put '# METADATA' with title, description and custom.owner right above 'package {package}'"
    )


def _compile(bundle: PolicyBundle, entrypoint: str, probe: bool = True) -> list[Problem]:
    opa = opa_module()
    engine = opa.OpaEngine()
    problems: list[Problem] = []
    try:
        for path, source in bundle.modules.items():
            try:
                engine.add_policy(path, source)
            except opa.OpaError as exc:
                problems.extend(_engine_problems(path, exc.message, "fix the syntax"))
        for path, document in bundle.data:
            try:
                engine.add_data(document, path)
            except opa.OpaError as exc:
                problems.append(Problem(f"data.{path}" if path else "data", 0, exc.message))
        if problems:
            return problems
        try:
            engine.eval_query("true")  # compiles every module: type errors surface here
            if probe:
                engine.eval_document(entrypoint, PROBE_INPUT)
        except opa.OpaUndefinedError:
            problems.append(
                Problem(
                    str(bundle.root),
                    0,
                    f"entrypoint data.{entrypoint} is undefined",
                    "check TOLLGATE_ENTRYPOINT and the package name of the decision policy",
                )
            )
        except opa.OpaError as exc:
            problems.extend(
                _engine_problems(
                    "",
                    exc.message,
                    "the policy does not compile or fails on a representative input",
                )
            )
    finally:
        engine.close()
    return problems


_LOCATED = re.compile(r"([^\s:]+\.rego):(\d+): (rego_\w+: [^\n]*(?:\n\t[^\n]*)*)")


def _engine_problems(path: str, message: str, hint: str) -> list[Problem]:
    """One problem per `file:line: rego_*_error: ...` in OPA's message, else the whole."""
    found = [
        Problem(file, int(line), " ".join(text.split()), hint)
        for file, line, text in _LOCATED.findall(message)
    ]
    return found or [Problem(path or "policies", 0, " ".join(message.split()), hint)]
