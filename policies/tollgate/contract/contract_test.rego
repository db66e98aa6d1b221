package tollgate.contract_test

import data.tollgate.contract

_good := {"type": "flag_review", "target": {"kind": "account", "value": "acct_9"}, "params": {}, "ttl": null, "rule": "x", "reason": "r"}

test_well_formed_action_passes if {
	contract.well_formed(_good)
	contract.enforceable([_good]) == {_good}
}

test_malformed_actions_are_dropped if {
	bad := [
		{"type": "revoke_key", "target": {"kind": "api_key", "value": null}},
		{"type": "rate_limit", "target": {"kind": "api_key"}},
		{"type": "block", "target": {"kind": "ip", "value": ""}},
		{"type": "revoke_key", "target": {"kind": "account", "value": "acct_9"}},
		{"type": "block", "target": {"kind": "account", "value": "acct_9"}},
		{"type": "delete_account", "target": {"kind": "account", "value": "acct_9"}},
		{"type": "flag_review", "target": {"kind": "planet", "value": "earth"}},
		{"type": "flag_review", "target": null},
	]
	contract.enforceable(array.concat(bad, [_good])) == {_good}
}
