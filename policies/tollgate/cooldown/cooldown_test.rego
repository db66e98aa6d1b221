package tollgate.cooldown_test

import data.tollgate.cooldown
import data.tollgate.decision

_lift(patch) := object.union(
	{
		"id": "lft_1", "appeal_id": "apl_1", "state": "upheld",
		"rule": "graduated.first_offense", "type": "rate_limit",
		"target": {"kind": "api_key", "value": "key_3"}, "score": 0.78,
		"at": "2026-11-25T12:00:00Z", "cooldown_until": "2026-12-02T12:00:00Z",
	},
	patch,
)

_input(score, appeals) := {
	"verdict": {
		"id": "v-2", "provider": "lab-a", "score": score, "confidence": 0.8,
		"detector": {"name": "sweep", "version": "1.4.0"},
		"subject": {"account_id": "acct_9", "api_key_id": "key_3", "ips": ["203.0.113.7"]},
		# Rotating addresses: the library revokes a repeat offender's key only then.
		"signals": {"distinct_ips_24h": 25},
		"labels": [],
	},
	"history": {"active_actions": [], "verdicts_30d": 1, "recent_verdicts": [
		{"id": "v-1", "observed_at": "2026-11-25T11:00:00Z", "score": 0.78, "confidence": 0.8, "detector": "sweep"},
	], "appeals": appeals},
	"context": {"exempt": false, "exemption": null, "intel_matches": []},
	"now": "2026-11-26T12:00:01Z",
}

_types(actions) := sort([sprintf("%s:%s:%s", [a.type, a.target.value, a.rule]) | some a in actions])

# Without the cool-down the earlier (appealed) verdict makes this a repeat: revoke.
test_without_a_lift_the_repeat_revokes if {
	_types(decision.actions) == [
		"flag_review:acct_9:graduated.account_review",
		"revoke_key:key_3:graduated.repeat_offense",
	] with input as _input(0.78, [])
}

test_same_evidence_after_an_upheld_appeal_is_held_back if {
	actions := decision.actions with input as _input(0.78, [_lift({})])
	_types(actions) == [
		"flag_review:acct_9:graduated.account_review",
		"flag_review:key_3:cooldown.held_back",
	]
	some a in actions
	a.rule == "cooldown.held_back"
	contains(a.reason, "graduated.repeat_offense asked to revoke_key api_key key_3 again")
	contains(a.reason, "lifted on appeal (appeal apl_1) until 2026-12-02T12:00:00Z")
}

test_a_lift_by_hand_holds_back_too if {
	some a in cooldown.held_back with input as _input(0.7, [_lift({"state": "lifted", "appeal_id": null})])
	contains(a.reason, "lifted by hand until")
	not contains(a.reason, "appeal")
}

test_an_exemption_lift_holds_back_too if {
	some a in cooldown.held_back with input as _input(0.7, [_lift({"state": "exempted"})])
	contains(a.reason, "lifted for an exemption")
}

test_stronger_evidence_acts_again if {
	actions := decision.actions with input as _input(0.85, [_lift({})])
	"revoke_key:key_3:graduated.repeat_offense" in _types(actions)
	count(cooldown.held_back) == 0 with input as _input(0.85, [_lift({})])
}

test_the_cool_down_ends if {
	inp := _input(0.78, [_lift({"cooldown_until": "2026-11-26T12:00:00Z"})])
	"revoke_key:key_3:graduated.repeat_offense" in _types(decision.actions) with input as inp
}

test_another_rule_family_or_target_is_not_held if {
	other_family := _lift({"rule": "intel.known_range"})
	other_target := _lift({"target": {"kind": "api_key", "value": "key_other"}})
	inp := _input(0.78, [other_family, other_target])
	count(cooldown.held_back) == 0 with input as inp
	count(cooldown.allowed) == 2 with input as inp
}

test_open_or_denied_appeals_hold_nothing_back if {
	denied := _lift({"state": "denied", "rule": null, "score": null, "cooldown_until": null})
	opened := _lift({"state": "open", "rule": null, "score": null, "cooldown_until": null})
	count(cooldown.held_back) == 0 with input as _input(0.78, [denied, opened])
}

test_an_intel_block_lifted_on_appeal_is_held_back if {
	lift := _lift({"rule": "intel.known_range", "type": "block", "target": {"kind": "cidr", "value": "203.0.113.0/24"}, "score": 0.4})
	# Two labs agree on the range: intel alone may block it (see tollgate.intel).
	inp := object.union(_input(0.4, [lift]), {"context": {"intel_matches": [{
		"kind": "cidr", "value": "203.0.113.0/24", "cidr": "203.0.113.0/24", "ip": "203.0.113.7",
		"target": {"kind": "ip", "value": "203.0.113.7"}, "source": "lab-b",
		"sources": ["lab-b", "lab-c"], "labs": 2, "enforceable_labs": 2,
		"confidence": 0.9, "tlp": "green", "pap": "green",
	}]}})
	actions := decision.actions with input as inp
	_types(actions) == ["flag_review:203.0.113.0/24:cooldown.held_back"]
}

test_malformed_history_is_ignored if {
	count(cooldown.held_back) == 0 with input as _input(0.78, "not a list")
	count(cooldown.held_back) == 0 with input as _input(0.78, [{"state": "upheld"}])
}
