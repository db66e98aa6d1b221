# METADATA
# title: Cool-down after a lift
# description: |
#   No re-ban loops. When people took an action back (an upheld appeal, a lift
#   by hand, an exemption), the same rule family (the package: graduated,
#   intel) does not act again on the same target until the lift's
#   cooldown_until (Tollgate sets it from the provider's `cooldown`), unless
#   the new verdict's score is stronger than the one the lifted action stood
#   on. What is held back becomes a flag_review naming the lift, so it shows
#   in the subject's history and in `decision explain`.
# custom:
#   owner: trust-and-safety
package tollgate.cooldown

import data.tollgate.graduated
import data.tollgate.intel
import data.tollgate.operation
import data.tollgate.verdict

# METADATA
# title: allowed
# description: The actions the enforcing policies ask for that no cool-down holds back.
# custom:
#   owner: trust-and-safety
allowed := {action | some action in _proposed; not _held(action)}

# METADATA
# title: held_back
# description: |
#   One flag_review per action a cool-down holds back: the target, the lift
#   that started the cool-down, until when, and both scores.
# custom:
#   owner: trust-and-safety
held_back contains action if {
	some proposed in _proposed
	some lift in _lifts
	_covers(lift, proposed)
	action := {
		"type": "flag_review",
		"target": proposed.target,
		"params": {},
		"ttl": null,
		"rule": "cooldown.held_back",
		"reason": sprintf("held back by the cool-down: %s asked to %s %s %s again, but it was %s%s until %s and the new score %v is not above %v", [
			proposed.rule,
			proposed.type,
			proposed.target.kind,
			proposed.target.value,
			_how(lift),
			_appeal_text(lift),
			lift.cooldown_until,
			verdict.score,
			lift.score,
		]),
	}
}

_proposed := (graduated.actions | intel.actions) | operation.actions

_held(action) if {
	some lift in _lifts
	_covers(lift, action)
}

_covers(lift, action) if {
	_family(lift.rule) == _family(action.rule)
	lift.target == action.target
	verdict.score <= lift.score
}

# Lifts whose cool-down still runs (undecided or denied appeals lift nothing).
_lifts contains lift if {
	some lift in _array(object.get(input, ["history", "appeals"], []))
	lift.state in {"upheld", "lifted", "exempted"}
	is_string(lift.rule)
	is_number(lift.score)
	is_string(lift.cooldown_until)
	time.parse_rfc3339_ns(input.now) < time.parse_rfc3339_ns(lift.cooldown_until)
}

_family(rule) := split(rule, ".")[0]

_how(lift) := "lifted by hand" if {
	lift.state == "lifted"
} else := "lifted for an exemption" if {
	lift.state == "exempted"
} else := "lifted on appeal"

_appeal_text(lift) := sprintf(" (appeal %s)", [lift.appeal_id]) if {
	is_string(lift.appeal_id)
} else := ""

_array(value) := value if {
	is_array(value)
} else := []
