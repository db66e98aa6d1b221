# METADATA
# title: Verdict facts
# description: |
#   A normalised view of input.verdict. Detectors may omit or null any
#   subject field, score, confidence or label list; the rules here turn that
#   into "undefined" (identifiers) or safe defaults (numbers, lists), so the
#   policies that emit actions never target a null or empty value.
# custom:
#   owner: policy-platform
package tollgate.verdict

# METADATA
# title: provider
# description: The provider (tenant) the verdict belongs to; undefined when absent.
# custom:
#   owner: policy-platform
provider := _text(["provider"])

# METADATA
# title: account_id
# description: The subject's account id; undefined when absent, null or empty.
# custom:
#   owner: policy-platform
account_id := _text(["subject", "account_id"])

# METADATA
# title: api_key_id
# description: The subject's API key id (lab key id or SHA-256 fingerprint); undefined when absent, null or empty.
# custom:
#   owner: policy-platform
api_key_id := _text(["subject", "api_key_id"])

# METADATA
# title: org_id
# description: The subject's organisation id; undefined when absent, null or empty.
# custom:
#   owner: policy-platform
org_id := _text(["subject", "org_id"])

# METADATA
# title: targets
# description: The account, api_key and org targets this verdict names, as {kind, value} objects.
# custom:
#   owner: policy-platform
targets contains {"kind": "account", "value": account_id}

targets contains {"kind": "api_key", "value": api_key_id}

targets contains {"kind": "org", "value": org_id}

# METADATA
# title: score
# description: Detector score in 0..1; 0 when absent or not a number.
# custom:
#   owner: policy-platform
score := _number(["score"])

# METADATA
# title: confidence
# description: Detector confidence in 0..1; 0 when absent or not a number.
# custom:
#   owner: policy-platform
confidence := _number(["confidence"])

# METADATA
# title: labels
# description: The verdict's labels (strings only); empty when absent.
# custom:
#   owner: policy-platform
labels := {label | some label in _array(["labels"]); is_string(label)}

# METADATA
# title: summary
# description: |
#   One line for action reasons: what was seen and how sure the detector is,
#   e.g. "capability sweep (sweep detector), score 0.93, confidence 0.8".
# custom:
#   owner: policy-platform
summary := sprintf("%s (%s detector), score %v, confidence %v", [_what, _detector, _round2(score), _round2(confidence)])

_label_names := {
	"distillation.capability_sweep": "capability sweep",
	"distillation.cot_elicitation": "chain-of-thought elicitation",
	"distillation.key_farm": "many keys per org",
	"distillation.ip_rotation": "IP rotation",
	"distillation.high_volume": "distillation-scale volume",
}

_what := concat(" + ", sort(names)) if {
	names := {_label_names[label] | some label in labels}
	count(names) > 0
} else := "suspicious usage"

_detector := name if {
	name := _text(["detector", "name"])
} else := "unknown"

_text(path) := value if {
	value := object.get(input, array.concat(["verdict"], path), null)
	is_string(value)
	value != ""
}

_number(path) := value if {
	value := object.get(input, array.concat(["verdict"], path), 0)
	is_number(value)
} else := 0

_array(path) := value if {
	value := object.get(input, array.concat(["verdict"], path), [])
	is_array(value)
} else := []

_round2(x) := round(x * 100) / 100
