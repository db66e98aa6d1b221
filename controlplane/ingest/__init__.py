"""Ingest: verdicts are validated, stored durably, acknowledged and handed to evaluate."""
