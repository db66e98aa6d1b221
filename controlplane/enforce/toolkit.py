"""The connector toolkit: what every connector needs and none should write again.

- **Canonical targets**: `rendered(entry, floor)` is the value to send (or `Refused`
  saying why not), `observed(kind, raw)` reads back what a gateway holds in Tollgate's
  one spelling, both on `controlplane.enforce.targets`; `observed_once(kind, raw)` is
  the same for a survey of everything a gateway holds (no cache, a fast path for
  addresses and networks already spelled as Tollgate spells them).
- **Atomic files**: `atomic_write(path, data)` replaces a file that a gateway loads so
  that a reload reads the old content or the new, never half (temp file + fsync +
  rename + directory fsync), keeping the old file's mode and owner; `data` may be a
  sequence of parts, so a large file is written without being joined first.
- **Options**: `parse_options(Options, where, config.options)` turns `options:` from
  tollgate.yaml into a frozen dataclass, refusing unknown names, wrong types and values
  out of range (`bounded`, `positive` fields) with a `ConnectorError` naming the option
  (`connector edge: options.x ...`, the `where` being `connector edge: options`);
  `option_error` words a connector's own checks the same way.
- **Gateway APIs**: `WriteRate`, a token bucket shared by the connectors that write to
  one account's quota, and `with_retries`, bounded retries with jittered backoff.
- **Memory**: `release_freed_memory()` hands what the C allocator freed back to the
  system after a large survey (a million entries read, parsed and let go).
- **Mapping tables**: `Terms` maps Tollgate's entry types and target kinds to a
  gateway's words both ways (libcloud's two-way tables), so a connector states once
  what it supports and reads back what a gateway says.

Like the SDK, it imports nothing of Tollgate's domain: connectors may import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import functools
import math
import os
import random
import re
import tempfile
import threading
import time
import types
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import (
    Any,
    Generic,
    Literal,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from controlplane.enforce.sdk import ConnectorError, Entry
from controlplane.enforce.targets import (
    DEFAULT_FLOOR,
    NO_FLOOR,
    PrefixFloor,
    canonical_target,
    refusal,
)

__all__ = [
    "Refused",
    "Terms",
    "WriteRate",
    "atomic_write",
    "bounded",
    "observed",
    "observed_once",
    "option_error",
    "parse_options",
    "positive",
    "rendered",
    "with_retries",
]

# -- canonical targets -------------------------------------------------------------------


class Refused(ConnectorError):
    """An entry must not reach the gateway (not canonical, or wider than the floor):
    report it in `ApplyResult.rejected` with this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


def rendered(entry: Entry, floor: PrefixFloor = DEFAULT_FLOOR) -> str:
    """The target value to send for `entry`: its canonical form, checked against the
    connector's floor (`config.min_prefix`); raises `Refused` otherwise."""
    why = refusal(entry, floor)
    if why:
        raise Refused(why)
    return entry.target_value


@functools.lru_cache(maxsize=1 << 18)
def observed(kind: str, raw: str) -> str:
    """What a gateway holds, in Tollgate's spelling (`10.0.0.7/8` -> `10.0.0.0/8`, an
    IPv4-mapped IPv6 address as IPv4), so it compares equal to the desired entry.
    Raises `ValueError` (a `TargetError`) for a value that is no target of `kind`."""
    return canonical_target(kind, raw, NO_FLOOR)


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")
"""An IPv4 address as `canonical_ip` spells it: four decimal octets without leading zeros."""
_IPV4_NETWORK = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}/(3[0-2]|[12]?[0-9])")
"""An IPv4 network spelled as `canonical_cidr` would, if its host bits are clear."""


def observed_once(kind: str, raw: str) -> str:
    """`observed(kind, raw)`, for a survey of everything a gateway holds: each value is
    read once, so nothing is cached (a million distinct values would only churn the
    cache and keep a quarter of a million of them alive), and an IPv4 address or network
    already in canonical form, what a gateway that Tollgate wrote to mostly holds, is
    returned as it is after a regular expression instead of a parse (a few times
    cheaper). Raises `ValueError` as `observed` does."""
    if kind == "ip":
        if _CANONICAL_IPV4.fullmatch(raw):
            return raw
    elif kind == "cidr":
        network = _IPV4_NETWORK.fullmatch(raw)
        if network:
            a, b, c, d, prefix = map(int, network.groups())
            if (a << 24 | b << 16 | c << 8 | d) & (0xFFFFFFFF >> prefix) == 0:
                return raw
    return canonical_target(kind, raw, NO_FLOOR)


