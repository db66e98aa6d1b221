# METADATA
# title: Graduated response
# description: |
#   Escalates with the evidence: a first qualifying verdict rate-limits the
#   API key; a repeat (an earlier qualifying verdict in 30 days, or an active
#   graduated action on the same key, account or org) or a severe capability
#   sweep flags the account for review and either revokes the key, when the
#   evidence is hard (key or IP rotation, or severe verdicts from two
#   detectors), or holds it to a tighter limit. A score alone never revokes:
#   evaluation researchers and batch processors score high on sweep and
#   volume detectors too. Verdicts below the score or confidence bar get
#   nothing, however often they recur.
# custom:
#   owner: abuse-engineering
package tollgate.graduated

import data.tollgate.config
import data.tollgate.signals
import data.tollgate.verdict

# METADATA
# title: actions
# description: Every action the graduated response asks for on this verdict.
# custom:
#   owner: abuse-engineering
actions := (((first_offense | repeat_offense) | severe_sweep) | (repeat_throttle | keyless_escalation)) | (account_review | org_review)

# METADATA
# title: first_offense
# description: |
#   First qualifying verdict: rate-limit the API key, or the account when the
#   verdict names no key.
# custom:
#   owner: abuse-engineering
first_offense contains action if {
	_qualifies
	not _escalated
	action := {
		"type": "rate_limit",
		"target": _limit_target,
		"params": object.filter(_settings.first_offense, {"requests_per_minute", "tokens_per_minute"}),
		"ttl": _settings.first_offense.ttl,
		"rule": "graduated.first_offense",
		"reason": sprintf("first offense: %s; limited to %v requests/min for %s", [
			verdict.summary,
			_settings.first_offense.requests_per_minute,
			_settings.first_offense.ttl,
		]),
	}
}

# METADATA
# title: repeat_offense
# description: A qualifying verdict on a subject seen before, with hard evidence, revokes the API key.
# custom:
#   owner: abuse-engineering
repeat_offense contains action if {
	_qualifies
	_repeat
	_hard_evidence
	action := _revoke(sprintf("repeat offense (%s): %s", [_repeat_evidence, verdict.summary]), "graduated.repeat_offense")
}

# METADATA
# title: severe_sweep
# description: |
#   A first verdict severe enough to skip the rate limit (a capability sweep
#   at or above sweep_score, or any verdict at or above severe_score) revokes
#   the API key at once.
# custom:
#   owner: abuse-engineering
severe_sweep contains action if {
	_qualifies
	_severe
	not _repeat
	_hard_evidence
	action := _revoke(sprintf("severe: %s", [verdict.summary]), "graduated.severe_sweep")
}

# METADATA
# title: repeat_throttle
# description: |
#   An escalation without hard evidence (a researcher's or a batch job's
#   noisy high scores look like this) holds the key to a tighter limit
#   instead of revoking it; account_review asks a human to look.
# custom:
#   owner: abuse-engineering
repeat_throttle contains action if {
	_qualifies
	_escalated
	not _hard_evidence
	action := {
		"type": "rate_limit",
		"target": {"kind": "api_key", "value": verdict.api_key_id},
		"params": object.filter(_settings.repeat_throttle, {"requests_per_minute", "tokens_per_minute"}),
		"ttl": _settings.repeat_throttle.ttl,
		"rule": "graduated.repeat_throttle",
		"reason": sprintf("escalated (%s) without an operation's structure: %s; limited to %v requests/min for %s", [
			_escalation_cause,
			verdict.summary,
			_settings.repeat_throttle.requests_per_minute,
			_settings.repeat_throttle.ttl,
		]),
	}
}

# METADATA
# title: keyless_escalation
# description: |
#   An escalation on a verdict that names no API key cannot revoke one:
#   throttle the account hard instead (and account_review flags it).
# custom:
#   owner: abuse-engineering
keyless_escalation contains action if {
	_qualifies
	_escalated
	not verdict.api_key_id
	action := {
		"type": "rate_limit",
		"target": {"kind": "account", "value": verdict.account_id},
		"params": object.filter(_settings.keyless, {"requests_per_minute", "tokens_per_minute"}),
		"ttl": _settings.keyless.ttl,
		"rule": "graduated.keyless_escalation",
		"reason": sprintf("escalation without an API key to revoke: %s; account limited to %v requests/min for %s", [
			verdict.summary,
			_settings.keyless.requests_per_minute,
			_settings.keyless.ttl,
		]),
	}
}

