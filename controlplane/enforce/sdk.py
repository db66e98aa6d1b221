"""The connector SDK: what a connector is given and what it must do.

Connectors live in the top-level `connectors` package (or any package that
registers an entry point in the `tollgate.connectors` group). They see only the
neutral value objects here, never Tollgate's domain or database: a connector
maps entries to one gateway's operations, nothing more.

Tollgate follows an ordered change log of the desired state and hands each
connector small diffs (the entries whose desired state changed since its
cursor), so `apply` must cost what the diff holds, never what the gateway
already enforces: keep what is needed in memory, learned at `observe`. Only a
full reconcile (at start, periodically, on demand) calls `observe` and diffs
the whole desired state against it. Applying must be idempotent: adding an
entry that is there, or removing one that is not, is not an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import httpx

from controlplane.enforce.targets import DEFAULT_FLOOR, PrefixFloor


class EntryType(StrEnum):
    BLOCK = "block"
    """Refuse traffic from an IP or CIDR (HTTP 403)."""
    REVOKE_KEY = "revoke_key"
    """Refuse an API key (HTTP 401)."""
    RATE_LIMIT = "rate_limit"
    """Limit a key (or account/org, where the gateway can) to `requests_per_minute`."""
    SUSPEND = "suspend"
    """Refuse every request of an `account` or `org` (HTTP 403), whatever key or IP it
    comes with. A gateway that cannot see accounts rejects it: Tollgate also revokes
    every key it knows of the account or org, so key-only gateways refuse it too."""
    ALLOW = "allow"
    """Serve an IP or CIDR whatever block covers it (an exemption carved out of a blocked
    range): consulted before the block list. A gateway that cannot do this leaves
    `allow` out of its capabilities, and Tollgate reports the exemption as not carved
    out there."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One enforcement at a gateway, identified by (type, target kind, target value)."""

    type: EntryType
    target_kind: str
    """`ip`, `cidr`, `api_key`, `account` or `org`."""
    target_value: str
    requests_per_minute: int | None = None
    """For `rate_limit`: the limit; the strictest active action wins."""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.type.value, self.target_kind, self.target_value)

    @property
    def reference(self) -> str:
        """What a refusal at the gateway quotes (`reference_of`)."""
        return reference_of(self.type.value, self.target_kind, self.target_value)


_REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Crockford's base32: no I, L, O or U, so a reference read over the phone survives."""


def reference_of(entry_type: str, target_kind: str, target_value: str) -> str:
    """The short reference a refusal quotes for one gateway entry (`TG-` and ten
    characters): the same at every gateway and for every action asking for the entry,
    so a customer can quote what they were shown and Tollgate can find the actions."""
    digest = hashlib.sha256(f"{entry_type}|{target_kind}|{target_value}".encode()).digest()
    number = int.from_bytes(digest[:7], "big") >> 6  # 50 bits
    chars = []
    for _ in range(10):
        number, digit = divmod(number, 32)
        chars.append(_REFERENCE_ALPHABET[digit])
    return "TG-" + "".join(reversed(chars))


@dataclass(frozen=True)
class GatewayState:
    """What a gateway enforces now, as entries, plus vendor details in `extra`."""

    entries: AbstractSet[Entry]
    """A `frozenset`, or any set that iterates the same entries: a connector holding a
    million entries in its own model may hand a view of it that makes each `Entry` only
    when iterated (HAProxy does), as long as it does not change afterwards. Tollgate
    iterates it once, and keeps no `Entry` from it."""
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Diff:
    add: tuple[Entry, ...] = ()
    remove: tuple[Entry, ...] = ()
    """Entries to take away (by key; their parameters do not matter)."""
    change: tuple[Entry, ...] = ()
    """Entries present with other parameters (a rate limit's value)."""

    def __bool__(self) -> bool:
        return bool(self.add or self.remove or self.change)

    @property
    def size(self) -> int:
        return len(self.add) + len(self.remove) + len(self.change)


@dataclass
class ApplyResult:
    """Which entries of a diff took effect and which failed, with why."""

    done: list[Entry] = field(default_factory=list)
    failed: list[tuple[Entry, str]] = field(default_factory=list)
    """Failures that may succeed later (the gateway was busy, a file could not be
    written): retried with backoff."""
    rejected: list[tuple[Entry, str]] = field(default_factory=list)
    """Failures that cannot succeed whatever the retry (the gateway cannot hold this
    entry, or refuses its value): reported as permanent and never retried on their own."""


@dataclass(frozen=True)
class Health:
    ok: bool
    gateway: str
    """What the connector talks to, e.g. `haproxy 2.6 at /run/haproxy.sock`."""
    detail: str = ""


class ConnectorError(Exception):
    """An operation failed; `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class GatewayUnavailable(ConnectorError):
    """The gateway cannot be reached: nothing is lost, everything is retried later."""


TARGET_KINDS = frozenset({"ip", "cidr", "api_key", "account", "org"})
"""Every kind of target an entry can have."""


@dataclass(frozen=True)
class Scope:
    """What a connector is limited to, beyond its providers (`scope:` in tollgate.yaml):
    entry types and target kinds; None means no limit. A connector is given, and is
    expected to hold, only what its providers, its capabilities and its scope admit."""

    types: frozenset[EntryType] | None = None
    target_kinds: frozenset[str] | None = None

    def admits(self, entry_type: str, target_kind: str) -> bool:
        if self.types is not None and entry_type not in {t.value for t in self.types}:
            return False
        return self.target_kinds is None or target_kind in self.target_kinds


@dataclass(frozen=True)
class ConnectorConfig:
    """One configured connector (from `tollgate.yaml`); secrets already resolved."""

    name: str
    type: str
    providers: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    reconcile_seconds: float = 30.0
    timeout_seconds: float = 5.0
    min_prefix: PrefixFloor = DEFAULT_FLOOR
    """The widest CIDR this connector sends (the loosest `min_prefix` of the providers it
    serves): `targets.refusal` holds back anything wider, or not canonical."""
    scope: Scope = Scope()
    """The entry types and target kinds this connector is limited to."""

    def serves(self, provider: str) -> bool:
        return "*" in self.providers or provider in self.providers

    def covers(self, provider: str, entry_type: str, target_kind: str) -> bool:
        """Whether an action of this provider, type and target kind is this connector's
        to hold, as far as its configuration says (its capabilities aside)."""
        return self.serves(provider) and self.scope.admits(entry_type, target_kind)


class Connector(Protocol):
    """What every connector implements. All calls are bounded by timeouts."""

    name: str

    def capabilities(self) -> frozenset[EntryType]:
        """The entry types this gateway can enforce."""
        ...

    async def observe(self) -> GatewayState:
        """What the gateway enforces now (raises `GatewayUnavailable` when unreachable)."""
        ...

    async def apply(self, diff: Diff) -> ApplyResult:
        """Make the gateway match: idempotent; report each entry done or failed."""
        ...

    async def health(self) -> Health: ...

    async def close(self) -> None: ...


class ConnectorFactory(Protocol):
    def __call__(self, config: ConnectorConfig, http: httpx.AsyncClient) -> Connector: ...
