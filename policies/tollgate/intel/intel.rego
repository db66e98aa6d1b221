# METADATA
# title: Shared intel
# description: |
#   What intel from this lab and its peers may drive. Tollgate matches the
#   verdict's IPs, hashed account/key/org ids, ASN, org patterns and signals
#   against every indicator before evaluation (input.context.intel_matches: kind,
#   target, sources, labs, enforceable_labs, confidence, tlp, pap), so nothing
#   here scans lists. The bounds: intel below the confidence bar does nothing;
#   PAP:RED intel drives at most a review, PAP:AMBER at most a review or a rate
#   limit; a hard action (block, key revocation) on intel needs
#   data.tollgate.settings intel.min_labs independent labs allowing it by PAP, or
#   one such lab and local evidence (this lab's verdict scoring at least
#   intel.local_evidence_score).
# custom:
#   owner: threat-intel
package tollgate.intel

import data.tollgate.config

_settings := config.settings.intel

# METADATA
# title: actions
# description: Every action the shared-intel policy asks for on this verdict.
# custom:
#   owner: threat-intel
actions := ((known_range | known_key) | watched_identity) | (bounded_rate_limit | bounded_review)

# METADATA
# title: known_range
# description: Block each range that enough labs (or one lab and local evidence) attribute to distillation, once per range.
# custom:
#   owner: threat-intel
known_range contains action if {
	some cidr in {m.cidr | some m in _enforceable; _kind(m) == "cidr"}
	matches := [m | some m in _enforceable; _kind(m) == "cidr"; m.cidr == cidr]
	action := {
		"type": "block",
		"target": {"kind": "cidr", "value": cidr},
		"params": {},
		"ttl": _settings.ttl,
		"rule": "intel.known_range",
		"reason": sprintf("range %s shared by %s (confidence %v)%s%s", [
			cidr,
			concat(", ", _sources(matches)),
			max({m.confidence | some m in matches}),
			_ips_text({m.ip | some m in matches; is_string(m.ip)}),
			_basis_text(matches),
		]),
	}
}

# METADATA
# title: known_key
# description: Revoke an API key whose keyed hash enough labs (or one lab and local evidence) attribute to distillation.
# custom:
#   owner: threat-intel
known_key contains action if {
	some m in _enforceable
	m.kind == "api_key"
	action := {
		"type": "revoke_key",
		"target": {"kind": "api_key", "value": m.target.value},
		"params": {},
		"ttl": _settings.ttl,
		"rule": "intel.known_key",
		"reason": sprintf("key attributed by %s (confidence %v)%s", [concat(", ", m.sources), m.confidence, _basis_text([m])]),
	}
}

# METADATA
# title: watched_identity
# description: Rate-limit an account or org whose keyed hash enough labs attribute to distillation (there is no harder action on these).
# custom:
#   owner: threat-intel
watched_identity contains action if {
	some m in _enforceable
	m.kind in {"account", "org"}
	action := _rate_limit(m, "intel.watched_identity")
}

# METADATA
# title: bounded_rate_limit
# description: An identifier match that may not drive a hard action (PAP:AMBER, or too few labs and no local evidence) gets at most a rate limit.
# custom:
#   owner: threat-intel
bounded_rate_limit contains action if {
	some m in _strong
	not _may_enforce(m)
	m.kind in {"account", "api_key", "org"}
	m.pap != "red"
	action := _rate_limit(m, "intel.bounded_rate_limit")
}

# METADATA
# title: bounded_review
# description: Any other strong match that may not drive enforcement (PAP:RED, too few labs, ASN, org pattern, signature) asks a reviewer to look.
# custom:
#   owner: threat-intel
bounded_review contains action if {
	some m in _strong
	not _may_enforce(m)
	not _soft_identifier(m)
	target := _review_target(m)
	action := {
		"type": "flag_review",
		"target": target,
		"params": {},
		"ttl": _settings.review_ttl,
		"rule": "intel.bounded_review",
		"reason": sprintf("%s %s matched intel from %s (PAP:%s, %d lab(s)); intel alone may not enforce", [
			m.kind, _shown(m), concat(", ", _sources([m])), upper(object.get(m, "pap", "amber")), _labs(m),
		]),
	}
}

_soft_identifier(m) if {
	m.kind in {"account", "api_key", "org"}
	m.pap != "red"
}

_rate_limit(m, rule) := {
	"type": "rate_limit",
	"target": {"kind": m.target.kind, "value": m.target.value},
	"params": {"requests_per_minute": _settings.soft.requests_per_minute},
	"ttl": _settings.soft.ttl,
	"rule": rule,
	"reason": sprintf("%s attributed by %s (confidence %v, PAP:%s)", [
		m.kind, concat(", ", _sources([m])), m.confidence, upper(object.get(m, "pap", "amber")),
	]),
}

_strong contains m if {
	some m in _array(object.get(input, ["context", "intel_matches"], []))
	is_number(m.confidence)
	m.confidence >= _settings.min_confidence
	is_string(object.get(m, "kind", "cidr"))
	_named(m)
}

_named(m) if {
	object.get(m, "kind", "cidr") == "cidr"
	is_string(m.cidr)
	m.cidr != ""
}

_named(m) if {
	object.get(m, "kind", "cidr") != "cidr"
	is_string(m.target.value)
	m.target.value != ""
}

_enforceable contains m if {
	some m in _strong
	_may_enforce(m)
}

_may_enforce(m) if {
	_enforcing_labs(m) >= _settings.min_labs
}

_may_enforce(m) if {
	_enforcing_labs(m) >= 1
	_local_evidence
}

# Matches from before labs were counted name one source that allows enforcement.
_enforcing_labs(m) := object.get(m, "enforceable_labs", 1)

_labs(m) := object.get(m, "labs", 1)

_local_evidence if {
	is_number(input.verdict.score)
	input.verdict.score >= _settings.local_evidence_score
}

_review_target(m) := {"kind": "ip", "value": m.ip} if {
	object.get(m, "kind", "cidr") == "cidr"
	is_string(m.ip)
} else := {"kind": m.target.kind, "value": m.target.value} if {
	m.target.kind in {"account", "api_key", "org", "ip", "cidr"}
} else := _subject_target

_subject_target := {"kind": "account", "value": input.verdict.subject.account_id} if {
	is_string(input.verdict.subject.account_id)
} else := {"kind": "api_key", "value": input.verdict.subject.api_key_id} if {
	is_string(input.verdict.subject.api_key_id)
} else := {"kind": "ip", "value": input.verdict.subject.ips[0]}

_shown(m) := m.cidr if {
	object.get(m, "kind", "cidr") == "cidr"
} else := m.target.value

_sources(matches) := sort({s | some m in matches; some s in _source_list(m)})

_source_list(m) := m.sources if {
	is_array(m.sources)
	count(m.sources) > 0
} else := [m.source] if {
	is_string(m.source)
	m.source != ""
} else := ["an unnamed source"]

_basis_text(matches) := sprintf("; %d labs agree", [n]) if {
	n := max({_labs(m) | some m in matches})
	n >= _settings.min_labs
} else := "; with local evidence"

_ips_text(ips) := sprintf(", matched %s", [concat(", ", sort(ips))]) if {
	count(ips) > 0
} else := ""

_array(value) := value if {
	is_array(value)
} else := []

_kind(m) := object.get(m, "kind", "cidr")
