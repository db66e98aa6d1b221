# METADATA
# title: Review first for verified customers
# description: |
#   A customer the lab has verified (input.context.customer.verified) never
#   has traffic refused by a policy alone. Whatever the other policies would
#   do to it (the types in review_first.withhold) is withheld and carried,
#   with why, in one flag_review: Tollgate opens a review, and a reviewer's
#   confirmation applies exactly those actions. A later verdict opens another
#   review only when it would do something the open reviews do not already
#   hold (an escalation), so a reviewer is not flooded with repeats.
# custom:
#   owner: trust-and-safety
package tollgate.review_first

import data.tollgate.config
import data.tollgate.contract
import data.tollgate.graduated
import data.tollgate.intel
import data.tollgate.operation
import data.tollgate.verdict

# METADATA
# title: applies
# description: True when the verdict's account is a verified customer.
# custom:
#   owner: trust-and-safety
applies if input.context.customer.verified == true

# METADATA
# title: actions
# description: What a verified customer gets instead of the proposed actions.
# custom:
#   owner: trust-and-safety
actions := verified_customer | passed_through

# METADATA
# title: verified_customer
# description: |
#   One flag_review on the account with the withheld actions in
#   params.withheld, unless open reviews of it already hold every one of them.
# custom:
#   owner: trust-and-safety
verified_customer contains action if {
	applies
	count(_withheld) > 0
	some fresh in _withheld
	not _held_open(fresh)
	action := {
		"type": "flag_review",
		"target": {"kind": "account", "value": verdict.account_id},
		"params": {"withheld": _withheld},
		"ttl": null,
		"rule": "review_first.verified_customer",
		"reason": sprintf("verified %s customer (%s): %s; withheld for review: %s", [
			object.get(input.context.customer, "tier", "standard"),
			_owner_text,
			verdict.summary,
			concat("; ", [_describe(a) | some a in _withheld]),
		]),
	}
}

# METADATA
# title: passed_through
# description: Proposed actions of types not withheld (none by default) still apply to verified customers.
# custom:
#   owner: trust-and-safety
passed_through contains action if {
	applies
	some action in _proposed
	not action.type in _s.withhold
	action.type != "flag_review"
}

_s := config.settings.review_first

_proposed := contract.enforceable((graduated.actions | intel.actions) | operation.actions)

_withheld := [action | some action in _proposed; action.type in _s.withhold]

_held_open(action) if {
	some a in object.get(input, ["history", "active_actions"], [])
	a.type == "flag_review"
	a.rule == "review_first.verified_customer"
	some w in object.get(a, ["params", "withheld"], [])
	w.type == action.type
	w.target == action.target
}

# A lab may record no owner for a customer (null or absent): say so in words.
_owner_text := sprintf("owner %s", [owner]) if {
	owner := input.context.customer.owner
	is_string(owner)
	owner != ""
} else := "no owner recorded"

_describe(action) := sprintf("%s %s %s (%s)", [action.type, action.target.kind, action.target.value, action.rule])
