"""One exception hierarchy. Each error carries its HTTP status; the API maps it in one place."""

from __future__ import annotations

from typing import Any


class TollgateError(Exception):
    """Root of Tollgate's errors. `message` says what was wrong and what to do."""

    status_code = 500
    code = "internal_error"

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


class ServiceUnavailable(TollgateError):
    """A part of Tollgate this request needs is not running here now; try again."""

    status_code = 503
    code = "unavailable"


class Forbidden(TollgateError):
    """The caller is known but may not read or do this."""

    status_code = 403
    code = "forbidden"