# METADATA
# title: account_review
# description: Every escalation (repeat or severe) flags the account for a human review.
# custom:
#   owner: abuse-engineering
account_review contains action if {
	_qualifies
	_escalated
	action := _review({"kind": "account", "value": verdict.account_id}, "graduated.account_review", sprintf(
		"escalated (%s): %s; review the account for distillation",
		[_escalation_cause, verdict.summary],
	))
}

# METADATA
# title: org_review
# description: A qualifying many-keys-per-org verdict flags the organisation for review.
# custom:
#   owner: abuse-engineering
org_review contains action if {
	_qualifies
	"distillation.key_farm" in verdict.labels
	action := _review({"kind": "org", "value": verdict.org_id}, "graduated.org_review", sprintf(
		"%s; review every account and key of the organisation",
		[verdict.summary],
	))
}

_settings := config.settings.graduated

_qualifies if {
	verdict.score >= _settings.min_score
	verdict.confidence >= _settings.min_confidence
}

_severe if {
	"distillation.capability_sweep" in verdict.labels
	verdict.score >= _settings.sweep_score
}

_severe if verdict.score >= _settings.severe_score

_repeat if _prior_verdicts >= _settings.repeat_after_verdicts

_repeat if count(_active_graduated) > 0

_escalated if _repeat

# Evidence that justifies refusing traffic: the account or org rotates keys or
# a proxy pool's networks (an operation's structure; an end-user population's
# address spread is not rotation, see tollgate.signals), or severe verdicts from
# at least severe_detectors different detectors agree.
_hard_evidence if signals.structure

_hard_evidence if {
	verdict.score >= _settings.severe_score
	count(_severe_detectors) >= _settings.severe_detectors
}

_severe_detectors contains name if {
	some v in _array(object.get(input, ["history", "recent_verdicts"], []))
	is_number(v.score)
	v.score >= _settings.severe_score
	name := v.detector
}

_severe_detectors contains object.get(input, ["verdict", "detector", "name"], "unknown")

_escalated if _severe

_escalation_cause := "repeat" if {
	_repeat
} else := "severe"

_repeat_evidence := sprintf("earlier qualifying verdicts in 30 days: %v, active graduated actions: %v", [
	_prior_verdicts,
	count(_active_graduated),
])

# Active actions that an earlier graduated decision asked for on this
# verdict's key, account or org: the subject is already under the response.
_active_graduated contains action if {
	some action in _array(object.get(input, ["history", "active_actions"], []))
	startswith(object.get(action, "rule", ""), "graduated.")
	{"kind": object.get(action, ["target", "kind"], null), "value": object.get(action, ["target", "value"], null)} in verdict.targets
}

# Earlier verdicts in 30 days that cleared the same bar: a legitimate heavy
# user's many low-score verdicts never make a later one a repeat.
_prior_verdicts := count([v |
	some v in object.get(input, ["history", "recent_verdicts"], [])
	is_number(v.score)
	is_number(v.confidence)
	v.score >= _settings.min_score
	v.confidence >= _settings.min_confidence
])

_limit_target := {"kind": "api_key", "value": verdict.api_key_id} if {
	verdict.api_key_id
} else := {"kind": "account", "value": verdict.account_id}

_revoke(reason, rule) := {
	"type": "revoke_key",
	"target": {"kind": "api_key", "value": verdict.api_key_id},
	"params": {},
	"ttl": _settings.revoke.ttl,
	"rule": rule,
	"reason": sprintf("%s; key revoked for %s", [reason, _ttl_text(_settings.revoke.ttl)]),
}

_review(target, rule, reason) := {
	"type": "flag_review",
	"target": target,
	"params": {},
	"ttl": null,
	"rule": rule,
	"reason": reason,
}

_ttl_text(null) := "good"

_ttl_text(ttl) := ttl if ttl != null

_array(value) := value if {
	is_array(value)
} else := []
