"""Remedy: people undoing mistakes (reviews of withheld hard actions, appeals, exemptions)."""
