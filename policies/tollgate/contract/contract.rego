# METADATA
# title: Action contract
# description: |
#   The shape of an action Tollgate can plan and a connector can enforce
#   (DESIGN.md, "The policy contract"). The entrypoint passes every proposed
#   action through enforceable() as a last guard, so a malformed action (a
#   null or empty target, an unknown type or kind, a revoke_key aimed at
#   something other than a key, a suspend aimed at something other than an
#   account or org) is dropped instead of reaching a gateway.
# custom:
#   owner: policy-platform
package tollgate.contract

# METADATA
# title: enforceable
# description: The well-formed subset of a set or array of proposed actions.
# custom:
#   owner: policy-platform
enforceable(proposed) := {action | some action in proposed; well_formed(action)}

# METADATA
# title: well_formed
# description: True when an action has a known type, a known target kind and a non-empty string target value.
# custom:
#   owner: policy-platform
well_formed(action) if {
	action.type in {"rate_limit", "revoke_key", "block", "suspend", "flag_review"}
	action.target.kind in {"account", "api_key", "ip", "cidr", "org"}
	is_string(action.target.value)
	action.target.value != ""
	not _misdirected(action)
}

# revoke_key only makes sense on an API key; block only on an ip or cidr.
_misdirected(action) if {
	action.type == "revoke_key"
	action.target.kind != "api_key"
}

_misdirected(action) if {
	action.type == "block"
	not action.target.kind in {"ip", "cidr"}
}

# suspend acts on a whole account or organisation.
_misdirected(action) if {
	action.type == "suspend"
	not action.target.kind in {"account", "org"}
}
