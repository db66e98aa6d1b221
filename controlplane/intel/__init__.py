"""Shared attribution intel: indicators that policies see as `context.intel_matches`."""
