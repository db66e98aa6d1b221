package tollgate.decision_test

import data.tollgate.decision

# The example from DESIGN.md's policy contract.
_design_input := {
	"verdict": {
		"id": "v-1", "provider": "lab-a", "score": 0.93, "confidence": 0.8,
		"detector": {"name": "sweep", "version": "1.4.0"},
		"subject": {"account_id": "acct_9", "api_key_id": "key_3", "org_id": "org_7", "ips": ["203.0.113.7"]},
		"signals": {"requests_24h": 1200000, "prompt_template_reuse": 0.91},
		"labels": ["distillation.capability_sweep"], "observed_at": "2026-11-26T12:00:00Z",
	},
	"history": {"active_actions": [], "verdicts_30d": 3, "appeals": []},
	"context": {"exempt": false, "intel_matches": [{"cidr": "203.0.113.0/24", "source": "lab-b", "confidence": 0.9}]},
	"now": "2026-11-26T12:00:01Z",
}

_types(actions) := sort([sprintf("%s:%s", [a.type, a.target.value]) | some a in actions])

test_document_is_actions_and_shadow_only if {
	doc := decision with input as _design_input
	object.keys(doc) == {"actions", "shadow"}
	doc.shadow == false
}

# A severe sweep on one key: shared intel blocks the range; without an
# operation's structure the key is throttled, not revoked, and a human looks.
test_design_example_throttles_flags_and_blocks if {
	_types(decision.actions) == [
		"block:203.0.113.0/24",
		"flag_review:acct_9",
		"rate_limit:key_3",
	] with input as _design_input
}

# The same verdict from an account that rotates keys is an operation.
test_rotating_account_is_suspended if {
	inp := object.union(_design_input, {"history": {"account": {"keys_seen": 7, "networks_seen": 1, "networks": ["203.0.113.0/24"], "keys_acted_on": 0}}})
	types := _types(decision.actions) with input as inp
	"suspend:acct_9" in types
	"revoke_key:key_3" in types
	"block:203.0.113.0/24" in types
}

# A verified customer gets one review carrying what would have been done.
test_verified_customer_gets_a_review_only if {
	inp := object.union(_design_input, {
		"history": {"account": {"keys_seen": 7, "networks_seen": 1, "networks": [], "keys_acted_on": 0}},
		"context": {"customer": {"account_id": "acct_9", "tier": "enterprise", "verified": true, "owner": "am@lab"}},
	})
	actions := decision.actions with input as inp
	_types(actions) == ["flag_review:acct_9"]
	some a in actions
	a.rule == "review_first.verified_customer"
	withheld := {sprintf("%s:%s", [w.type, w.target.value]) | some w in a.params.withheld}
	withheld == {"block:203.0.113.0/24", "revoke_key:key_3", "suspend:acct_9"}
}

test_unverified_customer_is_treated_as_anyone if {
	inp := object.union(_design_input, {"context": {"customer": {"account_id": "acct_9", "tier": "research", "verified": false}}})
	_types(decision.actions) == [
		"block:203.0.113.0/24",
		"flag_review:acct_9",
		"rate_limit:key_3",
	] with input as inp
}

test_every_action_has_the_contract_fields if {
	actions := decision.actions with input as _design_input
	every a in actions {
		object.keys(a) == {"type", "target", "params", "ttl", "rule", "reason"}
		is_string(a.target.value)
	}
}

test_exempt_subject_only_gets_flag_review if {
	inp := object.union(_design_input, {"context": {"exempt": true, "exemption": {"owner": "t&s", "reason": "contract"}}})
	actions := decision.actions with input as inp
	_types(actions) == ["flag_review:acct_9"]
}

test_actions_defined_and_empty_for_legit_traffic if {
	inp := object.union(_design_input, {
		"verdict": {"score": 0.2, "labels": []},
		"history": {"verdicts_30d": 0},
		"context": {"intel_matches": []},
	})
	decision.actions == set() with input as inp
}

test_actions_defined_for_empty_input if {
	decision.actions == set() with input as {}
}

test_malformed_actions_never_leave_the_decision if {
	bad := {{"type": "revoke_key", "target": {"kind": "api_key", "value": null}, "rule": "x"}}
	good := {"type": "flag_review", "target": {"kind": "account", "value": "acct_9"}, "rule": "x"}
	actions := decision.actions with data.tollgate.graduated.actions as bad | {good}
		with data.tollgate.intel.actions as set()
		with input as _design_input
	actions == {good}
}
