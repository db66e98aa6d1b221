"""Exemptions: allowlisted subjects; policies see them as `context.exempt`."""
