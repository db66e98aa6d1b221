"""Kong: key revocation, per-consumer rate limits and an IP deny list, over the Admin API.

- revoke_key api_key: the key-auth credential is deleted (`DELETE /key-auths/{id}`):
  Kong answers 401 for the key from then on. `api_key_id` is the credential's id (a
  UUID), never the key. A deleted credential cannot be brought back by Tollgate, which
  never holds the key, so a lift does nothing at Kong: the lab issues a new key
  (docs/kong.md).
- rate_limit account: a `rate-limiting` plugin on the consumer (`config.minute`, policy
  `local` unless set), tagged `tollgate` and `tollgate-target:<account>`, so `observe`
  finds Tollgate's plugins with one paged `GET /plugins?tags=tollgate`; 429 past it.
  The consumer is found by username or `custom_id` (`consumer_by`).
- block ip / cidr: the `deny` list of one `ip-restriction` plugin (global, or on the
  service named by `ip_restriction_service`), tagged `tollgate-blocks`: 403.

An apply costs what its diff holds: consumers' plugins are changed one by one, the deny
list is kept in memory (read at `observe` or first use) and sent once per apply (Kong
takes the whole `deny` array in a PATCH; that array is whole by nature).

Calls are bounded by `request_timeout_seconds`; connection errors, timeouts and 5xx are
retried with backoff (`attempts`) and then the gateway is unavailable; Kong's 400
(schema violation) rejects the entry, a 401/403 means the admin token is wrong.

This module never imports Tollgate's domain: only `controlplane.enforce.sdk`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import httpx

from controlplane.enforce.sdk import (
    ApplyResult,
    ConnectorConfig,
    ConnectorError,
    Diff,
    Entry,
    EntryType,
    GatewayState,
    GatewayUnavailable,
    Health,
)
from controlplane.enforce.targets import refusal
from controlplane.enforce.toolkit import (
    bounded,
    option_error,
    parse_options,
    positive,
    with_retries,
)

TAG = "tollgate"
TARGET_TAG = "tollgate-target:"
BLOCKS_TAG = "tollgate-blocks"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class KongOptions:
    """`options:` of a `kong` connector in tollgate.yaml (docs/kong.md)."""

    admin_url: str
    consumer_by: Literal["username", "custom_id"] = "username"
    """How an account id names its Kong consumer."""
    rate_limit_policy: Literal["local", "cluster", "redis"] = "local"
    ip_restriction_service: str = ""
    """A service name or id for the deny list; empty: a global plugin."""
    deny_status: int = bounded(403, 400, 499)
    """A 4xx status."""
    request_timeout_seconds: float = positive(5.0, 300)
    attempts: int = positive(3, 10)
    allow_http: bool = True
    """Plain http is for an Admin API on loopback or a private network."""

    @classmethod
    def of(cls, config: ConnectorConfig) -> KongOptions:
        where = f"connector {config.name}: options"
        o = parse_options(
            cls, where, config.options, request_timeout_seconds=config.timeout_seconds
        )
        if not re.fullmatch(r"https?://[^\s/?#@]+(/[^\s?#]*)?", o.admin_url):
            raise option_error(where, "admin_url", "must be http(s)://host[:port][/path]")
        if o.admin_url.startswith("http://") and not o.allow_http:
            raise option_error(where, "admin_url", "is http but options.allow_http is off")
        if o.ip_restriction_service and not re.fullmatch(
            r"[A-Za-z0-9._~-]{1,128}", o.ip_restriction_service
        ):
            raise option_error(where, "ip_restriction_service", "is not a service name")
        return o


class _Refused(Exception):
    """Kong answered 4xx: the request as sent will not succeed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Blocks:
    plugin_id: str = ""
    deny: set[str] = field(default_factory=set)


