# METADATA
# title: Operation-level response
# description: |
#   Stops a distillation operation rather than one of its keys. Revoking keys
#   one at a time never catches an operation that rotates them, so once the
#   signals show an operation (tollgate.signals.operation) the response
#   escalates: the key is revoked, the account is suspended when it has
#   rotated keys (Tollgate then revokes every key it knows of the account,
#   and each new one as it appears), the organisation is suspended when the
#   operation moves across its accounts, and the networks it rotates through
#   are blocked, except those a verified customer uses.
# custom:
#   owner: abuse-engineering
package tollgate.operation

import data.tollgate.config
import data.tollgate.signals
import data.tollgate.verdict

# METADATA
# title: actions
# description: Every action the operation-level response asks for on this verdict.
# custom:
#   owner: abuse-engineering
actions := revoke_rotating_key | suspend_account | suspend_org | range_block

# METADATA
# title: revoke_rotating_key
# description: The key an operation used is revoked at once (the account follows when it rotates).
# custom:
#   owner: abuse-engineering
revoke_rotating_key contains action if {
	signals.operation
	action := {
		"type": "revoke_key",
		"target": {"kind": "api_key", "value": verdict.api_key_id},
		"params": {},
		"ttl": _s.revoke_ttl,
		"rule": "operation.revoke_rotating_key",
		"reason": sprintf("%s: %s; %s", [signals.profile, verdict.summary, signals.describe]),
	}
}

# METADATA
# title: suspend_account
# description: |
#   An operation that rotated keys (as many as suspend_account.keys, or a new
#   key after one was revoked) loses the account, whatever key it uses next.
# custom:
#   owner: abuse-engineering
suspend_account contains action if {
	signals.operation
	_account_rotated
	not _active("suspend", "account", verdict.account_id)
	action := {
		"type": "suspend",
		"target": {"kind": "account", "value": verdict.account_id},
		"params": {},
		"ttl": _s.suspend_account.ttl,
		"rule": "operation.suspend_account",
		"reason": sprintf("operation rotating keys (%v keys, %v already revoked): %s; %s", [
			signals.keys_per_account,
			signals.account_keys_acted_on,
			verdict.summary,
			signals.describe,
		]),
	}
}

# METADATA
# title: suspend_org
# description: |
#   An operation that spans the organisation (another of its accounts is
#   suspended already, or the org holds as many keys as suspend_org.keys)
#   loses the organisation.
# custom:
#   owner: abuse-engineering
suspend_org contains action if {
	signals.operation
	_org_rotated
	not _active("suspend", "org", verdict.org_id)
	action := {
		"type": "suspend",
		"target": {"kind": "org", "value": verdict.org_id},
		"params": {},
		"ttl": _s.suspend_org.ttl,
		"rule": "operation.suspend_org",
		"reason": sprintf("operation across the organisation (%v accounts seen, %v suspended, %v keys): %s", [
			signals.org_accounts_seen,
			signals.org_accounts_acted_on,
			signals.keys_per_org,
			verdict.summary,
		]),
	}
}

# METADATA
# title: range_block
# description: |
#   The networks an IP-rotating operation came from are blocked, at most
#   range_block.max_networks of them, never one a verified customer uses
#   (input.context.verified_networks).
# custom:
#   owner: abuse-engineering
range_block contains action if {
	signals.operation
	signals.ip_rotation
	count(_networks) >= _s.range_block.min_networks
	some network in _blockable
	action := {
		"type": "block",
		"target": {"kind": "cidr", "value": network},
		"params": {},
		"ttl": _s.range_block.ttl,
		"rule": "operation.range_block",
		"reason": sprintf("network rotated through by a distillation operation (%v networks): %s", [
			count(_networks),
			verdict.summary,
		]),
	}
}

_s := config.settings.operation

_account_rotated if signals.keys_per_account >= _s.suspend_account.keys

_account_rotated if signals.account_keys_acted_on >= _s.suspend_account.keys_acted_on

_org_rotated if signals.keys_per_org >= _s.suspend_org.keys

_org_rotated if {
	signals.org_accounts_acted_on >= _s.suspend_org.accounts_acted_on
	signals.org_accounts_seen > signals.org_accounts_acted_on
}

_networks := {n | some n in _array(object.get(input, ["history", "account", "networks"], [])); is_string(n)}

_protected := {n | some n in _array(object.get(input, ["context", "verified_networks"], [])); is_string(n)}

_blockable := {n | some n in array.slice(sort(_networks - _protected), 0, _s.range_block.max_networks)}

_active(type, kind, value) if {
	some a in _array(object.get(input, ["history", "active_actions"], []))
	a.type == type
	a.target == {"kind": kind, "value": value}
}

_array(value) := value if {
	is_array(value)
} else := []
