# METADATA
# title: Signals
# description: |
#   Everything a verdict and its history say about how an account behaves, read
#   once and named: key fan-out per account and org, IP rotation, prompt
#   template reuse, capability coverage, chain-of-thought elicitation, volume,
#   labels, and what was already done to the account's keys and the org's
#   accounts. No actions: the enforcing packages read these facts, so every
#   rule weighs the same evidence the same way. Thresholds are policy data
#   (data.tollgate.settings.default.signals).
#
#   The separation it draws: a distillation operation combines operation
#   structure (many keys, many networks) with distillation content (templated
#   prompts, capability sweeps, reasoning elicitation). Evaluation researchers
#   show the content (broad coverage, templates, chain of thought) without the
#   structure; document processors show volume and templates without either.
# custom:
#   owner: abuse-engineering
package tollgate.signals

import data.tollgate.config
import data.tollgate.verdict

# METADATA
# title: keys_per_account
# description: Distinct keys of the verdict's account, from the detector or Tollgate's own count, whichever is larger.
# custom:
#   owner: abuse-engineering
keys_per_account := max([_signal("keys_per_account"), _history("account", "keys_seen")])

# METADATA
# title: keys_per_org
# description: Distinct keys of the verdict's organisation (detector's count or Tollgate's).
# custom:
#   owner: abuse-engineering
keys_per_org := max([_signal("keys_per_org"), _history("org", "keys_seen")])

# METADATA
# title: networks
# description: Distinct /24 (IPv4) or /48 (IPv6) networks the account was seen from, this verdict's included.
# custom:
#   owner: abuse-engineering
networks := max([_history("account", "networks_seen"), _signal("distinct_networks_24h")])

# METADATA
# title: account_keys_acted_on
# description: Keys of the verdict's account that are revoked now.
# custom:
#   owner: abuse-engineering
account_keys_acted_on := _history("account", "keys_acted_on")

# METADATA
# title: org_accounts_acted_on
# description: Accounts of the verdict's organisation that are suspended now.
# custom:
#   owner: abuse-engineering
org_accounts_acted_on := _history("org", "accounts_acted_on")

# METADATA
# title: org_accounts_seen
# description: Distinct accounts of the verdict's organisation seen in verdicts.
# custom:
#   owner: abuse-engineering
org_accounts_seen := _history("org", "accounts_seen")

# METADATA
# title: key_rotation
# description: The account or org spreads its traffic over more keys than an application needs.
# custom:
#   owner: abuse-engineering
key_rotation if keys_per_account >= _s.key_rotation.account_keys

key_rotation if keys_per_org >= _s.key_rotation.org_keys

key_rotation if "distillation.key_farm" in verdict.labels

# METADATA
# title: ip_rotation
# description: The account comes from more networks (or addresses) than a service behind a few egress points does.
# custom:
#   owner: abuse-engineering
ip_rotation if {
	networks >= _s.ip_rotation.networks
	not end_user_spread
}

ip_rotation if {
	_signal("distinct_ips_24h") >= _s.ip_rotation.distinct_ips_24h
	not end_user_spread
}

ip_rotation if "distillation.ip_rotation" in verdict.labels

# METADATA
# title: both_rotating
# description: |
#   The account rotates keys and networks at once, each below its own threshold
#   (a second key and a second network): early structure, which counts only with
#   the complete distillation content (operation). An application behind many
#   end users' addresses is not rotating.
# custom:
#   owner: abuse-engineering
both_rotating if {
	keys_per_account >= _s.both_rotating.account_keys
	networks >= _s.both_rotating.networks
	not end_user_spread
}

# METADATA
# title: end_user_spread
# description: |
#   Addresses spread like an application's end users (hundreds or more a day,
#   from everywhere), not like an operation's proxy pool of a few ranges: not
#   IP rotation. A detector's ip_rotation label still counts.
# custom:
#   owner: abuse-engineering
end_user_spread if _signal("distinct_ips_24h") >= _s.ip_rotation.end_user_ips

# METADATA
# title: templated
# description: Most prompts fill one template (extraction at scale; also batch processing).
# custom:
#   owner: abuse-engineering
templated if _signal("prompt_template_reuse") >= _s.templated

# METADATA
# title: sweeping
# description: Prompts sweep the model's capability areas (extraction; also benchmark runs).
# custom:
#   owner: abuse-engineering
sweeping if _signal("capability_coverage") >= _s.sweeping

sweeping if "distillation.capability_sweep" in verdict.labels

# METADATA
# title: eliciting
# description: Prompts ask for the model's reasoning (training data for a student's reasoning).
# custom:
#   owner: abuse-engineering
eliciting if _signal("cot_request_ratio") >= _s.eliciting

eliciting if "distillation.cot_elicitation" in verdict.labels

# METADATA
# title: heavy
# description: Distillation-scale volume over 24 hours (so is a large customer's).
# custom:
#   owner: abuse-engineering
heavy if _signal("requests_24h") >= _s.heavy_requests_24h

# METADATA
# title: content
# description: How many kinds of distillation content the verdict shows (templated, sweeping, eliciting).
# custom:
#   owner: abuse-engineering
content := count([1 | templated]) + count([1 | sweeping]) + count([1 | eliciting])

# METADATA
# title: structure
# description: The account or org rotates keys or networks.
# custom:
#   owner: abuse-engineering
structure if key_rotation

structure if ip_rotation

# METADATA
# title: operation
# description: |
#   A distillation operation: a qualifying verdict with key rotation and any
#   distillation content, or with IP rotation and two kinds of content (IP
#   rotation alone is also what a mobile app's users look like), or rotating
#   keys and networks together (a second of each) with all three kinds of
#   content: an operation that rotates slowly is caught at its second key
#   rather than its third. One key, or one network, is never enough: an
#   evaluation researcher shows all three kinds of content from one place.
# custom:
#   owner: abuse-engineering
operation if {
	_qualifies
	key_rotation
	content >= 1
}

operation if {
	_qualifies
	ip_rotation
	content >= 2
}

operation if {
	_qualifies
	both_rotating
	content == 3
}

# METADATA
# title: profile
# description: The population the verdict looks like, for reasons and dashboards.
# custom:
#   owner: abuse-engineering
profile := "distillation operation" if {
	operation
} else := "evaluation research" if {
	sweeping
} else := "document processing" if {
	heavy
} else := "application"

# METADATA
# title: describe
# description: One line of the signals behind an operation decision, for action reasons.
# custom:
#   owner: abuse-engineering
describe := sprintf("%v keys on the account, %v on the org, %v networks, template reuse %v, coverage %v, CoT %v", [
	keys_per_account,
	keys_per_org,
	networks,
	_signal("prompt_template_reuse"),
	_signal("capability_coverage"),
	_signal("cot_request_ratio"),
])

_s := config.settings.signals

_qualifies if {
	verdict.score >= _s.min_score
	verdict.confidence >= _s.min_confidence
}

_signal(name) := value if {
	value := input.verdict.signals[name]
	is_number(value)
} else := 0

_history(scope, name) := value if {
	value := input.history[scope][name]
	is_number(value)
} else := 0