class KongConnector:
    def __init__(self, config: ConnectorConfig, http: httpx.AsyncClient) -> None:
        self.name = config.name
        self.options = KongOptions.of(config)
        self.min_prefix = config.min_prefix
        unknown = set(config.secrets) - {"admin_token"}
        if unknown:
            raise ConnectorError(
                f"connector {config.name}: unknown secret(s) {sorted(unknown)}; known: admin_token",
                retryable=False,
            )
        self._headers = (
            {"Kong-Admin-Token": config.secrets["admin_token"]}
            if "admin_token" in config.secrets
            else {}
        )
        self._http = http
        self._base = self.options.admin_url.rstrip("/")
        self._limits: dict[str, tuple[str, int]] | None = None
        """Account -> (plugin id, requests per minute): Tollgate's rate-limiting plugins."""
        self._blocks: _Blocks | None = None
        self._revoked: set[str] = set()
        """Credentials deleted by this process (Kong keeps no trace of a deleted one)."""
        self._lock = asyncio.Lock()

    def capabilities(self) -> frozenset[EntryType]:
        return frozenset(EntryType)

    # -- HTTP -----------------------------------------------------------------------------

    async def _request(self, method: str, path: str, json: Any = None) -> Any:
        """One Admin API call; retried on connection errors, timeouts and 5xx."""

        async def once() -> httpx.Response:
            response = await self._http.request(
                method,
                f"{self._base}{path}",
                json=json,
                headers=self._headers,
                timeout=self.options.request_timeout_seconds,
            )
            if response.status_code >= 500:
                response.raise_for_status()
            return response

        try:
            response = await with_retries(
                once,
                attempts=self.options.attempts,
                retry_on=lambda e: isinstance(e, httpx.TransportError | httpx.HTTPStatusError),
            )
        except httpx.TransportError as exc:
            raise GatewayUnavailable(
                f"Kong Admin API at {self._base}: {type(exc).__name__}"
            ) from None
        except httpx.HTTPStatusError as exc:
            raise GatewayUnavailable(
                f"Kong Admin API at {self._base} answered {exc.response.status_code}"
            ) from None
        if response.status_code in (401, 403):
            raise ConnectorError(
                f"Kong Admin API at {self._base} refused the admin token "
                f"({response.status_code}): check the admin_token secret",
                retryable=False,
            )
        if response.status_code >= 400:
            try:
                message = str(response.json().get("message", ""))[:300]
            except ValueError:
                message = response.text[:300]
            raise _Refused(response.status_code, message)
        return response.json() if response.content else None

    async def _paged(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        next_path: str | None = path
        while next_path:
            page = await self._request("GET", next_path)
            items.extend(page.get("data", []))
            next_path = page.get("next")
        return items

    # -- observe --------------------------------------------------------------------------

    async def observe(self) -> GatewayState:
        async with self._lock:
            await self._load()
            assert self._limits is not None and self._blocks is not None
            entries = {
                Entry(EntryType.RATE_LIMIT, "account", account, rpm)
                for account, (_, rpm) in self._limits.items()
            }
            for value in self._blocks.deny:
                network = ipaddress.ip_network(value)
                if network.prefixlen == network.max_prefixlen and "/" not in value:
                    entries.add(Entry(EntryType.BLOCK, "ip", value))
                else:
                    entries.add(Entry(EntryType.BLOCK, "cidr", str(network)))
            entries |= {Entry(EntryType.REVOKE_KEY, "api_key", k) for k in self._revoked}
            return GatewayState(frozenset(entries), extra={"deny": len(self._blocks.deny)})

    async def _load(self) -> None:
        limits: dict[str, tuple[str, int]] = {}
        blocks = _Blocks()
        for plugin in await self._paged(f"/plugins?tags={TAG}"):
            tags = plugin.get("tags") or []
            if plugin.get("name") == "rate-limiting":
                target = next(
                    (t[len(TARGET_TAG) :] for t in tags if t.startswith(TARGET_TAG)), None
                )
                if target:
                    limits[target] = (plugin["id"], int(plugin["config"].get("minute") or 0))
        for plugin in await self._paged(f"/plugins?tags={BLOCKS_TAG}"):
            if plugin.get("name") == "ip-restriction":
                blocks = _Blocks(plugin["id"], set(plugin["config"].get("deny") or []))
        self._limits, self._blocks = limits, blocks

    # -- apply ----------------------------------------------------------------------------

    async def apply(self, diff: Diff) -> ApplyResult:
        result = ApplyResult()
        async with self._lock:
            if self._limits is None or self._blocks is None:
                await self._load()
            deny_changes: list[tuple[Entry, bool]] = []
            for entry in (*diff.add, *diff.change):
                why = self._refusal(entry)
                if why:
                    result.rejected.append((entry, why))
                elif entry.type is EntryType.BLOCK:
                    deny_changes.append((entry, True))
                else:
                    await self._one(entry, True, result)
            for entry in diff.remove:
                if entry.type is EntryType.BLOCK:
                    deny_changes.append((entry, False))
                elif entry.target_kind in ("api_key", "account"):
                    await self._one(entry, False, result)
                else:
                    result.done.append(entry)
            if deny_changes:
                await self._apply_deny(deny_changes, result)
        return result

    def _refusal(self, entry: Entry) -> str:
        why = refusal(entry, self.min_prefix)
        if why:
            return why
        if entry.type is EntryType.BLOCK:
            return (
                ""
                if entry.target_kind in ("ip", "cidr")
                else (f"Kong's ip-restriction blocks addresses, not {entry.target_kind} targets")
            )
        if entry.type is EntryType.REVOKE_KEY:
            if entry.target_kind != "api_key":
                return (
                    f"Kong revokes key-auth credentials; it cannot revoke an "
                    f"{entry.target_kind} (no mapping from it to its credentials is given)"
                )
            if not _UUID.fullmatch(entry.target_value):
                return "not a Kong key-auth credential id (a lowercase UUID)"
            return ""
        if entry.target_kind != "account":
            return (
                f"Kong limits consumers (accounts), not {entry.target_kind}s: a "
                "rate-limiting plugin cannot be scoped to one credential"
            )
        return ""

    async def _one(self, entry: Entry, adding: bool, result: ApplyResult) -> None:
        try:
            if entry.type is EntryType.REVOKE_KEY:
                if adding:
                    await self._delete(f"/key-auths/{quote(entry.target_value, safe='')}")
                    self._revoked.add(entry.target_value)
                else:
                    self._revoked.discard(entry.target_value)  # nothing to restore at Kong
            elif adding:
                await self._limit(entry)
            else:
                await self._unlimit(entry)
        except _Refused as exc:
            why = f"Kong refused it ({exc.status}): {exc}"
            if exc.status == 404 and adding:
                result.rejected.append(
                    (entry, "Kong has no consumer of that " + self.options.consumer_by)
                )
            elif exc.status in (400, 404):
                result.rejected.append((entry, why))
            else:
                result.failed.append((entry, why))
            return
        result.done.append(entry)

    async def _delete(self, path: str) -> None:
        try:
            await self._request("DELETE", path)
        except _Refused as exc:
            if exc.status != 404:  # already gone: done
                raise

    async def _consumer_id(self, account: str) -> str:
        if self.options.consumer_by == "username":
            consumer = await self._request("GET", f"/consumers/{quote(account, safe='')}")
            return str(consumer["id"])
        page = await self._request("GET", f"/consumers?custom_id={quote(account, safe='')}")
        found = page.get("data") or []
        if not found:
            raise _Refused(404, "no consumer with that custom_id")
        return str(found[0]["id"])

    async def _limit(self, entry: Entry) -> None:
        assert self._limits is not None
        rpm = entry.requests_per_minute or 0
        held = self._limits.get(entry.target_value)
        if held is not None:
            if held[1] != rpm:
                await self._request("PATCH", f"/plugins/{held[0]}", {"config": {"minute": rpm}})
                self._limits[entry.target_value] = (held[0], rpm)
            return
        consumer = await self._consumer_id(entry.target_value)
        body = {
            "name": "rate-limiting",
            "config": {
                "minute": rpm,
                "policy": self.options.rate_limit_policy,
                "limit_by": "consumer",
            },
            "tags": [TAG, f"{TARGET_TAG}{entry.target_value}"],
        }
        try:
            plugin = await self._request("POST", f"/consumers/{consumer}/plugins", body)
        except _Refused as exc:
            if exc.status != 409:
                raise
            # A rate-limiting plugin is already on this consumer (made by hand, or by a
            # run whose answer was lost): Tollgate's limit is not silently skipped.
            raise _Refused(
                409,
                "the consumer already has a rate-limiting plugin Tollgate did not make: "
                "remove it or tag it tollgate",
            ) from None
        self._limits[entry.target_value] = (plugin["id"], rpm)

    async def _unlimit(self, entry: Entry) -> None:
        assert self._limits is not None
        held = self._limits.pop(entry.target_value, None)
        if held is not None:
            await self._delete(f"/plugins/{held[0]}")

    async def _apply_deny(self, changes: list[tuple[Entry, bool]], result: ApplyResult) -> None:
        """The new deny list in one PATCH (or the plugin made, or deleted when empty)."""
        assert self._blocks is not None
        blocks = self._blocks
        deny = set(blocks.deny)
        for entry, adding in changes:
            value = entry.target_value
            if adding:
                deny.add(value)
            else:
                deny.discard(value)
        entries = [entry for entry, _ in changes]
        if deny == blocks.deny:
            result.done.extend(entries)
            return
        try:
            if not deny:
                await self._delete(f"/plugins/{blocks.plugin_id}")
                blocks.plugin_id = ""
            elif blocks.plugin_id:
                await self._request(
                    "PATCH", f"/plugins/{blocks.plugin_id}", {"config": {"deny": sorted(deny)}}
                )
            else:
                scope = (
                    f"/services/{quote(self.options.ip_restriction_service, safe='')}/plugins"
                    if self.options.ip_restriction_service
                    else "/plugins"
                )
                plugin = await self._request(
                    "POST",
                    scope,
                    {
                        "name": "ip-restriction",
                        "config": {"deny": sorted(deny), "status": self.options.deny_status},
                        "tags": [BLOCKS_TAG],
                    },
                )
                blocks.plugin_id = plugin["id"]
        except _Refused as exc:
            why = f"Kong refused the deny list ({exc.status}): {exc}"
            if exc.status == 400:
                result.rejected.extend((e, why) for e in entries)
            else:
                result.failed.extend((e, why) for e in entries)
            return
        blocks.deny = deny
        result.done.extend(entries)

    # -- health, close --------------------------------------------------------------------

    async def health(self) -> Health:
        gateway = f"kong admin at {self._base}"
        try:
            node = await self._request("GET", "/")
        except (ConnectorError, _Refused) as exc:
            return Health(ok=False, gateway=gateway, detail=str(exc))
        return Health(ok=True, gateway=f"kong {node.get('version', '?')} admin at {self._base}")

    async def close(self) -> None:
        return None


def create(config: ConnectorConfig, http: httpx.AsyncClient) -> KongConnector:
    return KongConnector(config, http)
