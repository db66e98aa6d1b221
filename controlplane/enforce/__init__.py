"""Enforce: connectors keep each gateway in step with the desired state (active actions)."""