# -- atomic files ------------------------------------------------------------------------


def atomic_write(
    path: Path | str, data: bytes | str | Iterable[bytes], *, mode: int = 0o644
) -> None:
    """Replace `path` with `data` atomically and durably: a reader (a gateway's reload)
    sees the old file or the new one, never half of one, and a crash after return keeps
    the new one. An existing file's mode and owner are kept; a new one gets `mode`.
    `data` may come in parts (bytes, written one after the other): a file of millions
    of lines then never exists whole in memory, and a caller in a thread that builds
    each part lets the other threads run between parts. Raises `OSError` (the caller
    knows whether that is retryable)."""
    path = Path(path)
    if isinstance(data, str):
        parts: Iterable[bytes] = (data.encode("utf-8"),)
    elif isinstance(data, bytes):
        parts = (data,)
    else:
        parts = data
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            for part in parts:
                handle.write(part)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            before = path.stat()
        except FileNotFoundError:
            temp.chmod(mode)
        else:
            temp.chmod(before.st_mode & 0o7777)
            with contextlib.suppress(PermissionError):
                os.chown(temp, before.st_uid, before.st_gid)
        temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """The rename itself is durable only once the directory is."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- options -----------------------------------------------------------------------------

Options = TypeVar("Options")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] | None = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        trim = None  # not glibc: nothing to call
    return trim


def release_freed_memory() -> None:
    """Give the memory the C allocator holds free back to the system (glibc's
    `malloc_trim`; elsewhere nothing). Reading a million entries frees as much as it
    keeps (the parts of a reply, lists of lines, dict tables outgrown), spread over the
    allocator arenas of the threads that parsed them, where nothing else may reuse it:
    without this, the process keeps it resident. Takes milliseconds: call it in a
    thread, after a survey, not per entry."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def option_error(where: str, name: str, problem: str) -> ConnectorError:
    """A configuration mistake, named by its option: retrying cannot help."""
    return ConnectorError(f"{where}.{name} {problem}", retryable=False)


def bounded(default: Any, low: float, high: float) -> Any:
    """A numeric option's dataclass field, refused outside [low, high]."""
    return dataclasses.field(default=default, metadata={"range": (low, high, False)})


def positive(default: Any, most: float = math.inf) -> Any:
    """A numeric option's dataclass field, refused unless more than 0 (and at most
    `most`): a rate, a timeout, a number of tries."""
    return dataclasses.field(default=default, metadata={"range": (0, most, True)})


def _out_of_range(value: float, low: float, high: float, low_open: bool) -> str | None:
    """What is wrong with `value` against the range, or None."""
    if low_open:
        if value > low and value <= high:
            return None
        most = f" and at most {high:g}" if high != math.inf else ""
        return f"must be more than {low:g}{most}, got {value:g}"
    if low <= value <= high:
        return None
    return f"must be a number from {low:g} to {high:g}"


