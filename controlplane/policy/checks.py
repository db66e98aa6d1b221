"""`tollgate policy check`: what must hold before a revision may be activated."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from controlplane.engine.bundle import PolicyBundle, load_bundle
from controlplane.engine.embedded import PROBE_INPUT
from controlplane.engine.sandbox import (
    HINT,
    DeniedUse,
    compile_only,
    denied_uses,
    new_engine,
    opa_module,
)
from controlplane.errors import PolicyError
from controlplane.policy.bundles import check_vendored
from controlplane.policy.rego import Module, read_module

REQUIRED_METADATA = ("title", "description", "custom.owner")
VENDOR_HINT = (
    "import it again with `tollgate intel bundle import`, from its lab, rather than "
    "editing it; its lab's key must be in vendor/keys/"
)
COMPILE_HINT = "the policy does not compile or fails on a representative input"


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
    """`check_bundle` on the directory, and every vendored OPA bundle's signature
    verified against the keys in `vendor/keys/`."""
    vendored = [Problem(where, 0, message, VENDOR_HINT) for where, message in check_vendored(root)]
    try:
        bundle = load_bundle(root)
    except PolicyError as exc:
        return [*vendored, Problem(str(root), 0, exc.message)]
    return [*vendored, *check_bundle(bundle, entrypoint)]


def check_bundle(bundle: PolicyBundle, entrypoint: str) -> list[Problem]:
    """Parse and compile every module, probe the entrypoint, require METADATA on every
    rule that can emit an action, and refuse builtins that leave the process."""
    modules = {path: read_module(path, source) for path, source in bundle.modules.items()}
    problems = [p for m in modules.values() for p in _static(m)]
    denied, unchecked = _denied(bundle)
    problems.extend(_denied_problem(use, modules[use.path]) for use in denied)
    compiled = _compile(bundle)
    problems.extend(compiled)
    if not compiled:
        # A module OPA's parser refused cannot be cleared of denied builtins.
        problems.extend(unchecked)
    # Refusing a network call must not make it: such a revision is compiled, not probed.
    if not (denied or unchecked or compiled):
        problems.extend(_probe(bundle, entrypoint.removeprefix("data.")))
    return problems


def _denied(bundle: PolicyBundle) -> tuple[list[DeniedUse], list[Problem]]:
    """Denied builtins in OPA's syntax tree of each module, and the modules that could
    not be parsed to look."""
    found: list[DeniedUse] = []
    unchecked: list[Problem] = []
    for path, source in bundle.modules.items():
        try:
            found.extend(denied_uses({path: source}))
        except PolicyError as exc:
            unchecked.extend(_engine_problems(path, exc.message, "fix the syntax"))
    return found, unchecked


def _denied_problem(use: DeniedUse, module: Module) -> Problem:
    line = next((r.line for r in module.rules if r.name == use.rule.split(".")[0]), 0)
    return Problem(
        use.path,
        line,
        f"{use.builtin} is not allowed in Tollgate policies (rule {use.rule})",
        HINT,
    )


def _static(module: Module) -> list[Problem]:
    problems = [Problem(module.path, line, message) for line, message in module.metadata_errors]
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


def _compile(bundle: PolicyBundle) -> list[Problem]:
    problems: list[Problem] = []
    for error in compile_only(bundle):
        if error.stage == "module":
            problems.extend(_engine_problems(error.where, error.message, "fix the syntax"))
        elif error.stage == "data":
            problems.append(Problem(error.where, 0, error.message))
        else:
            problems.extend(_engine_problems("", error.message, COMPILE_HINT))
    return problems


def _probe(bundle: PolicyBundle, entrypoint: str) -> list[Problem]:
    opa = opa_module()
    try:
        engine = new_engine(bundle)
    except PolicyError as exc:
        return [Problem(str(bundle.root), 0, exc.message)]
    try:
        engine.eval_document(entrypoint, PROBE_INPUT)
    except opa.OpaUndefinedError:
        return [
            Problem(
                str(bundle.root),
                0,
                f"entrypoint data.{entrypoint} is undefined",
                "check TOLLGATE_ENTRYPOINT and the package name of the decision policy",
            )
        ]
    except opa.OpaError as exc:
        return _engine_problems("", exc.message, COMPILE_HINT)
    finally:
        engine.close()
    return []


_LOCATED = re.compile(r"([^\s:]+\.rego):(\d+): (rego_\w+: [^\n]*(?:\n\t[^\n]*)*)")


def _engine_problems(path: str, message: str, hint: str) -> list[Problem]:
    """One problem per `file:line: rego_*_error: ...` in OPA's message, else the whole."""
    found = [
        Problem(file, int(line), " ".join(text.split()), hint)
        for file, line, text in _LOCATED.findall(message)
    ]
    return found or [Problem(path or "policies", 0, " ".join(message.split()), hint)]
