package tollgate.exemptions_test

import data.tollgate.exemptions

_exemption := {
	"subject": {"kind": "account", "value": "acct_mh"}, "provider": "lab-a",
	"owner": "trust-and-safety@lab-a", "reason": "contracted bulk summarisation", "expires_at": null,
}

_input(patch, matches) := {
	"verdict": object.union(
		{
			"id": "v-1", "provider": "lab-a", "score": 0.93, "confidence": 0.85,
			"detector": {"name": "sweep", "version": "1.4.0"},
			"subject": {"account_id": "acct_mh", "api_key_id": "key_mh", "ips": ["203.0.113.7"]},
			"labels": ["distillation.capability_sweep"],
		},
		patch,
	),
	"history": {"active_actions": [], "verdicts_30d": 0, "appeals": []},
	"context": {"exempt": true, "exemption": _exemption, "intel_matches": matches},
	"now": "2026-11-26T12:00:01Z",
}

_strong := [{"cidr": "203.0.113.0/24", "source": "lab-b", "confidence": 0.9, "ip": "203.0.113.7"}]

test_exempt_subject_gets_one_flag_review_on_the_account if {
	actions := exemptions.actions with input as _input({}, _strong)
	count(actions) == 1
	some a in actions
	a.type == "flag_review"
	a.target == {"kind": "account", "value": "acct_mh"}
	a.rule == "exemptions.exempt_subject"
	a.ttl == null
	contains(a.reason, "subject is exempt (owner trust-and-safety@lab-a")
	contains(a.reason, "score 0.93")
	contains(a.reason, "rate_limit api_key key_mh (graduated.repeat_throttle)")
	contains(a.reason, "block cidr 203.0.113.0/24 (intel.known_range)")
}

test_exempt_without_account_flags_the_key if {
	some a in exemptions.actions with input as _input({"subject": {"account_id": null, "api_key_id": "key_mh"}}, [])
	a.target == {"kind": "api_key", "value": "key_mh"}
}

test_exempt_with_nothing_withheld_gets_nothing if {
	count(exemptions.actions) == 0 with input as _input({"score": 0.3, "labels": []}, [])
}

test_not_exempt_gets_nothing_from_exemptions if {
	inp := object.union(_input({}, _strong), {"context": {"exempt": false, "exemption": null}})
	not exemptions.exempt with input as inp
	count(exemptions.actions) == 0 with input as inp
}
