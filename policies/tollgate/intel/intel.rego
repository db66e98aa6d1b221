# METADATA
# title: Shared intel
# description: |
#   Blocks ranges that another lab (or this one) attributed to a distillation
#   operation. Tollgate matches the verdict's IPs against the indicator index
#   before evaluation (input.context.intel_matches), so nothing here scans
#   CIDR lists; matches below the confidence bar are ignored.
# custom:
#   owner: threat-intel
package tollgate.intel

import data.tollgate.config

# METADATA
# title: actions
# description: Every action the shared-intel policy asks for on this verdict.
# custom:
#   owner: threat-intel
actions := known_range

# METADATA
# title: known_range
# description: Block each CIDR matched by intel of sufficient confidence, once per CIDR.
# custom:
#   owner: threat-intel
known_range contains action if {
	some cidr in {match.cidr | some match in _strong_matches}
	matches := [match | some match in _strong_matches; match.cidr == cidr]
	sources := {_source(match) | some match in matches}
	ips := {match.ip | some match in matches; is_string(match.ip)}
	action := {
		"type": "block",
		"target": {"kind": "cidr", "value": cidr},
		"params": {},
		"ttl": config.settings.intel.ttl,
		"rule": "intel.known_range",
		"reason": sprintf("range %s shared by %s (confidence %v)%s", [
			cidr,
			concat(", ", sort(sources)),
			max({match.confidence | some match in matches}),
			_ips_text(ips),
		]),
	}
}

_strong_matches contains match if {
	some match in _array(object.get(input, ["context", "intel_matches"], []))
	is_number(match.confidence)
	match.confidence >= config.settings.intel.min_confidence
	is_string(match.cidr)
	match.cidr != ""
}

_source(match) := match.source if {
	is_string(match.source)
	match.source != ""
} else := "an unnamed source"

_ips_text(ips) := sprintf(", matched %s", [concat(", ", sort(ips))]) if {
	count(ips) > 0
} else := ""

_array(value) := value if {
	is_array(value)
} else := []
