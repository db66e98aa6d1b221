package tollgate.verdict_test

import data.tollgate.verdict

_full := {"verdict": {
	"id": "v-1", "provider": "lab-a", "score": 0.934, "confidence": 0.8,
	"detector": {"name": "sweep", "version": "1.4.0"},
	"subject": {"account_id": "acct_9", "api_key_id": "key_3", "org_id": "org_7", "ips": ["203.0.113.7"]},
	"labels": ["distillation.capability_sweep", 42],
}}

test_subject_ids_and_targets if {
	verdict.account_id == "acct_9" with input as _full
	verdict.api_key_id == "key_3" with input as _full
	verdict.targets == {
		{"kind": "account", "value": "acct_9"},
		{"kind": "api_key", "value": "key_3"},
		{"kind": "org", "value": "org_7"},
	} with input as _full
}

test_null_empty_and_missing_ids_are_undefined if {
	inp := {"verdict": {"subject": {"account_id": null, "api_key_id": "", "ips": null}}}
	not verdict.account_id with input as inp
	not verdict.api_key_id with input as inp
	not verdict.org_id with input as inp
	count(verdict.targets) == 0 with input as inp
}

test_null_subject_and_missing_numbers if {
	inp := {"verdict": {"subject": null, "score": null, "labels": null}}
	verdict.score == 0 with input as inp
	verdict.confidence == 0 with input as inp
	count(verdict.labels) == 0 with input as inp
	count(verdict.targets) == 0 with input as inp
}

test_summary_names_label_detector_and_score if {
	verdict.summary == "capability sweep (sweep detector), score 0.93, confidence 0.8" with input as _full
}

test_summary_without_known_labels if {
	verdict.summary == "suspicious usage (unknown detector), score 0, confidence 0" with input as {"verdict": {}}
}
