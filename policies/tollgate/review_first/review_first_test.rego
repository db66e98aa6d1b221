package tollgate.review_first_test

import data.tollgate.review_first

_customer := {"account_id": "acct_v", "org_id": "org_v", "tier": "enterprise", "verified": true, "keys": 2, "owner": "am@lab-a"}

_input(customer, active) := {
	"verdict": {
		"id": "v-1", "provider": "lab-a", "score": 0.93, "confidence": 0.85,
		"detector": {"name": "sweep", "version": "1.4.0"},
		"subject": {"account_id": "acct_v", "api_key_id": "key_v", "org_id": "org_v", "ips": ["198.51.100.9"]},
		"signals": {"prompt_template_reuse": 0.9, "capability_coverage": 0.93},
		"labels": ["distillation.capability_sweep"], "observed_at": "2026-11-26T12:00:00Z",
	},
	"history": {
		"active_actions": active, "verdicts_30d": 0, "appeals": [],
		"account": {"keys_seen": 5, "networks_seen": 1, "networks": ["198.51.100.0/24"], "keys_acted_on": 0},
	},
	"context": {"exempt": false, "intel_matches": [], "verified_networks": [], "customer": customer},
	"now": "2026-11-26T12:00:01Z",
}

test_verified_customer_gets_one_review_with_the_withheld_actions if {
	actions := review_first.actions with input as _input(_customer, [])
	count(actions) == 1
	some a in actions
	a.type == "flag_review"
	a.target == {"kind": "account", "value": "acct_v"}
	a.rule == "review_first.verified_customer"
	a.ttl == null
	contains(a.reason, "verified enterprise customer (owner am@lab-a)")
	contains(a.reason, "suspend account acct_v (operation.suspend_account)")
	types := {w.type | some w in a.params.withheld}
	types == {"revoke_key", "suspend"}
}

test_a_customer_without_an_owner_says_so_in_words if {
	every customer in [object.union(_customer, {"owner": null}), object.remove(_customer, ["owner"])] {
		reasons := [a.reason | some a in review_first.actions] with input as _input(customer, [])
		count(reasons) == 1
		contains(reasons[0], "verified enterprise customer (no owner recorded)")
		not contains(reasons[0], "null")
	}
}

_open(withheld) := [{
	"type": "flag_review", "target": {"kind": "account", "value": "acct_v"},
	"rule": "review_first.verified_customer", "params": {"withheld": withheld},
}]

_suspend := {"type": "suspend", "target": {"kind": "account", "value": "acct_v"}}

_revoke := {"type": "revoke_key", "target": {"kind": "api_key", "value": "key_v"}}

test_no_second_review_while_one_holds_the_same if {
	count(review_first.actions) == 0 with input as _input(_customer, _open([_suspend, _revoke]))
}

# An escalation (a suspension the open review does not hold) opens a new review.
test_escalation_opens_another_review if {
	count(review_first.actions) == 1 with input as _input(_customer, _open([_revoke]))
}

test_unverified_customer_is_not_reviewed_first if {
	not review_first.applies with input as _input(object.union(_customer, {"verified": false}), [])
	count(review_first.actions) == 0 with input as _input(object.union(_customer, {"verified": false}), [])
}

test_types_not_withheld_pass_through if {
	actions := review_first.actions with input as _input(_customer, [])
		with data.tollgate.settings.default.review_first.withhold as ["suspend"]
	kinds := {sprintf("%s:%s", [a.type, a.rule]) | some a in actions}
	"flag_review:review_first.verified_customer" in kinds
	"revoke_key:operation.revoke_rotating_key" in kinds
	every a in actions {
		a.type in {"flag_review", "revoke_key"}
	}
}

test_nothing_to_withhold_opens_no_review if {
	inp := json.patch(_input(_customer, []), [
		{"op": "replace", "path": "/verdict/score", "value": 0.2},
		{"op": "replace", "path": "/verdict/labels", "value": []},
	])
	count(review_first.actions) == 0 with input as inp
}
