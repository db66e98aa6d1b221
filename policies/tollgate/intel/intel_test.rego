package tollgate.intel_test

import data.tollgate.intel

_input(matches) := {
	"verdict": {
		"id": "v-1", "provider": "lab-a", "score": 0.4, "confidence": 0.8,
		"subject": {"account_id": "acct_9", "api_key_id": "key_3", "ips": ["203.0.113.7", "203.0.113.9"]},
	},
	"history": {"active_actions": [], "verdicts_30d": 0, "appeals": []},
	"context": {"exempt": false, "exemption": null, "intel_matches": matches},
	"now": "2026-11-26T12:00:01Z",
}

test_known_range_blocks_the_cidr if {
	actions := intel.actions with input as _input([{"cidr": "203.0.113.0/24", "source": "lab-b", "confidence": 0.9, "ip": "203.0.113.7"}])
	actions == {{
		"type": "block",
		"target": {"kind": "cidr", "value": "203.0.113.0/24"},
		"params": {},
		"ttl": "7d",
		"rule": "intel.known_range",
		"reason": "range 203.0.113.0/24 shared by lab-b (confidence 0.9), matched 203.0.113.7",
	}}
}

test_one_block_per_cidr_naming_every_source if {
	matches := [
		{"cidr": "203.0.113.0/24", "source": "lab-b", "confidence": 0.9, "ip": "203.0.113.7"},
		{"cidr": "203.0.113.0/24", "source": "lab-c", "confidence": 0.85, "ip": "203.0.113.9"},
	]
	actions := intel.actions with input as _input(matches)
	count(actions) == 1
	some a in actions
	contains(a.reason, "lab-b, lab-c")
	contains(a.reason, "203.0.113.7, 203.0.113.9")
}

test_low_confidence_intel_is_ignored if {
	count(intel.actions) == 0 with input as _input([{"cidr": "198.51.100.128/25", "source": "lab-c", "confidence": 0.5, "ip": "198.51.100.140"}])
}

test_malformed_matches_are_ignored if {
	matches := [
		{"cidr": null, "source": "lab-b", "confidence": 0.9},
		{"cidr": "", "source": "lab-b", "confidence": 0.9},
		{"cidr": "203.0.113.0/24", "source": "lab-b"},
	]
	count(intel.actions) == 0 with input as _input(matches)
}

test_no_context_means_no_blocks if {
	count(intel.actions) == 0 with input as {"verdict": {"provider": "lab-a"}}
}
