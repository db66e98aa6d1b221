package tollgate.signals_test

import data.tollgate.signals

_input(verdict_patch, history) := {
	"verdict": object.union(
		{
			"id": "v-1", "provider": "lab-a", "score": 0.85, "confidence": 0.8,
			"detector": {"name": "sweep", "version": "1.4.0"},
			"subject": {"account_id": "acct_1", "api_key_id": "key_1", "org_id": "org_1", "ips": ["192.0.2.7"]},
			"signals": {}, "labels": [],
		},
		verdict_patch,
	),
	"history": object.union({"active_actions": [], "verdicts_30d": 0, "appeals": []}, history),
	"context": {"exempt": false, "intel_matches": []},
	"now": "2026-11-26T12:00:01Z",
}

_account(keys, networks) := {"account": {"keys_seen": keys, "networks_seen": networks, "networks": [], "keys_acted_on": 0}}

# A distillation operation: many keys, templated capability sweep.
test_rotating_templated_sweep_is_an_operation if {
	inp := _input({"signals": {"prompt_template_reuse": 0.9, "capability_coverage": 0.95}}, _account(12, 1))
	signals.operation with input as inp
	signals.key_rotation with input as inp
	signals.content == 2 with input as inp
	signals.profile == "distillation operation" with input as inp
	contains(signals.describe, "12 keys on the account") with input as inp
}

# An evaluation researcher: broad coverage, templates and chain of thought,
# but one key and one network: never an operation.
test_researcher_is_not_an_operation if {
	inp := _input({"signals": {"prompt_template_reuse": 0.9, "capability_coverage": 0.95, "cot_request_ratio": 0.8}}, _account(1, 1))
	not signals.operation with input as inp
	signals.content == 3 with input as inp
	signals.profile == "evaluation research" with input as inp
}

test_document_processor_profile if {
	inp := _input({"signals": {"requests_24h": 3000000, "prompt_template_reuse": 0.9}}, _account(2, 1))
	not signals.operation with input as inp
	signals.heavy with input as inp
	signals.profile == "document processing" with input as inp
}

test_application_profile if {
	signals.profile == "application" with input as _input({}, _account(1, 1))
}

# The detector's own count of keys is used when larger than Tollgate's.
test_detector_key_counts_count if {
	signals.keys_per_org == 14 with input as _input({"signals": {"keys_per_org": 14}}, {"org": {"keys_seen": 2}})
	signals.key_rotation with input as _input({"signals": {"keys_per_org": 14}}, {})
	signals.keys_per_account == 4 with input as _input({"signals": {"keys_per_account": 4}}, {})
}

test_key_farm_label_is_key_rotation if {
	signals.key_rotation with input as _input({"labels": ["distillation.key_farm"]}, {})
}

# IP rotation alone needs two kinds of content (a mobile app's users rotate too).
test_ip_rotation_needs_two_kinds_of_content if {
	one := _input({"signals": {"prompt_template_reuse": 0.9}}, _account(1, 5))
	signals.ip_rotation with input as one
	not signals.operation with input as one
	two := _input({"signals": {"prompt_template_reuse": 0.9, "cot_request_ratio": 0.9}}, _account(1, 5))
	signals.operation with input as two
}

test_ip_rotation_from_detector_signals_and_labels if {
	signals.ip_rotation with input as _input({"signals": {"distinct_ips_24h": 61}}, {})
	signals.ip_rotation with input as _input({"labels": ["distillation.ip_rotation"]}, {})
	not signals.ip_rotation with input as _input({}, _account(1, 2))
}

test_labels_count_as_content if {
	inp := _input({"labels": ["distillation.capability_sweep", "distillation.cot_elicitation"]}, {})
	signals.sweeping with input as inp
	signals.eliciting with input as inp
	signals.content == 2 with input as inp
}

test_low_score_is_never_an_operation if {
	inp := _input({"score": 0.5, "signals": {"prompt_template_reuse": 0.9}}, _account(20, 5))
	signals.structure with input as inp
	not signals.operation with input as inp
}

test_history_of_actions_is_read if {
	inp := _input({}, {"account": {"keys_acted_on": 3}, "org": {"accounts_acted_on": 2, "accounts_seen": 4}})
	signals.account_keys_acted_on == 3 with input as inp
	signals.org_accounts_acted_on == 2 with input as inp
	signals.org_accounts_seen == 4 with input as inp
}

test_missing_history_and_signals_are_zero if {
	signals.keys_per_account == 0 with input as {}
	signals.networks == 0 with input as {}
	not signals.structure with input as {}
}

test_thresholds_come_from_data if {
	inp := _input({"signals": {"prompt_template_reuse": 0.9}}, _account(2, 1))
	not signals.key_rotation with input as inp
	signals.key_rotation with input as inp with data.tollgate.settings.default.signals.key_rotation.account_keys as 2
}

# A mobile app's users: hundreds of addresses over many networks is no rotation.
test_end_user_spread_is_not_ip_rotation if {
	inp := _input({"signals": {"distinct_ips_24h": 900, "prompt_template_reuse": 0.9, "cot_request_ratio": 0.9}}, _account(1, 8))
	signals.end_user_spread with input as inp
	not signals.ip_rotation with input as inp
	not signals.operation with input as inp
}

_full_content := {"signals": {"prompt_template_reuse": 0.9, "capability_coverage": 0.95, "cot_request_ratio": 0.8}}

# A slowly rotating operation: its second key, from a second network, with
# templated sweeps eliciting reasoning, is an operation before a third key.
test_second_key_from_a_second_network_with_full_content_is_an_operation if {
	inp := _input(_full_content, _account(2, 2))
	signals.both_rotating with input as inp
	signals.operation with input as inp
	not signals.key_rotation with input as inp
	not signals.ip_rotation with input as inp
}

# Early structure needs all three kinds of content: two are a batch job's or a
# product's with a staging key.
test_second_key_and_network_with_partial_content_is_not_an_operation if {
	inp := _input({"signals": {"prompt_template_reuse": 0.9, "capability_coverage": 0.95}}, _account(2, 2))
	signals.both_rotating with input as inp
	not signals.operation with input as inp
}

# A researcher with two keys from one place, or one key from two places: not rotating.
test_two_keys_from_one_network_or_one_key_from_two_is_not_an_operation if {
	not signals.both_rotating with input as _input(_full_content, _account(2, 1))
	not signals.operation with input as _input(_full_content, _account(2, 1))
	not signals.both_rotating with input as _input(_full_content, _account(1, 2))
	not signals.operation with input as _input(_full_content, _account(1, 2))
}

# An application whose end users' addresses spread everywhere is not rotating networks.
test_end_user_spread_is_not_both_rotating if {
	signals_patch := {"signals": object.union(_full_content.signals, {"distinct_ips_24h": 400})}
	not signals.both_rotating with input as _input(signals_patch, _account(2, 6))
}

# Early structure is not hard evidence on its own: it never revokes through the
# graduated response, only through an operation's full content.
test_both_rotating_is_not_structure if {
	not signals.structure with input as _input(_full_content, _account(2, 2))
}

test_low_score_with_both_rotating_is_not_an_operation if {
	inp := _input(object.union(_full_content, {"score": 0.5}), _account(2, 2))
	not signals.operation with input as inp
}
