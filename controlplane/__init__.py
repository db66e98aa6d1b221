"""Tollgate: a policy-as-code enforcement control plane against adversarial distillation."""

__version__ = "0.1.0"
