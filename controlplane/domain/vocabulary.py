"""Enumerations of DESIGN.md's vocabulary, shared by API, policies and store."""

from __future__ import annotations

from enum import StrEnum


class SubjectKind(StrEnum):
    """Whom an action targets."""

    ACCOUNT = "account"
    API_KEY = "api_key"
    IP = "ip"
    CIDR = "cidr"
    ORG = "org"


class ActionType(StrEnum):
    RATE_LIMIT = "rate_limit"
    REVOKE_KEY = "revoke_key"
    BLOCK = "block"
    SUSPEND = "suspend"
    """Refuse every request of an account or organisation, whatever key or IP it uses."""
    FLAG_REVIEW = "flag_review"


class ActionState(StrEnum):
    PENDING = "pending"
    APPLIED = "applied"
    EXPIRED = "expired"
    LIFTED = "lifted"
    FAILED = "failed"


ACTIVE_STATES = (ActionState.PENDING, ActionState.APPLIED, ActionState.FAILED)
"""States in which an action is still desired at the gateway."""


class VerdictStatus(StrEnum):
    RECEIVED = "received"
    """Stored and acknowledged; not yet decided (decided at once, or on recovery after a crash)."""
    DECIDED = "decided"


class DecisionStatus(StrEnum):
    OK = "ok"
    ERROR = "error"
    """The policy failed or returned malformed output: recorded, no actions planned."""


# Which subject kinds each action type may target.
ACTION_TARGETS: dict[ActionType, frozenset[SubjectKind]] = {
    ActionType.RATE_LIMIT: frozenset({SubjectKind.API_KEY, SubjectKind.ACCOUNT, SubjectKind.ORG}),
    ActionType.REVOKE_KEY: frozenset({SubjectKind.API_KEY}),
    ActionType.BLOCK: frozenset({SubjectKind.IP, SubjectKind.CIDR}),
    ActionType.SUSPEND: frozenset({SubjectKind.ACCOUNT, SubjectKind.ORG}),
    ActionType.FLAG_REVIEW: frozenset(SubjectKind),
}

# What counts a key or an account as acted on (`history.*.keys_acted_on`,
# `accounts_acted_on`): the sighting kind -> the action type that must be active on it.
ACTED_ON: dict[str, str] = {
    SubjectKind.API_KEY.value: ActionType.REVOKE_KEY.value,
    SubjectKind.ACCOUNT.value: ActionType.SUSPEND.value,
}
