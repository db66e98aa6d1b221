"""`parse_decision`: the entrypoint's output is checked before any action is planned, and
each malformed part is named."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from controlplane.domain.action import MalformedDecision, parse_decision
from controlplane.domain.vocabulary import ActionType, SubjectKind
from controlplane.enforce.targets import PrefixFloor


def action(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "rate_limit",
        "target": {"kind": "api_key", "value": "key_3"},
        "params": {"requests_per_minute": 60, "tokens_per_minute": 20000},
        "ttl": "24h",
        "rule": "graduated.first_offense",
        "reason": "capability sweep, score 0.93",
    }
    base.update(changes)
    return base


def test_design_example_parses() -> None:
    result = parse_decision(
        {
            "actions": [
                action(),
                action(
                    type="block",
                    target={"kind": "cidr", "value": "203.0.113.0/24"},
                    params={},
                    ttl="7d",
                    rule="intel.known_range",
                    reason="range shared by lab-b",
                ),
            ],
            "shadow": False,
        }
    )

    assert result.shadow is False
    limit, block = result.actions
    assert limit.type is ActionType.RATE_LIMIT
    assert (limit.target_kind, limit.target_value) == (SubjectKind.API_KEY, "key_3")
    assert limit.params == {"requests_per_minute": 60, "tokens_per_minute": 20000}
    assert limit.ttl == timedelta(hours=24)
    assert (limit.rule, limit.reason) == ("graduated.first_offense", "capability sweep, score 0.93")
    assert block.type is ActionType.BLOCK
    assert (block.target_kind, block.target_value) == (SubjectKind.CIDR, "203.0.113.0/24")
    assert block.ttl == timedelta(days=7)


def test_defaults_and_normalisation() -> None:
    result = parse_decision(
        {
            "actions": [
                {"type": "flag_review", "target": {"kind": "account", "value": "a"}, "rule": "r"},
                action(type="block", target={"kind": "ip", "value": "2001:DB8:0::1"}, params=None),
                action(type="block", target={"kind": "cidr", "value": "203.0.113.7/24"}, ttl=None),
                action(params={"tokens_per_minute": 0}),
            ]
        }
    )

    review, ip, cidr, tokens = result.actions
    assert result.shadow is False
    assert (review.params, review.ttl, review.reason) == ({}, None, "")
    assert ip.target_value == "2001:db8::1"
    assert ip.params == {}
    assert cidr.target_value == "203.0.113.0/24"
    assert cidr.ttl is None
    assert tokens.params == {"tokens_per_minute": 0}


def test_empty_decision_has_no_actions() -> None:
    assert parse_decision({}).actions == ()
    assert parse_decision({"actions": [], "shadow": True}).shadow is True


def test_every_action_type_on_its_allowed_targets() -> None:
    allowed = {
        "rate_limit": ["api_key", "account", "org"],
        "revoke_key": ["api_key"],
        "block": ["ip", "cidr"],
        "flag_review": ["account", "api_key", "ip", "cidr", "org"],
    }
    values = {"ip": "192.0.2.1", "cidr": "192.0.2.0/24"}
    for kind_type, kinds in allowed.items():
        for kind in kinds:
            item = action(type=kind_type, target={"kind": kind, "value": values.get(kind, "x")})
            [spec] = parse_decision({"actions": [item]}).actions
            assert (spec.type.value, spec.target_kind.value) == (kind_type, kind)


def malformed(mutate: Any) -> dict[str, Any]:
    decision: dict[str, Any] = {"actions": [action(), action()], "shadow": False}
    mutate(decision)
    return decision


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def mutate(decision: dict[str, Any]) -> None:
        target = decision
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _drop(path: tuple[Any, ...]) -> Any:
    def mutate(decision: dict[str, Any]) -> None:
        target = decision
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


A0 = ("actions", 0)
A1 = ("actions", 1)

MALFORMED = {
    "shadow not bool": (_set(("shadow",), "yes"), "decision.shadow must be true or false"),
    "actions not a list": (_set(("actions",), {"a": 1}), "decision.actions must be an array"),
    "action not an object": (_set(A0, "rate_limit"), "decision.actions[0] must be an object"),
    "unknown type": (_set((*A0, "type"), "ban"), "decision.actions[0].type must be one of"),
    "missing type": (_drop((*A0, "type")), "decision.actions[0].type must be one of"),
    "target not an object": (
        _set((*A0, "target"), "key_3"),
        "decision.actions[0].target must be an object",
    ),
    "unknown kind": (
        _set((*A0, "target", "kind"), "user"),
        "decision.actions[0].target.kind must be one of",
    ),
    "null value": (
        _set((*A0, "target", "value"), None),
        "decision.actions[0].target.value must be a non-empty string",
    ),
    "empty value": (
        _set((*A0, "target", "value"), ""),
        "decision.actions[0].target.value must be a non-empty string",
    ),
    "number value": (
        _set((*A1, "target", "value"), 7),
        "decision.actions[1].target.value must be a non-empty string",
    ),
    "revoke an account": (
        _set(A0, action(type="revoke_key", target={"kind": "account", "value": "a"}, params={})),
        "decision.actions[0]: revoke_key cannot target a account",
    ),
    "block a key": (
        _set(A1, action(type="block", params={})),
        "decision.actions[1]: block cannot target a api_key",
    ),
    "bad ip": (
        _set(A0, action(type="block", target={"kind": "ip", "value": "203.0.113.300"})),
        "decision.actions[0].target.value '203.0.113.300' is not a valid ip",
    ),
    "bad cidr": (
        _set(A0, action(type="block", target={"kind": "cidr", "value": "203.0.113.0/33"})),
        "decision.actions[0].target.value '203.0.113.0/33' is not a valid cidr",
    ),
    "params not an object": (
        _set((*A0, "params"), [60]),
        "decision.actions[0].params must be an object",
    ),
    "rate limit without limits": (
        _set((*A0, "params"), {"burst": 5}),
        "decision.actions[0].params needs requests_per_minute or tokens_per_minute",
    ),
    "negative limit": (
        _set((*A0, "params", "requests_per_minute"), -1),
        "decision.actions[0].params.requests_per_minute must be a non-negative integer",
    ),
    "fractional limit": (
        _set((*A1, "params", "tokens_per_minute"), 2.5),
        "decision.actions[1].params.tokens_per_minute must be a non-negative integer",
    ),
    "boolean limit": (
        _set((*A0, "params", "requests_per_minute"), True),
        "decision.actions[0].params.requests_per_minute must be a non-negative integer",
    ),
    "ttl not a string": (
        _set((*A0, "ttl"), 86400),
        "decision.actions[0].ttl must be a duration string",
    ),
    "ttl unparsable": (
        _set((*A0, "ttl"), "a day"),
        "decision.actions[0].ttl: 'a day' is not a duration",
    ),
    "ttl zero": (_set((*A1, "ttl"), "0s"), "decision.actions[1].ttl must be positive"),
    "missing rule": (_drop((*A0, "rule")), "decision.actions[0].rule must name the Rego rule"),
    "empty rule": (_set((*A1, "rule"), ""), "decision.actions[1].rule must name the Rego rule"),
    "reason not a string": (
        _set((*A0, "reason"), ["why"]),
        "decision.actions[0].reason must be a string",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_decision_names_the_field(case: str) -> None:
    mutate, message = MALFORMED[case]

    with pytest.raises(MalformedDecision) as raised:
        parse_decision(malformed(mutate))

    assert str(raised.value).startswith(message), str(raised.value)


@pytest.mark.parametrize("result", ["decide", 42, None, [{"actions": []}], True])
def test_decision_that_is_not_an_object(result: Any) -> None:
    with pytest.raises(MalformedDecision, match="decision must be an object, got"):
        parse_decision(result)


def _block(value: str, kind: str = "cidr", rule: str = "intel.known_range") -> dict[str, Any]:
    return action(type="block", target={"kind": kind, "value": value}, params={}, rule=rule)


@pytest.mark.parametrize("value", ["0.0.0.0/0", "::/0", "192.0.2.77/0", "10.0.0.0/15", "2001::/16"])
def test_a_block_wider_than_the_floor_is_an_error_naming_the_rule(value: str) -> None:
    with pytest.raises(MalformedDecision) as raised:
        parse_decision({"actions": [action(), _block(value)]})

    message = str(raised.value)
    assert message.startswith("decision.actions[1].target.value from rule intel.known_range:")
    assert "covers more than a block may" in message


def test_the_floor_is_the_providers() -> None:
    wide = {"actions": [_block("10.0.0.0/8")]}

    [spec] = parse_decision(wide, PrefixFloor(ipv4=8, ipv6=32)).actions
    assert spec.target_value == "10.0.0.0/8"
    with pytest.raises(MalformedDecision, match="nothing wider than /16 for IPv4"):
        parse_decision(wide)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("cidr", "fe80::%x;disable frontend model_api;/64"),
        ("ip", "fe80::1%eth0"),
        ("ip", "192.0.2.7\n"),
        ("api_key", "key_3;disable frontend api"),
        ("account", "acct 9"),
        ("org", "org_7\nadd acl x y"),
    ],
)
def test_a_target_a_gateway_would_read_as_syntax_is_an_error_naming_the_rule(
    kind: str, value: str
) -> None:
    item = action(type="flag_review", target={"kind": kind, "value": value}, rule="evil.rule")

    with pytest.raises(MalformedDecision) as raised:
        parse_decision({"actions": [item]})

    assert str(raised.value).startswith("decision.actions[0].target.value")
    assert "(rule evil.rule)" in str(raised.value)
