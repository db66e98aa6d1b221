"""Why a decision came out as it did: re-run its stored input at its stored revision
with the engine's trace on, and read the rules that fired and their bindings."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.engine.bundle import PolicyBundle
from controlplane.engine.sandbox import new_engine, opa_module
from controlplane.errors import NotFound, PolicyError
from controlplane.evaluate import repository
from controlplane.plan import repository as actions_repo
from controlplane.policy import repository as policies_repo
from controlplane.policy.rego import read_module
from controlplane.policy.service import bundle_of


@dataclass(frozen=True)
class FiredRule:
    rule: str
    location: str
    bindings: dict[str, Any]
    metadata: dict[str, Any] | None


@dataclass
class Explanation:
    decision_id: str
    verdict_id: str
    policy_revision: str
    entrypoint: str
    stored_status: str
    stored_result: Any
    rerun_result: Any
    rerun_error: str | None
    matches: bool
    actions: list[dict[str, Any]] = field(default_factory=list)
    """Each asked-for action with the METADATA of the rule that asked for it."""
    fired: list[FiredRule] = field(default_factory=list)
    """Rules that evaluated true, in evaluation order, with their variable bindings."""


REFERENCE = re.compile(r"^TG-[0-9A-Z]{10}$", re.IGNORECASE)
"""What a refusal at a gateway quotes (`enforce.sdk.reference_of`)."""


async def explain(session: AsyncSession, decision_id: str) -> Explanation:
    """Explain a decision, given its id or the reference a refusal quoted (the newest
    decision that asked for that gateway entry), read in the caller's session."""
    if REFERENCE.match(decision_id):
        found = await actions_repo.actions_by_reference(session, decision_id.upper())
        if not found:
            raise NotFound(f"no action has the reference {decision_id.upper()}")
        decision_id = found[0].decision_id
    decision = await repository.get_decision(session, decision_id)
    if decision is None:
        raise NotFound(f"no decision {decision_id!r}")
    revision = await policies_repo.get_revision(session, decision.policy_revision)
    if revision is None:
        raise NotFound(
            f"revision {decision.policy_revision} of decision {decision_id} was never recorded, "
            "so it cannot be re-run"
        )
    bundle = bundle_of(revision)
    result, error, trace = await asyncio.to_thread(
        _rerun, bundle, decision.entrypoint, decision.input
    )
    rules = _rule_index(bundle)
    stored = decision.result
    explanation = Explanation(
        decision_id=decision.id,
        verdict_id=decision.verdict_id,
        policy_revision=decision.policy_revision,
        entrypoint=decision.entrypoint,
        stored_status=decision.status,
        stored_result=stored,
        rerun_result=result,
        rerun_error=error,
        matches=_canonical(result) == _canonical(stored)
        and (error is None) == (decision.error is None or decision.status == "ok"),
    )
    for action in (result or {}).get("actions", []) if isinstance(result, dict) else []:
        name = action.get("rule", "") if isinstance(action, dict) else ""
        explanation.actions.append({**action, "metadata": rules.get(name, (None, None))[1]})
    explanation.fired = _fired(trace or [], bundle, rules)
    return explanation


def _rerun(bundle: PolicyBundle, entrypoint: str, given: Any) -> tuple[Any, str | None, Any]:
    opa = opa_module()
    try:
        # A revision recorded before its builtins were refused is refused now, not re-run.
        engine = new_engine(bundle)
    except PolicyError as exc:
        return None, exc.message, None
    try:
        try:
            return engine.eval_document(entrypoint, given, trace=True), None, engine.last_trace
        except opa.OpaError as exc:
            return None, f"{exc.code}: {exc.message}", engine.last_trace
    finally:
        engine.close()


def _rule_index(bundle: PolicyBundle) -> dict[str, tuple[str, dict[str, Any] | None]]:
    """`pkg.rule`, `short-pkg.rule` and `file:line` -> (rule name, METADATA)."""
    index: dict[str, tuple[str, dict[str, Any] | None]] = {}
    for path, source in bundle.modules.items():
        module = read_module(path, source)
        if module.is_test_file:
            continue
        for rule in module.rules:
            full = f"{module.package}.{rule.name}"
            entry = (full, rule.metadata)
            index[full] = entry
            index[f"{module.package.removeprefix('tollgate.')}.{rule.name}"] = entry
            index[f"{path}:{rule.line}"] = entry
    return index


def _fired(
    trace: list[dict[str, Any]],
    bundle: PolicyBundle,
    rules: dict[str, tuple[str, dict[str, Any] | None]],
) -> list[FiredRule]:
    fired: list[FiredRule] = []
    seen: set[tuple[str, str]] = set()
    for event in trace:
        if event.get("op") != "Exit" or ":" not in str(event.get("location", "")):
            continue
        location = str(event["location"])
        name, metadata = rules.get(location, (location, None))
        bindings = {k: v for k, v in (event.get("locals") or {}).items() if not k.startswith("__")}
        key = (location, json.dumps(bindings, sort_keys=True, default=str))
        if key in seen:
            continue
        seen.add(key)
        fired.append(FiredRule(name, location, bindings, metadata))
    return fired


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
