"""Evaluate: a verdict plus its subject's history and context becomes a decision."""
