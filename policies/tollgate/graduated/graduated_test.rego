package tollgate.graduated_test

import data.tollgate.graduated

_verdict := {
	"id": "v-1", "provider": "lab-a", "score": 0.78, "confidence": 0.8,
	"detector": {"name": "sweep", "version": "1.4.0"},
	"subject": {"account_id": "acct_9", "api_key_id": "key_3", "org_id": "org_7", "ips": ["192.0.2.7"]},
	"signals": {"requests_24h": 400000, "prompt_template_reuse": 0.83},
	"labels": ["distillation.capability_sweep"], "observed_at": "2026-11-26T12:00:00Z",
}

# Earlier verdicts as `history.recent_verdicts` lists them.
_prior(n, score) := [{"id": sprintf("v-prior-%d", [i]), "observed_at": "2026-11-25T12:00:00Z",
	"score": score, "confidence": 0.8, "detector": "sweep"} | some i in numbers.range(1, n)]

_input(patch, history) := {
	"verdict": object.union(_verdict, patch),
	"history": object.union({"active_actions": [], "verdicts_30d": 0, "appeals": []}, history),
	"context": {"exempt": false, "exemption": null, "intel_matches": []},
	"now": "2026-11-26T12:00:01Z",
}

# Replaces the whole subject, so fields can be absent rather than null.
_with_subject(subject, patch, history) := json.patch(_input(patch, history), [{"op": "replace", "path": "/verdict/subject", "value": subject}])

_kinds(actions) := sort([sprintf("%s:%s:%s", [a.type, a.target.kind, a.rule]) | some a in actions])

test_first_offense_rate_limits_the_key if {
	actions := graduated.actions with input as _input({}, {})
	count(actions) == 1
	some a in actions
	a.type == "rate_limit"
	a.target == {"kind": "api_key", "value": "key_3"}
	a.params == {"requests_per_minute": 60, "tokens_per_minute": 20000}
	a.ttl == "24h"
	a.rule == "graduated.first_offense"
	contains(a.reason, "score 0.78")
}

test_first_offense_uses_provider_limits if {
	some a in graduated.first_offense with input as _input({"provider": "lab-b"}, {})
	a.params.requests_per_minute == 30
}

# Hard evidence: the account rotates keys (an operation's structure).
_rotating := {"signals": {"requests_24h": 400000, "prompt_template_reuse": 0.83, "keys_per_account": 6}}

test_repeat_by_earlier_verdict_revokes_and_flags_account if {
	history := {"verdicts_30d": 2, "recent_verdicts": _prior(2, 0.8)}
	actions := graduated.actions with input as _input(_rotating, history)
	_kinds(actions) == ["flag_review:account:graduated.account_review", "revoke_key:api_key:graduated.repeat_offense"]
	some a in graduated.repeat_offense with input as _input(_rotating, history)
	a.target.value == "key_3"
	a.ttl == "30d"
	contains(a.reason, "earlier qualifying verdicts in 30 days: 2")
}

# A heavy user's many earlier low-score verdicts do not make its first
# qualifying verdict a repeat: it gets the first-offense rate limit.
test_earlier_low_score_verdicts_are_not_a_repeat if {
	history := {"verdicts_30d": 9, "recent_verdicts": _prior(9, 0.55)}
	actions := graduated.actions with input as _input({}, history)
	_kinds(actions) == ["rate_limit:api_key:graduated.first_offense"]
}

test_repeat_by_active_graduated_rate_limit if {
	active := {
		"type": "rate_limit", "target": {"kind": "api_key", "value": "key_3"},
		"rule": "graduated.first_offense", "params": {"requests_per_minute": 60},
		"expires_at": "2026-11-27T12:00:00Z",
	}
	actions := graduated.actions with input as _input(_rotating, {"active_actions": [active]})
	_kinds(actions) == ["flag_review:account:graduated.account_review", "revoke_key:api_key:graduated.repeat_offense"]
}

# A researcher's repeated high scores, one key, one network: no revocation,
# a tighter limit and a review.
test_repeat_without_hard_evidence_throttles_and_flags if {
	history := {"verdicts_30d": 2, "recent_verdicts": _prior(2, 0.8)}
	actions := graduated.actions with input as _input({}, history)
	_kinds(actions) == ["flag_review:account:graduated.account_review", "rate_limit:api_key:graduated.repeat_throttle"]
	some a in graduated.repeat_throttle with input as _input({}, history)
	a.params == {"requests_per_minute": 20, "tokens_per_minute": 8000}
	contains(a.reason, "without an operation's structure")
}

