# METADATA
# title: Exemptions
# description: |
#   An exempt subject (an allowlisted account, key or org of the provider,
#   found by Tollgate before evaluation) is never rate-limited, revoked or
#   blocked. When the other policies would have acted, a single flag_review
#   tells a human what would have happened, so the exemption can be revisited.
# custom:
#   owner: trust-and-safety
package tollgate.exemptions

import data.tollgate.graduated
import data.tollgate.intel
import data.tollgate.operation
import data.tollgate.verdict

# METADATA
# title: exempt
# description: True when input.context says an exemption covers the verdict's account, key or org.
# custom:
#   owner: trust-and-safety
exempt if input.context.exempt == true

# METADATA
# title: actions
# description: Every action the exemptions policy asks for (only when exempt).
# custom:
#   owner: trust-and-safety
actions := exempt_subject

# METADATA
# title: exempt_subject
# description: |
#   Exempt subject that the enforcing policies would have acted on: one
#   flag_review on the account (the key, then the org, when no account is
#   named), listing the actions that were withheld.
# custom:
#   owner: trust-and-safety
exempt_subject contains action if {
	exempt
	count(_withheld) > 0
	action := {
		"type": "flag_review",
		"target": _review_target,
		"params": {},
		"ttl": null,
		"rule": "exemptions.exempt_subject",
		"reason": sprintf("subject is exempt%s: %s; would have applied: %s", [
			_exemption_text,
			verdict.summary,
			concat("; ", sort([_describe(a) | some a in _withheld])),
		]),
	}
}

_withheld := (graduated.actions | intel.actions) | operation.actions

_review_target := {"kind": "account", "value": verdict.account_id} if {
	verdict.account_id
} else := {"kind": "api_key", "value": verdict.api_key_id} if {
	verdict.api_key_id
} else := {"kind": "org", "value": verdict.org_id}

_exemption_text := sprintf(" (owner %v, reason: %v)", [
	object.get(input.context.exemption, "owner", "unknown"),
	object.get(input.context.exemption, "reason", "none given"),
]) if {
	is_object(input.context.exemption)
} else := ""

_describe(action) := sprintf("%s %s %s (%s)", [action.type, action.target.kind, action.target.value, action.rule])
