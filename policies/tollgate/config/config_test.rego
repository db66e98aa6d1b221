package tollgate.config_test

import data.tollgate.config

test_default_provider_uses_defaults if {
	s := config.settings with input as {"verdict": {"provider": "lab-a"}}
	s.graduated.first_offense.requests_per_minute == 60
	s.intel.min_confidence == 0.8
}

test_unknown_provider_uses_defaults if {
	s := config.settings with input as {"verdict": {"provider": "lab-z"}}
	s.graduated.min_score == 0.7
}

test_provider_override_is_deep_merged if {
	s := config.settings with input as {"verdict": {"provider": "lab-b"}}
	s.graduated.first_offense.requests_per_minute == 30
	s.graduated.first_offense.ttl == "24h"
	s.graduated.min_score == 0.7
}

test_overrides_from_data if {
	s := config.settings with input as {"verdict": {"provider": "lab-x"}}
		with data.tollgate.settings.providers as {"lab-x": {"intel": {"min_confidence": 0.95}}}
	s.intel.min_confidence == 0.95
	s.intel.ttl == "7d"
}
