"""What a policy's decision asks for, checked before it becomes an `Action` row."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from controlplane.domain.vocabulary import ACTION_TARGETS, ActionType, SubjectKind
from controlplane.enforce.targets import (
    DEFAULT_FLOOR,
    PrefixFloor,
    TargetError,
    TooWide,
    canonical_target,
)

_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class MalformedDecision(ValueError):
    """The policy's output breaks the decision contract (DESIGN.md, 'The policy contract')."""


def parse_duration(text: str) -> timedelta:
    """Parse durations like `24h`, `7d`, `1h30m`, `90s`."""
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"{text!r} is not a duration like '30m', '24h', '7d' or '1h30m'")
    return timedelta(seconds=total)


@dataclass(frozen=True, slots=True)
class ActionSpec:
    type: ActionType
    target_kind: SubjectKind
    target_value: str
    params: dict[str, Any]
    ttl: timedelta | None
    rule: str
    reason: str
    withheld: tuple[ActionSpec, ...] = ()
    """For a `flag_review`: the actions a policy withheld for a reviewer to confirm."""

    def document(self) -> dict[str, Any]:
        """The action as a policy spells it (canonical target; ttl as seconds)."""
        return {
            "type": self.type.value,
            "target": {"kind": self.target_kind.value, "value": self.target_value},
            "params": self.params,
            "ttl_seconds": self.ttl.total_seconds() if self.ttl else None,
            "rule": self.rule,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class DecisionResult:
    actions: tuple[ActionSpec, ...]
    shadow: bool


def parse_decision(result: Any, floor: PrefixFloor = DEFAULT_FLOOR) -> DecisionResult:
    """Check the entrypoint's output; raise `MalformedDecision` naming the bad field (and
    the rule, for a target). Targets come back canonical; a CIDR wider than `floor` (the
    provider's `min_prefix`) breaks the contract: one rule must not block everyone."""
    if not isinstance(result, dict):
        raise MalformedDecision(f"decision must be an object, got {type(result).__name__}")
    shadow = result.get("shadow", False)
    if not isinstance(shadow, bool):
        raise MalformedDecision("decision.shadow must be true or false")
    raw_actions = result.get("actions", [])
    if not isinstance(raw_actions, list):
        raise MalformedDecision("decision.actions must be an array (or a set)")
    actions = tuple(_parse_action(i, a, floor) for i, a in enumerate(raw_actions))
    return DecisionResult(actions=actions, shadow=shadow)


def _parse_action(
    i: int, raw: Any, floor: PrefixFloor, within: str = "decision.actions"
) -> ActionSpec:
    where = f"{within}[{i}]"
    if not isinstance(raw, dict):
        raise MalformedDecision(f"{where} must be an object")
    try:
        kind_type = ActionType(str(raw.get("type")))
    except ValueError:
        allowed = ", ".join(t.value for t in ActionType)
        raise MalformedDecision(f"{where}.type must be one of {allowed}") from None
    target = raw.get("target")
    if not isinstance(target, dict):
        raise MalformedDecision(f"{where}.target must be an object {{kind, value}}")
    try:
        kind = SubjectKind(str(target.get("kind")))
    except ValueError:
        allowed = ", ".join(k.value for k in SubjectKind)
        raise MalformedDecision(f"{where}.target.kind must be one of {allowed}") from None
    if kind not in ACTION_TARGETS[kind_type]:
        raise MalformedDecision(f"{where}: {kind_type.value} cannot target a {kind.value}")
    value = target.get("value")
    if not isinstance(value, str) or not value:
        raise MalformedDecision(f"{where}.target.value must be a non-empty string")
    value = _normalise_target(where, kind, value, raw.get("rule"), floor)
    params = raw.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise MalformedDecision(f"{where}.params must be an object")
    if kind_type is ActionType.RATE_LIMIT:
        _check_rate_limit(where, params)
    withheld: tuple[ActionSpec, ...] = ()
    if kind_type is ActionType.FLAG_REVIEW and params.get("withheld") is not None:
        withheld = _parse_withheld(where, params["withheld"], floor)
        params = {**params, "withheld": [w.document() for w in withheld]}
    ttl_raw = raw.get("ttl")
    ttl = None
    if ttl_raw is not None:
        if not isinstance(ttl_raw, str):
            raise MalformedDecision(f"{where}.ttl must be a duration string like '24h' or null")
        try:
            ttl = parse_duration(ttl_raw)
        except ValueError as exc:
            raise MalformedDecision(f"{where}.ttl: {exc}") from None
        if ttl <= timedelta(0):
            raise MalformedDecision(f"{where}.ttl must be positive")
    rule = raw.get("rule")
    if not isinstance(rule, str) or not rule:
        raise MalformedDecision(f"{where}.rule must name the Rego rule that asked for it")
    reason = raw.get("reason", "")
    if not isinstance(reason, str):
        raise MalformedDecision(f"{where}.reason must be a string")
    return ActionSpec(kind_type, kind, value, params, ttl, rule, reason, withheld)


def _parse_withheld(where: str, raw: Any, floor: PrefixFloor) -> tuple[ActionSpec, ...]:
    """A review's withheld actions: each a whole action, checked as if it were planned
    (a reviewer's confirmation plans exactly these)."""
    within = f"{where}.params.withheld"
    if not isinstance(raw, list):
        raise MalformedDecision(f"{within} must be an array of actions")
    specs = tuple(_parse_action(j, item, floor, within) for j, item in enumerate(raw))
    for j, spec in enumerate(specs):
        if spec.type is ActionType.FLAG_REVIEW:
            raise MalformedDecision(f"{within}[{j}]: a review cannot withhold another review")
    return specs


def _normalise_target(
    where: str, kind: SubjectKind, value: str, rule: Any, floor: PrefixFloor
) -> str:
    named = f"rule {rule}" if isinstance(rule, str) and rule else "an unnamed rule"
    try:
        return canonical_target(kind.value, value, floor)
    except TooWide as exc:
        raise MalformedDecision(f"{where}.target.value from {named}: {exc}") from None
    except TargetError:
        raise MalformedDecision(
            f"{where}.target.value {value!r} is not a valid {kind} ({named})"
        ) from None


def _check_rate_limit(where: str, params: dict[str, Any]) -> None:
    limits = {k: params.get(k) for k in ("requests_per_minute", "tokens_per_minute")}
    if all(v is None for v in limits.values()):
        raise MalformedDecision(
            f"{where}.params needs requests_per_minute or tokens_per_minute for a rate_limit"
        )
    for key, v in limits.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise MalformedDecision(f"{where}.params.{key} must be a non-negative integer")
