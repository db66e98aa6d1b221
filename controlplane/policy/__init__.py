"""Policies as code: checking, testing and (later) activating Rego revisions."""
