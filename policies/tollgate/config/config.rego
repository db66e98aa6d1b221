# METADATA
# title: Provider settings
# description: |
#   Thresholds, limits and TTLs for the verdict's provider: the defaults in
#   data.tollgate.settings.default, deep-merged with the provider's overrides
#   in data.tollgate.settings.providers[provider].
# custom:
#   owner: policy-platform
package tollgate.config

import data.tollgate.verdict

# METADATA
# title: settings
# description: Effective settings for input.verdict.provider (defaults when the provider has no overrides).
# custom:
#   owner: policy-platform
settings := object.union(data.tollgate.settings.default, _overrides)

_overrides := overrides if {
	overrides := data.tollgate.settings.providers[verdict.provider]
	is_object(overrides)
} else := {}