def parse_options(
    cls: type[Options], where: str, options: Mapping[str, Any], **defaults: Any
) -> Options:
    """`options` as a `cls` (a frozen dataclass whose fields are the options, each with
    its type and default; `bounded` ones with a range). `defaults` override the class's
    defaults (a timeout taken from the connector's, say). Refuses unknown names, missing
    required options, wrong types and values out of range, naming the option; the
    connector checks what depends on several options afterwards."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = set(options) - set(fields)
    if unknown:
        raise ConnectorError(
            f"{where}: unknown {sorted(unknown)}; unknown options are refused so that a "
            f"typo is never ignored; known: {sorted(fields)}",
            retryable=False,
        )
    hints = get_type_hints(cls)
    values = dict(defaults)
    for name, value in options.items():
        values[name] = _typed(where, name, hints[name], value)
    # Defaults given by the caller are checked too (a timeout taken from the connector's).
    for name, value in values.items():
        limits = fields[name].metadata.get("range")
        problem = _out_of_range(value, *limits) if limits is not None else None
        if problem is not None:
            raise option_error(where, name, problem)
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in values:
            raise option_error(where, name, "is required")
    return cls(**values)


def _typed(where: str, name: str, hint: Any, value: Any) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        for option in get_args(hint):
            with contextlib.suppress(ConnectorError):
                return _typed(where, name, option, value)
        raise option_error(where, name, f"must be one of: {_names(get_args(hint))}")
    if origin is Literal:
        if value not in get_args(hint) or isinstance(value, bool) != any(
            isinstance(a, bool) for a in get_args(hint)
        ):
            choices = ", ".join(repr(a) for a in get_args(hint))
            raise option_error(where, name, f"must be one of {choices}, got {value!r}")
        return value
    if origin in (dict, Mapping) or hint is dict:
        key, item = get_args(hint) or (str, Any)
        if not isinstance(value, dict):
            raise option_error(where, name, "must be a mapping")
        return {
            _typed(where, f"{name} key {k!r}", key, k): _typed(where, f"{name}[{k!r}]", item, v)
            for k, v in value.items()
        }
    if hint is Any:
        return value
    if origin is tuple:
        (item, *_) = get_args(hint)
        if not isinstance(value, list | tuple):
            raise option_error(where, name, f"must be a list of {_names((item,))}")
        return tuple(_typed(where, f"{name}[{i}]", item, v) for i, v in enumerate(value))
    if hint is type(None):
        if value is not None:
            raise option_error(where, name, "must be null")
        return None
    if hint is bool:
        if not isinstance(value, bool):
            raise option_error(where, name, "must be true or false")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise option_error(where, name, "must be a float")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise option_error(where, name, "must be an int")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise option_error(where, name, "must be a str")
        return value
    raise TypeError(f"parse_options cannot read an option of type {hint!r}")


def _names(hints: tuple[Any, ...]) -> str:
    return ", ".join(getattr(h, "__name__", str(h)) for h in hints)


# -- gateway APIs: write rates and retries ----------------------------------------------

T = TypeVar("T")


class WriteRate:
    """A token bucket: at most `per_second` writes on average, `burst` at once.

    Shared by every connector of one process that writes to the same account and region
    (see `for_scope`), since a gateway's quota is per account and region, not per
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


# -- mapping tables ----------------------------------------------------------------------

Ours = TypeVar("Ours", bound=Hashable)
Theirs = TypeVar("Theirs", bound=Hashable)


class Terms(Generic[Ours, Theirs]):
    """A one-to-one table between Tollgate's terms (an `EntryType`, a target kind, or a
    pair of them) and a gateway's (a file, a scope name, an API's enum value).

        SCOPES = Terms({"ip": "Ip", "cidr": "Range"}, fold=str.lower)
        SCOPES.theirs("cidr") == "Range"; SCOPES.ours("range") == "cidr"

    `fold` normalises the gateway's terms before they are compared (a gateway that
    does not care about case). What is not in the table is None both ways: the
    connector cannot express it, or does not know it.
    """

    def __init__(
        self, pairs: Mapping[Ours, Theirs], *, fold: Callable[[Theirs], Theirs] | None = None
    ) -> None:
        self._to: dict[Ours, Theirs] = dict(pairs)
        self._fold = fold or (lambda term: term)
        self._from: dict[Theirs, Ours] = {self._fold(t): o for o, t in self._to.items()}
        if len(self._from) != len(self._to):
            raise ValueError(f"a mapping table must be one-to-one: {dict(pairs)!r}")

    def theirs(self, ours: Ours) -> Theirs | None:
        """The gateway's term for ours, or None when it has none."""
        return self._to.get(ours)

    def ours(self, theirs: Theirs) -> Ours | None:
        """Our term for the gateway's, or None when it means nothing to Tollgate."""
        return self._from.get(self._fold(theirs))

    def __getitem__(self, ours: Ours) -> Theirs:
        """The gateway's term for ours; `KeyError` when it has none."""
        return self._to[ours]

    def values(self) -> Iterator[Theirs]:
        return iter(self._to.values())

    def __contains__(self, ours: object) -> bool:
        return ours in self._to

    def __iter__(self) -> Iterator[Ours]:
        return iter(self._to)

    def items(self) -> Iterator[tuple[Ours, Theirs]]:
        return iter(self._to.items())
