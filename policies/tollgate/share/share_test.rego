package tollgate.share_test

import data.tollgate.share

_local := {"kind": "cidr", "value": "203.0.113.0/24", "source": "lab-a", "confidence": 0.9, "tlp": "green", "pap": "green", "origin": "local"}

test_local_indicator_is_published_green if {
	share.decision == {"publish": true, "tlp": "green", "pap": "green", "reason": "entered by this lab"} with input as {"indicator": _local}
}

test_stricter_markings_are_kept if {
	d := share.decision with input as {"indicator": object.union(_local, {"tlp": "amber", "pap": "red"})}
	d.tlp == "amber"
	d.pap == "red"
}

test_clear_is_raised_to_green if {
	d := share.decision with input as {"indicator": object.union(_local, {"tlp": "clear", "pap": "clear"})}
	d.tlp == "green"
	d.pap == "green"
}

test_hard_action_is_published if {
	d := share.decision with input as {"indicator": _local, "action": {"type": "block", "rule": "graduated.keyless"}}
	d.publish
	d.reason == "stands behind this lab's block (graduated.keyless)"
}

test_pulled_intel_is_never_reshared if {
	d := share.decision with input as {"indicator": object.union(_local, {"origin": "lab-b"})}
	not d.publish
	d.reason == "pulled from a peer: never re-shared"
}

test_intel_based_action_is_never_reshared if {
	d := share.decision with input as {"indicator": _local, "action": {"type": "block", "rule": "intel.known_range"}}
	not d.publish
	d.reason == "the action is based on intel: never re-shared"
}

test_soft_action_is_not_published if {
	d := share.decision with input as {"indicator": _local, "action": {"type": "rate_limit", "rule": "graduated.first_offense"}}
	not d.publish
	d.reason == "not a hard action"
}

test_low_confidence_is_not_published if {
	d := share.decision with input as {"indicator": object.union(_local, {"confidence": 0.1})} with data.tollgate.settings.default.share as {"min_confidence": 0.5}
	not d.publish
	d.reason == "below the confidence to share"
}
