package tollgate.operation_test

import data.tollgate.operation

_verdict := {
	"id": "v-1", "provider": "lab-a", "score": 0.86, "confidence": 0.85,
	"detector": {"name": "sweep", "version": "1.4.0"},
	"subject": {"account_id": "acct_op", "api_key_id": "key_7", "org_id": "org_op", "ips": ["198.51.100.9"]},
	"signals": {"prompt_template_reuse": 0.9, "capability_coverage": 0.93, "cot_request_ratio": 0.8},
	"labels": ["distillation.capability_sweep"], "observed_at": "2026-11-26T12:00:00Z",
}

_input(account, org, context, active) := {
	"verdict": _verdict,
	"history": {
		"active_actions": active, "verdicts_30d": 0, "appeals": [],
		"account": object.union({"keys_seen": 1, "networks_seen": 1, "networks": ["198.51.100.0/24"], "keys_acted_on": 0}, account),
		"org": object.union({"keys_seen": 1, "networks_seen": 1, "networks": [], "keys_acted_on": 0, "accounts_seen": 1, "accounts_acted_on": 0}, org),
	},
	"context": object.union({"exempt": false, "intel_matches": [], "verified_networks": []}, context),
	"now": "2026-11-26T12:00:01Z",
}

_kinds(actions) := sort([sprintf("%s:%s", [a.type, a.target.value]) | some a in actions])

test_rotating_account_is_revoked_and_suspended if {
	actions := operation.actions with input as _input({"keys_seen": 4}, {}, {}, [])
	_kinds(actions) == ["revoke_key:key_7", "suspend:acct_op"]
	some a in operation.suspend_account with input as _input({"keys_seen": 4}, {}, {}, [])
	a.ttl == "30d"
	a.rule == "operation.suspend_account"
	contains(a.reason, "4 keys")
}

test_a_single_key_account_is_no_operation if {
	count(operation.actions) == 0 with input as _input({}, {}, {}, [])
}

# A key-rotating operation that comes back with a new key after a revocation.
test_new_key_after_a_revocation_suspends if {
	inp := _input({"keys_seen": 2, "keys_acted_on": 1}, {"keys_seen": 6}, {}, [])
	_kinds(operation.suspend_account) == ["suspend:acct_op"] with input as inp
}

test_suspended_account_is_not_suspended_again if {
	active := [{"type": "suspend", "target": {"kind": "account", "value": "acct_op"}, "rule": "operation.suspend_account"}]
	count(operation.suspend_account) == 0 with input as _input({"keys_seen": 5}, {}, {}, active)
}

test_org_with_a_suspended_account_and_another_is_suspended if {
	inp := _input({"keys_seen": 3}, {"accounts_seen": 2, "accounts_acted_on": 1}, {}, [])
	_kinds(operation.suspend_org) == ["suspend:org_op"] with input as inp
	some a in operation.suspend_org with input as inp
	contains(a.reason, "2 accounts seen, 1 suspended")
}

test_org_with_many_keys_is_suspended if {
	_kinds(operation.suspend_org) == ["suspend:org_op"] with input as _input({"keys_seen": 3}, {"keys_seen": 12}, {}, [])
}

test_org_with_only_the_suspended_account_is_left if {
	inp := _input({"keys_seen": 3}, {"accounts_seen": 1, "accounts_acted_on": 1}, {}, [])
	count(operation.suspend_org) == 0 with input as inp
}

test_suspended_org_is_not_suspended_again if {
	active := [{"type": "suspend", "target": {"kind": "org", "value": "org_op"}, "rule": "operation.suspend_org"}]
	count(operation.suspend_org) == 0 with input as _input({"keys_seen": 3}, {"keys_seen": 12}, {}, active)
}

_rotating_networks := {"keys_seen": 3, "networks_seen": 3, "networks": ["198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/24"]}

test_ip_rotating_operation_blocks_its_networks if {
	blocks := operation.range_block with input as _input(_rotating_networks, {}, {}, [])
	_kinds(blocks) == ["block:192.0.2.0/24", "block:198.51.100.0/24", "block:203.0.113.0/24"]
	every b in blocks {
		b.target.kind == "cidr"
		b.ttl == "7d"
	}
}

test_networks_of_verified_customers_are_never_blocked if {
	inp := _input(_rotating_networks, {}, {"verified_networks": ["203.0.113.0/24"]}, [])
	_kinds(operation.range_block) == ["block:192.0.2.0/24", "block:198.51.100.0/24"] with input as inp
}

test_range_blocks_are_capped if {
	inp := _input(_rotating_networks, {}, {}, [])
	count(operation.range_block) == 2 with input as inp with data.tollgate.settings.default.operation.range_block.max_networks as 2
}

test_key_rotation_without_ip_rotation_blocks_nothing if {
	count(operation.range_block) == 0 with input as _input({"keys_seen": 5}, {}, {}, [])
}

# A slow rotation: the second key, from a second network, with the full content
# (the fixture's verdict) is revoked at once; the account follows once that key
# is revoked and another appears.
test_second_key_from_a_second_network_is_revoked_and_the_next_suspends if {
	second := _input({"keys_seen": 2, "networks_seen": 2}, {}, {}, [])
	_kinds(operation.actions) == ["revoke_key:key_7"] with input as second
	third := _input({"keys_seen": 2, "networks_seen": 2, "keys_acted_on": 1}, {}, {}, [])
	_kinds(operation.suspend_account) == ["suspend:acct_op"] with input as third
}
