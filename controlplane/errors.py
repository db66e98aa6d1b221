"""One exception hierarchy. Each error carries its HTTP status; the API maps it in one place."""

from __future__ import annotations

from typing import Any


class TollgateError(Exception):
    """Root of Tollgate's errors. `message` says what was wrong and what to do."""

    status_code = 500
    code = "internal_error"
    retry_after: int | None = None
    """Seconds a client should wait before retrying (sent as `Retry-After`), when it may."""

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidInput(TollgateError):
    """Input failed validation; `details` lists `{field, message}` per problem."""

    status_code = 422
    code = "invalid_input"


class PayloadTooLarge(TollgateError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(TollgateError):
    status_code = 415
    code = "unsupported_media_type"


class NotFound(TollgateError):
    status_code = 404
    code = "not_found"


class Conflict(TollgateError):
    status_code = 409
    code = "conflict"


class PolicyError(TollgateError):
    """A policy failed to load, compile or evaluate."""

    status_code = 500
    code = "policy_error"


class EngineUnavailable(TollgateError):
    """The policy engine cannot be used (not installed, or no revision loaded)."""

    status_code = 503
    code = "engine_unavailable"
    retry_after = 5


class StoreUnavailable(TollgateError):
    """The database cannot be reached (down, restarting, or its file cannot be opened):
    nothing was done, and the same request may succeed once it is back."""

    status_code = 503
    code = "database_unavailable"
    retry_after = 5


class ServiceUnavailable(TollgateError):
    """A part of Tollgate this request needs is not running here now; try again."""

    status_code = 503
    code = "unavailable"


class DecisionFailed(TollgateError):
    """Deciding stored verdicts failed for a reason of the server's own (a bug, not a
    policy error): the verdicts are kept and decided again on retry or recovery."""

    status_code = 500
    code = "decision_failed"


class Forbidden(TollgateError):
    """The caller's role may do this in general, but not this time (and why)."""

    status_code = 403
    code = "forbidden"
