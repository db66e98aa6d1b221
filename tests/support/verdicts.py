"""Verdict documents for tests. Every subject is new unless one is passed in, so tests
sharing a database never see each other's history."""

from __future__ import annotations

import secrets
from typing import Any

OBSERVED_AT = "2026-11-26T12:00:00Z"


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(5)}"


def new_subject(*, ips: list[str] | None = None, org: bool = True) -> dict[str, Any]:
    """A subject nobody has reported yet."""
    tag = secrets.token_hex(5)
    subject: dict[str, Any] = {"account_id": f"acct_{tag}", "api_key_id": f"key_{tag}"}
    if org:
        subject["org_id"] = f"org_{tag}"
    subject["ips"] = ips if ips is not None else ["192.0.2.10"]
    return subject


def verdict(
    *,
    subject: dict[str, Any] | None = None,
    score: float = 0.78,
    confidence: float = 0.8,
    provider: str = "lab-a",
    labels: list[str] | None = None,
    observed_at: str = OBSERVED_AT,
    **extra: Any,
) -> dict[str, Any]:
    """A verdict document. The defaults qualify for the graduated response but are not
    severe: a first one rate-limits the key, a repeat revokes it (its addresses rotate
    and its prompts are templated sweeps eliciting reasoning: an operation's signals)."""
    document: dict[str, Any] = {
        "id": unique("v"),
        "provider": provider,
        "detector": {"name": "sweep", "version": "1.4.0"},
        "observed_at": observed_at,
        "subject": subject if subject is not None else new_subject(),
        "score": score,
        "confidence": confidence,
        "signals": {"requests_24h": 400000, "prompt_template_reuse": 0.83, "distinct_ips_24h": 25},
        "labels": labels if labels is not None else [],
    }
    document.update(extra)
    return document


def legitimate(**kwargs: Any) -> dict[str, Any]:
    """A verdict below the bar: the bundled policies ask for nothing."""
    return verdict(score=0.2, **kwargs)


def action_types(result: dict[str, Any]) -> list[str]:
    """Sorted action types of one entry of an ingest response's `results`."""
    return sorted(a["type"] for a in result["actions"])


DESIGN_VERDICT: dict[str, Any] = {
    "id": "v-1",
    "provider": "lab-a",
    "score": 0.93,
    "confidence": 0.8,
    "detector": {"name": "sweep", "version": "1.4.0"},
    "subject": {
        "account_id": "acct_9",
        "api_key_id": "key_3",
        "org_id": "org_7",
        "ips": ["203.0.113.7"],
    },
    "signals": {"requests_24h": 1200000, "prompt_template_reuse": 0.91},
    "labels": ["distillation.capability_sweep"],
    "observed_at": "2026-11-26T12:00:00Z",
}
"""The verdict of DESIGN.md, "The policy contract" (copy it before changing it)."""


def operation_verdict(account: str, key: str, org: str, ip: str) -> dict[str, Any]:
    """What a sweep detector says of one key of an operation: templated capability sweep."""
    return verdict(
        subject={"account_id": account, "api_key_id": key, "org_id": org, "ips": [ip]},
        score=0.86,
        confidence=0.85,
        labels=["distillation.capability_sweep"],
        signals={"requests_24h": 900000, "prompt_template_reuse": 0.9, "capability_coverage": 0.93},
    )
