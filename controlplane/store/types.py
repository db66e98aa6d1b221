"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import msgspec
from sqlalchemy import JSON, DateTime, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

JSONDocument = JSON().with_variant(JSONB(), "postgresql")


def json_text(value: Any) -> str:
    """A JSON column's text (the engines' serializer): msgspec's encoder, several times
    faster than `json.dumps`; what it refuses (keys that are not strings or numbers,
    lone surrogates) goes to `json.dumps` as before. NaN is stored as null."""
    try:
        return _encode(value).decode()
    except (TypeError, UnicodeEncodeError, msgspec.EncodeError):
        return json.dumps(value)


def json_value(text: str | bytes) -> Any:
    """A JSON column's value (the engines' deserializer); `json.loads` for what msgspec
    refuses (NaN written by older versions)."""
    try:
        return _decode(text)
    except msgspec.DecodeError:
        return json.loads(text)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes everywhere; SQLite keeps them naive in UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]

    # On SQLite a value goes through this type and then the dialect's DATETIME, each
    # with its own conversions (~3 µs a value, the largest cost of a bulk insert); these
    # do both in one step, to and from the same text ("2026-11-26 12:00:00.123456").

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _to_sqlite_text
        return super().bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _from_sqlite_text
        return super().result_processor(dialect, coltype)


@lru_cache(maxsize=4096)
def _to_sqlite_text(value: datetime | None) -> str | None:
    """Cached: a group's rows carry the same few moments (its `now`, its arrival) in
    thousands of columns; equal instants have one UTC text whatever their offset."""
    if value is None:
        return None
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("naive datetime given to a UTC column")
    if offset:
        value = value.astimezone(UTC)
    # "2026-11-26 12:00:00.123456+00:00" less the offset: the dialect's own format.
    return value.isoformat(" ", "microseconds")[:-6]


@lru_cache(maxsize=4096)
def _from_sqlite_text(value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)
