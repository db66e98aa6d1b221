"""Request bodies: every JSON endpoint reads its body through `decode`, once.

litestar's own decoding takes any content type as JSON and lets a deep body exhaust the
stack (a 500); Python's `json` reads NaN, infinities and lone surrogates. Here a body is
JSON only when it says so (else 415), is bounded in size (413), and holds only values
that can be stored and evaluated (else 422 naming each bad one): see `domain.jsonsafe`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar._signature.types import ExtendedMsgSpecValidationError
from litestar.plugins.pydantic import PydanticInitPlugin
from litestar.types import Empty
from pydantic import BaseModel, ValidationError

from controlplane.domain import jsonsafe
from controlplane.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

MAX_BODY = 16 * 1024 * 1024
"""Largest request body, in bytes (a batch of 1,000 verdicts with evidence fits)."""

Model = TypeVar("Model", bound=BaseModel)


def is_json(content_type: str) -> bool:
    """`application/json` or a `+json` type such as `application/merge-patch+json`."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def decode(raw: bytes, content_type: str) -> Any:
    """The JSON value of a request body, or the TollgateError that says what was wrong."""
    if not is_json(content_type):
        raise UnsupportedMediaType(
            f"send the body as application/json (it was {content_type or 'not labelled'})"
        )
    if len(raw) > MAX_BODY:
        raise PayloadTooLarge(f"body is over {MAX_BODY // 1024 // 1024} MiB: send smaller batches")
    try:
        value = json.loads(raw)
    except RecursionError:
        raise InvalidInput(
            "body is nested too deeply; nothing was stored",
            details=[
                {"field": "body", "message": f"nested deeper than {jsonsafe.MAX_DEPTH} levels"}
            ],
        ) from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise InvalidInput(f"body is not valid JSON: {exc}") from None
    found = jsonsafe.problems(value)
    if found:
        raise InvalidInput(f"{len(found)} invalid value(s); nothing was stored", details=found)
    return value


def validate(model: type[Model], value: Any) -> Model:
    """A decoded body as `model`, by the rules its JSON Schema states: pydantic's strict
    JSON mode (no string or boolean for a number, no number for a date), where its
    default would take `"0.5"` or `true` for a score and the document would lie. `value`
    is a body as `decode` gives it: its numbers finite, its strings real text."""
    try:
        text = _encode(value)  # several times json.dumps's speed, on a decoded body
    except (TypeError, OverflowError, msgspec.EncodeError):
        text = json.dumps(value, allow_nan=False).encode()  # what msgspec refuses
    return model.model_validate_json(text, strict=True)


_encode = msgspec.json.Encoder().encode


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _decode(model: type[BaseModel], value: Any) -> BaseModel:
    try:
        return validate(model, value)
    except ValidationError as exc:
        # The error litestar turns into per-field details (as its own decoder does).
        raise ExtendedMsgSpecValidationError(
            errors=[dict(e) for e in exc.errors(include_url=False)]
        ) from exc


class StrictPydantic(PydanticInitPlugin):
    """litestar's pydantic support, with `validate` deciding a handler's pydantic `data`
    (litestar's own decoder, first otherwise, validates lax)."""

    @classmethod
    def decoders(
        cls, validate_strict: bool = False
    ) -> list[tuple[Callable[[Any], bool], Callable[[Any, Any], Any]]]:
        return [(_is_model, _decode), *super().decoders(validate_strict)]


class JSONRequest(Request[Any, Any, Any]):
    """The app's request class: `json()` (what litestar's body parameters read) decodes
    with `decode`."""

    async def json(self) -> Any:
        if self._json is Empty:
            self._json = self._connection_state.json = decode(
                await self.body(), self.headers.get("content-type", "")
            )
        return self._json