# Severe verdicts from two different detectors are hard evidence on their own.
test_severe_verdicts_from_two_detectors_revoke if {
	prior := [{"id": "v-0", "observed_at": "2026-11-25T12:00:00Z", "score": 0.99, "confidence": 0.9, "detector": "volume"}]
	actions := graduated.actions with input as _input({"score": 0.98}, {"recent_verdicts": prior})
	_kinds(actions) == ["flag_review:account:graduated.account_review", "revoke_key:api_key:graduated.repeat_offense"]
}

test_severe_verdicts_from_one_detector_only_throttle if {
	prior := [{"id": "v-0", "observed_at": "2026-11-25T12:00:00Z", "score": 0.99, "confidence": 0.9, "detector": "sweep"}]
	actions := graduated.actions with input as _input({"score": 0.98}, {"recent_verdicts": prior})
	_kinds(actions) == ["flag_review:account:graduated.account_review", "rate_limit:api_key:graduated.repeat_throttle"]
}

test_active_action_from_another_rule_is_not_a_repeat if {
	active := {"type": "block", "target": {"kind": "cidr", "value": "192.0.2.0/24"}, "rule": "intel.known_range"}
	actions := graduated.actions with input as _input({}, {"active_actions": [active]})
	_kinds(actions) == ["rate_limit:api_key:graduated.first_offense"]
}

test_severe_capability_sweep_revokes_at_once if {
	actions := graduated.actions with input as _input(object.union(_rotating, {"score": 0.93}), {})
	_kinds(actions) == ["flag_review:account:graduated.account_review", "revoke_key:api_key:graduated.severe_sweep"]
}

test_very_high_score_without_sweep_label_is_severe if {
	actions := graduated.actions with input as _input(object.union(_rotating, {"score": 0.98, "labels": []}), {})
	_kinds(actions) == ["flag_review:account:graduated.account_review", "revoke_key:api_key:graduated.severe_sweep"]
}

test_legit_heavy_user_gets_nothing if {
	patch := {
		"score": 0.31, "labels": [], "detector": {"name": "volume", "version": "2.0.1"},
		"signals": {"requests_24h": 2400000, "prompt_template_reuse": 0.12},
	}
	count(graduated.actions) == 0 with input as _input(patch, {})
}

test_repeated_low_scores_never_escalate if {
	history := {"verdicts_30d": 12, "recent_verdicts": _prior(12, 0.8)}
	count(graduated.actions) == 0 with input as _input({"score": 0.64}, history)
}

test_low_confidence_gets_nothing if {
	count(graduated.actions) == 0 with input as _input({"score": 0.95, "confidence": 0.4}, {})
}

test_missing_api_key_limits_the_account if {
	actions := graduated.actions with input as _input({"subject": {"account_id": "acct_9", "api_key_id": null}}, {})
	_kinds(actions) == ["rate_limit:account:graduated.first_offense"]
}

test_missing_api_key_repeat_throttles_account_never_revokes if {
	inp := _with_subject({"account_id": "acct_9"}, {}, {"verdicts_30d": 1, "recent_verdicts": _prior(1, 0.9)})
	actions := graduated.actions with input as inp
	_kinds(actions) == ["flag_review:account:graduated.account_review", "rate_limit:account:graduated.keyless_escalation"]
	every a in actions {
		a.target.kind != "api_key"
	}
}

test_missing_subject_fields_emit_nothing_targeted_at_null if {
	actions := graduated.actions with input as _with_subject({"ips": ["192.0.2.7"]}, {"score": 0.99}, {"verdicts_30d": 3, "recent_verdicts": _prior(3, 0.99)})
	count(actions) == 0
}

test_null_subject_emits_nothing if {
	count(graduated.actions) == 0 with input as _input({"subject": null}, {})
}

test_key_farm_flags_the_org if {
	actions := graduated.actions with input as _input({"labels": ["distillation.key_farm"], "score": 0.81}, {})
	_kinds(actions) == ["flag_review:org:graduated.org_review", "rate_limit:api_key:graduated.first_offense"]
}

test_active_org_review_makes_a_new_account_a_repeat if {
	active := {"type": "flag_review", "target": {"kind": "org", "value": "org_7"}, "rule": "graduated.org_review"}
	inp := _input({"labels": ["distillation.key_farm"], "score": 0.81}, {"active_actions": [active]})
	actions := graduated.actions with input as inp
	_kinds(actions) == [
		"flag_review:account:graduated.account_review",
		"flag_review:org:graduated.org_review",
		"revoke_key:api_key:graduated.repeat_offense",
	]
}

test_thresholds_come_from_data if {
	strict := object.union(data.tollgate.settings.default, {"graduated": {"min_score": 0.5}})
	actions := graduated.actions with input as _input({"score": 0.55}, {})
		with data.tollgate.settings.default as strict
	_kinds(actions) == ["rate_limit:api_key:graduated.first_offense"]
}
