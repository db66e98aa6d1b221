"""Small helpers shared by the AWS, Envoy, Kong and Cloudflare connectors.

Kept private to `connectors` and free of Tollgate's domain (only the SDK), so each
connector stays a module that sees nothing but `controlplane.enforce.sdk`: option
parsing whose errors name the option, a write-rate limiter, and bounded retries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from controlplane.enforce.sdk import ConnectorError

T = TypeVar("T")


def bad_option(message: str) -> ConnectorError:
    """A configuration error: retrying cannot help, the file must be fixed."""
    return ConnectorError(message, retryable=False)


def parse_options(cls: type[T], where: str, options: Mapping[str, Any], **defaults: Any) -> T:
    """`options` as the dataclass `cls`, each value checked against the field's type; an
    unknown option or a value of the wrong type is an error naming the option.
    `defaults` override the fields' own defaults (e.g. from `timeout_seconds`)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(options) - set(fields)
    if unknown:
        raise bad_option(f"{where}: unknown option(s) {sorted(unknown)}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = dict(defaults)
    for name, value in options.items():
        values[name] = _checked(f"{where}: option {name}", hints[name], value)
    missing = [
        name
        for name, f in fields.items()
        if name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise bad_option(f"{where}: option(s) {sorted(missing)} required")
    return cls(**values)


def _checked(where: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad_option(f"{where} must be a number")
        return float(value)
    if hint is int or hint is bool or hint is str:
        if type(value) is not hint:
            raise bad_option(f"{where} must be a {hint.__name__}")
        return value
    if origin in (dict, Mapping) or (origin is not None and origin.__name__ == "Mapping"):
        key_type, value_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise bad_option(f"{where} must be a mapping")
        return {
            _checked(f"{where} key {k!r}", key_type, k): _checked(f"{where}[{k!r}]", value_type, v)
            for k, v in value.items()
        }
    if origin in (tuple, list):
        (item_type, *_) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise bad_option(f"{where} must be a list")
        return tuple(_checked(f"{where}[{i}]", item_type, v) for i, v in enumerate(value))
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise bad_option(f"{where} must be one of {list(typing.get_args(hint))}")
        return value
    if isinstance(hint, types.UnionType):
        raise TypeError(f"{where}: union options are not supported")
    return value


def positive(where: str, value: float, most: float | None = None) -> None:
    if value <= 0 or (most is not None and value > most):
        bound = f" and at most {most:g}" if most is not None else ""
        raise bad_option(f"{where} must be more than 0{bound}, got {value:g}")


class WriteRate:
    """A token bucket: at most `per_second` writes on average, `burst` at once.

    Shared by every connector of one process that writes to the same account and region
    (see `for_scope`), since the gateway's quota is per account and region, not per
    connector. Thread-safe: followers run in worker threads with their own loops."""

    _shared: dict[tuple[str, ...], WriteRate] = {}
    _registry_lock = threading.Lock()

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()
        self.waited_seconds = 0.0

    @classmethod
    def for_scope(cls, scope: tuple[str, ...], per_second: float, burst: int) -> WriteRate:
        with cls._registry_lock:
            limiter = cls._shared.get(scope)
            if limiter is None:
                limiter = cls._shared[scope] = cls(per_second, burst)
            else:  # the strictest configuration of that scope wins
                limiter.per_second = min(limiter.per_second, per_second)
                limiter.burst = min(limiter.burst, float(burst))
            return limiter

    def _take(self) -> float:
        """Take a token; the seconds to wait before the write may go (0: at once)."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.per_second)
            self._stamp = now
            self._tokens -= 1.0
            if self._tokens >= 0:
                return 0.0
            return -self._tokens / self.per_second

    async def acquire(self) -> None:
        wait = self._take()
        if wait > 0:
            self.waited_seconds += wait
            await asyncio.sleep(wait)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    retry_on: Callable[[Exception], bool],
    base_delay: float = 0.1,
    max_delay: float = 2.0,
) -> T:
    """`call()` up to `attempts` times while `retry_on(error)` says so, with exponential
    backoff and full jitter between tries; the last error is raised."""
    for attempt in range(attempts):
        try:
            return await call()
        except Exception as exc:
            if attempt == attempts - 1 or not retry_on(exc):
                raise
            await asyncio.sleep(random.uniform(0, min(max_delay, base_delay * 2**attempt)))
    raise AssertionError("unreachable")  # attempts >= 1
