package tollgate.intel_test

import data.tollgate.intel

_input(matches, score) := {
	"verdict": {
		"id": "v-1", "provider": "lab-a", "score": score, "confidence": 0.8,
		"subject": {"account_id": "acct_9", "api_key_id": "key_3", "ips": ["203.0.113.7", "203.0.113.9"]},
	},
	"history": {"active_actions": [], "verdicts_30d": 0, "appeals": []},
	"context": {"exempt": false, "exemption": null, "intel_matches": matches},
	"now": "2026-11-26T12:00:01Z",
}

_range(ip, sources, pap) := {
	"kind": "cidr", "value": "203.0.113.0/24", "cidr": "203.0.113.0/24", "ip": ip,
	"target": {"kind": "ip", "value": ip}, "source": sources[0], "sources": sources,
	"labs": count(sources), "enforceable_labs": _enforcing(sources, pap),
	"confidence": 0.9, "tlp": "green", "pap": pap,
}

_enforcing(sources, pap) := count(sources) if pap in {"clear", "green"} else := 0

_id(kind, value, sources, pap) := {
	"kind": kind, "value": "k1:ab", "target": {"kind": kind, "value": value},
	"source": sources[0], "sources": sources, "labs": count(sources),
	"enforceable_labs": _enforcing(sources, pap), "confidence": 0.9, "tlp": "green", "pap": pap,
}

test_two_labs_block_the_range_on_intel_alone if {
	actions := intel.actions with input as _input([_range("203.0.113.7", ["lab-b", "lab-c"], "green")], 0.1)
	actions == {{
		"type": "block",
		"target": {"kind": "cidr", "value": "203.0.113.0/24"},
		"params": {},
		"ttl": "7d",
		"rule": "intel.known_range",
		"reason": "range 203.0.113.0/24 shared by lab-b, lab-c (confidence 0.9), matched 203.0.113.7; 2 labs agree",
	}}
}

test_one_lab_and_local_evidence_block if {
	actions := intel.actions with input as _input([_range("203.0.113.7", ["lab-b"], "green")], 0.8)
	some a in actions
	a.type == "block"
	endswith(a.reason, "; with local evidence")
}

test_one_lab_without_local_evidence_only_asks_for_review if {
	actions := intel.actions with input as _input([_range("203.0.113.7", ["lab-b"], "green")], 0.1)
	[a] := [a | some a in actions]
	a.type == "flag_review"
	a.rule == "intel.bounded_review"
	a.target == {"kind": "ip", "value": "203.0.113.7"}
}

test_amber_and_red_ranges_never_block_even_with_many_labs if {
	every pap in {"amber", "red"} {
		actions := intel.actions with input as _input([_range("203.0.113.7", ["lab-b", "lab-c", "lab-d"], pap)], 0.99)
		count([a | some a in actions; a.type == "block"]) == 0
		count([a | some a in actions; a.type == "flag_review"]) == 1
	}
}

test_one_block_per_range_naming_every_source if {
	matches := [_range("203.0.113.7", ["lab-b"], "green"), _range("203.0.113.9", ["lab-c"], "green")]
	actions := intel.actions with input as _input(matches, 0.8)
	count(actions) == 1
	some a in actions
	contains(a.reason, "lab-b, lab-c")
	contains(a.reason, "203.0.113.7, 203.0.113.9")
}

test_key_revoked_when_labs_agree if {
	actions := intel.actions with input as _input([_id("api_key", "key_3", ["lab-b", "lab-c"], "green")], 0.1)
	some a in actions
	a.type == "revoke_key"
	a.target == {"kind": "api_key", "value": "key_3"}
}

test_amber_key_is_at_most_rate_limited if {
	actions := intel.actions with input as _input([_id("api_key", "key_3", ["lab-b", "lab-c"], "amber")], 0.99)
	[a] := [a | some a in actions]
	a.type == "rate_limit"
	a.rule == "intel.bounded_rate_limit"
}

test_red_account_is_only_reviewed if {
	actions := intel.actions with input as _input([_id("account", "acct_9", ["lab-b", "lab-c"], "red")], 0.99)
	[a] := [a | some a in actions]
	a.type == "flag_review"
	a.target == {"kind": "account", "value": "acct_9"}
}

test_agreed_account_is_rate_limited if {
	actions := intel.actions with input as _input([_id("org", "org_7", ["lab-b", "lab-c"], "green")], 0.1)
	[a] := [a | some a in actions]
	a.rule == "intel.watched_identity"
	a.target == {"kind": "org", "value": "org_7"}
}

test_asn_match_is_reviewed_on_the_subject if {
	m := {"kind": "asn", "value": "64500", "target": {"kind": "asn", "value": "64500"}, "source": "lab-b", "sources": ["lab-b"], "labs": 1, "enforceable_labs": 1, "confidence": 0.9, "pap": "green"}
	actions := intel.actions with input as _input([m], 0.1)
	[a] := [a | some a in actions]
	a.type == "flag_review"
	a.target == {"kind": "account", "value": "acct_9"}
}

test_review_target_falls_back_to_key_then_ip if {
	m := {"kind": "signature", "value": "s", "target": {"kind": "signal", "value": "s"}, "source": "", "labs": 1, "enforceable_labs": 0, "confidence": 0.9, "pap": "green"}
	keyed := intel.actions with input as object.union(_input([m], 0.1), {"verdict": {"subject": {"account_id": null, "api_key_id": "key_3", "ips": []}}})
	[k] := [a | some a in keyed]
	k.target == {"kind": "api_key", "value": "key_3"}
	contains(k.reason, "an unnamed source")
	bare := intel.actions with input as object.union(_input([m], 0.1), {"verdict": {"subject": {"account_id": null, "api_key_id": null, "ips": ["192.0.2.1"]}}})
	[b] := [a | some a in bare]
	b.target == {"kind": "ip", "value": "192.0.2.1"}
}

test_matches_before_lab_counts_still_work if {
	old := {"cidr": "203.0.113.0/24", "source": "lab-b", "confidence": 0.9, "ip": "203.0.113.7"}
	actions := intel.actions with input as _input([old], 0.8)
	some a in actions
	a.type == "block"
}

test_low_confidence_intel_is_ignored if {
	m := object.union(_range("203.0.113.7", ["lab-b", "lab-c"], "green"), {"confidence": 0.5})
	count(intel.actions) == 0 with input as _input([m], 0.99)
}

test_malformed_matches_are_ignored if {
	matches := [
		{"cidr": null, "source": "lab-b", "confidence": 0.9},
		{"cidr": "", "source": "lab-b", "confidence": 0.9},
		{"cidr": "203.0.113.0/24", "source": "lab-b"},
		{"kind": "account", "target": {"kind": "account", "value": ""}, "confidence": 0.9},
	]
	count(intel.actions) == 0 with input as _input(matches, 0.99)
}

test_no_context_means_no_actions if {
	count(intel.actions) == 0 with input as {"verdict": {"provider": "lab-a"}}
}
