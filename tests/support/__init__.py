"""Helpers shared by the test suite: databases, a running app, verdicts, store queries."""
