"""Cloudflare: IP blocks in an IP List, per-key limits in rate limiting rules.

- block ip / cidr: an item of one account-level IP List (`list_id`), which a custom rule
  of the lab's zone blocks (`ip.src in $tollgate_blocked`, action block: 403).
  Items change through asynchronous bulk operations: a POST or DELETE answers an
  `operation_id`, polled at `GET .../bulk_operations/{id}` until `completed` or
  `failed`. Cloudflare takes one pending bulk operation per account, so the connector
  runs one at a time per account across every connector of this process, and retries
  (with backoff) a write refused because another is in progress.
- rate_limit api_key: keys are grouped into tiers (`tiers`, requests per minute); each
  tier is one rule of the zone's `http_ratelimit` phase, `ref` `tollgate-tier-<rpm>`,
  whose expression lists its keys (`any(http.request.headers["x-api-key"][*] in {...})`)
  and whose rate limit counts per key header: 429 past the tier's rate. A limit goes to
  the largest tier at or below it, never to a looser one.

Cloudflare's rules language cannot hash a header, so keys are matched by the value of
`key_header` as sent: `api_key_id` must be what that header carries (the lab's key id,
set by a layer in front), never a raw key. An apply costs what its diff holds: list items
are added and removed by value (ids learned at observe, or by `search`), and only the
tiers a diff touched are written (one PATCH each).

This module never imports Tollgate's domain: only `controlplane.enforce.sdk`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

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
from controlplane.enforce.toolkit import option_error, parse_options, positive, with_retries

API = "https://api.cloudflare.com/client/v4"
COMMENT = "tollgate"
TIER_REF = "tollgate-tier-"
EXPRESSION_LIMIT = 4096
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEADER = re.compile(r"^[a-z0-9-]{1,100}$")
_EXPRESSION_KEYS = re.compile(r'"([^"\\]*)"')
_BUSY = re.compile(r"outstanding|pending|in progress", re.IGNORECASE)
_ACCOUNT_LOCKS: dict[str, threading.Lock] = {}
_ACCOUNT_LOCKS_GUARD = threading.Lock()


def _account_lock(account: str) -> threading.Lock:
    """One bulk operation at a time per account, across the worker threads' loops."""
    with _ACCOUNT_LOCKS_GUARD:
        return _ACCOUNT_LOCKS.setdefault(account, threading.Lock())


@dataclass(frozen=True)
class CloudflareOptions:
    """`options:` of a `cloudflare` connector in tollgate.yaml (docs/cloudflare.md)."""

    account_id: str
    list_id: str = ""
    """The IP List blocks go to; empty: no blocks."""
    zone_id: str = ""
    """The zone whose `http_ratelimit` rules hold the tiers; empty: no rate limits."""
    tiers: tuple[int, ...] = ()
    key_header: str = "x-api-key"
    api_base: str = API
    poll_seconds: float = positive(0.5, 60)
    operation_timeout_seconds: float = positive(60.0, 3600)
    request_timeout_seconds: float = positive(5.0, 300)
    attempts: int = positive(4, 10)
    mitigation_timeout_seconds: int = 60

    @classmethod
    def of(cls, config: ConnectorConfig) -> CloudflareOptions:
        where = f"connector {config.name}: options"
        o = parse_options(
            cls, where, config.options, request_timeout_seconds=config.timeout_seconds
        )
        for name in ("account_id", "list_id", "zone_id"):
            value = getattr(o, name)
            if (value or name == "account_id") and not _HEX32.fullmatch(value):
                raise option_error(where, name, "must be 32 lowercase hex digits")
        if not (o.list_id or o.zone_id):
            raise option_error(where, "list_id", "and options.zone_id are both empty: set one")
        if o.zone_id and not o.tiers:
            raise option_error(where, "tiers", "is needed with zone_id (e.g. [60, 600])")
        if any(t < 1 for t in o.tiers) or len(set(o.tiers)) != len(o.tiers):
            raise option_error(where, "tiers", "must be distinct positive numbers")
        if not _HEADER.fullmatch(o.key_header):
            raise option_error(where, "key_header", "must be a lowercase header name")
        if not re.fullmatch(r"https?://[^\s/?#@]+(/[^\s?#]*)?", o.api_base):
            raise option_error(where, "api_base", "must be an http(s) URL")
        return o


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Busy(Exception):
    """Another bulk operation of the account is pending."""


class CloudflareConnector:
    def __init__(self, config: ConnectorConfig, http: httpx.AsyncClient) -> None:
        self.name = config.name
        self.options = CloudflareOptions.of(config)
        self.min_prefix = config.min_prefix
        if set(config.secrets) != {"api_token"}:
            raise ConnectorError(
                f"connector {config.name}: secrets must hold exactly api_token "
                "(an API token with Account Filter Lists Edit and Zone WAF Edit)",
                retryable=False,
            )
        self._auth = {"Authorization": f"Bearer {config.secrets['api_token']}"}
        self._http = http
        self._base = self.options.api_base.rstrip("/")
        self._items: dict[str, str] | None = None
        """List value -> item id ('' when added and not looked up since)."""
        self._tiers: dict[int, tuple[str, set[str]]] | None = None
        """Tier -> (rule id, keys)."""
        self._ruleset = ""
        self._limits: dict[str, int] = {}
        """Key -> the limit Tollgate asked for (its tier is the largest at or below)."""
        self._lock = asyncio.Lock()

    def capabilities(self) -> frozenset[EntryType]:
        kinds = set()
        if self.options.list_id:
            kinds.add(EntryType.BLOCK)
        if self.options.zone_id:
            kinds.add(EntryType.RATE_LIMIT)
        return frozenset(kinds)

    # -- HTTP -----------------------------------------------------------------------------

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        async def once() -> httpx.Response:
            response = await self._http.request(
                method,
                f"{self._base}{path}",
                headers=self._auth,
                timeout=self.options.request_timeout_seconds,
                **kwargs,
            )
            if response.status_code >= 500 or response.status_code == 429:
                response.raise_for_status()
            return response

        try:
            response = await with_retries(
                once,
                attempts=self.options.attempts,
                retry_on=lambda e: isinstance(e, httpx.TransportError | httpx.HTTPStatusError),
            )
        except httpx.TransportError as exc:
            raise GatewayUnavailable(f"Cloudflare API: {type(exc).__name__}") from None
        except httpx.HTTPStatusError as exc:
            raise GatewayUnavailable(
                f"Cloudflare API answered {exc.response.status_code}"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 400 or not body.get("success", False):
            errors = body.get("errors") or [{"message": response.reason_phrase}]
            message = "; ".join(str(e.get("message", "")) for e in errors)[:300]
            if response.status_code in (401, 403) and any(e.get("code") == 10000 for e in errors):
                raise ConnectorError(
                    "Cloudflare refused the api_token (Authentication error): check the "
                    "secret and its permissions",
                    retryable=False,
                )
            if _BUSY.search(message):
                raise _Busy(message)
            raise _Refused(response.status_code, message)
        return dict(body)

    def _list_path(self) -> str:
        return f"/accounts/{self.options.account_id}/rules/lists/{self.options.list_id}/items"

    def _zone_path(self) -> str:
        return f"/zones/{self.options.zone_id}/rulesets"

    # -- observe --------------------------------------------------------------------------

    async def observe(self) -> GatewayState:
        async with self._lock:
            entries: set[Entry] = set()
            if self.options.list_id:
                await self._load_items()
                assert self._items is not None
                entries |= {_entry_of_item(value) for value in self._items}
            if self.options.zone_id:
                await self._load_tiers()
                assert self._tiers is not None
                for tier, (_, keys) in self._tiers.items():
                    for key in keys:
                        rpm = self._limits.get(key, tier)
                        if self._tier(rpm) != tier:
                            rpm = tier
                        entries.add(Entry(EntryType.RATE_LIMIT, "api_key", key, rpm))
            return GatewayState(frozenset(entries))

    async def _load_items(self) -> None:
        items: dict[str, str] = {}
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"per_page": 500}
            if cursor:
                params["cursor"] = cursor
            body = await self._request("GET", self._list_path(), params=params)
            for item in body.get("result") or []:
                if "ip" in item:
                    items[str(item["ip"])] = str(item["id"])
            cursor = ((body.get("result_info") or {}).get("cursors") or {}).get("after")
            if not cursor:
                break
        self._items = items

    async def _load_tiers(self) -> None:
        tiers: dict[int, tuple[str, set[str]]] = {}
        try:
            body = await self._request(
                "GET", f"{self._zone_path()}/phases/http_ratelimit/entrypoint"
            )
        except _Refused as exc:
            if exc.status != 404:
                raise
            self._ruleset, self._tiers = "", tiers
            return
        ruleset = body["result"]
        self._ruleset = str(ruleset["id"])
        for rule in ruleset.get("rules") or []:
            ref = str(rule.get("ref", ""))
            if ref.startswith(TIER_REF) and ref[len(TIER_REF) :].isdigit():
                keys = set(_EXPRESSION_KEYS.findall(rule.get("expression", "")))
                keys.discard(self.options.key_header)
                tiers[int(ref[len(TIER_REF) :])] = (str(rule["id"]), keys)
        self._tiers = tiers

    # -- apply ----------------------------------------------------------------------------

    async def apply(self, diff: Diff) -> ApplyResult:
        result = ApplyResult()
        async with self._lock:
            adds: list[Entry] = []
            removes: list[Entry] = []
            limits: list[tuple[Entry, bool]] = []
            for entry in (*diff.add, *diff.change):
                why = self._refusal(entry)
                if why:
                    result.rejected.append((entry, why))
                elif entry.type is EntryType.BLOCK:
                    adds.append(entry)
                else:
                    limits.append((entry, True))
            for entry in diff.remove:
                if entry.type is EntryType.BLOCK and self.options.list_id:
                    removes.append(entry)
                elif entry.type is EntryType.RATE_LIMIT and self.options.zone_id:
                    limits.append((entry, False))
                else:
                    result.done.append(entry)
            if adds or removes:
                if self._items is None:
                    await self._load_items()
                await self._apply_items(adds, removes, result)
            if limits:
                if self._tiers is None:
                    await self._load_tiers()
                await self._apply_limits(limits, result)
        return result

    def _refusal(self, entry: Entry) -> str:
        why = refusal(entry, self.min_prefix)
        if why:
            return why
        if entry.type is EntryType.BLOCK:
            if not self.options.list_id:
                return "this cloudflare connector has no list_id: it does not block"
            if entry.target_kind not in ("ip", "cidr"):
                return f"IP Lists hold addresses, not {entry.target_kind} targets"
            network = ipaddress.ip_network(entry.target_value)
            low, high = (8, 32) if network.version == 4 else (12, 64)
            if entry.target_kind == "cidr" and not low <= network.prefixlen <= high:
                return (
                    f"Cloudflare IP Lists hold IPv{network.version} networks from /{low} to "
                    f"/{high} only"
                )
            if network.version == 6 and network.prefixlen > 64:
                return "Cloudflare IP Lists hold IPv6 networks up to /64 only: block the /64"
            return ""
        if entry.type is EntryType.RATE_LIMIT:
            if not self.options.zone_id:
                return "this cloudflare connector has no zone_id: it does not limit"
            if entry.target_kind != "api_key":
                return (
                    f"Cloudflare sees the {self.options.key_header} header, not "
                    f"{entry.target_kind}s: it cannot limit an {entry.target_kind}"
                )
            if self._tier(entry.requests_per_minute or 0) is None:
                return (
                    f"no tier is as strict as {entry.requests_per_minute}/min (the strictest "
                    f"is {min(self.options.tiers)}/min): add one to tiers"
                )
            return ""
        return "this connector enforces blocks and rate limits, not key revocations"

    def _tier(self, rpm: int) -> int | None:
        fitting = [t for t in self.options.tiers if t <= rpm]
        return max(fitting) if fitting else None

    # -- IP List --------------------------------------------------------------------------

    async def _apply_items(
        self, adds: list[Entry], removes: list[Entry], result: ApplyResult
    ) -> None:
        assert self._items is not None
        items = self._items
        new = [e for e in adds if e.target_value not in items]
        result.done.extend(e for e in adds if e.target_value in items)
        gone = [e for e in removes if e.target_value in items]
        result.done.extend(e for e in removes if e.target_value not in items)
        if new:
            body = [{"ip": e.target_value, "comment": COMMENT} for e in new]
            why = await self._bulk("POST", body)
            if why is None:
                for entry in new:
                    items[entry.target_value] = ""
                result.done.extend(new)
            else:
                self._record(new, why, result)
        if gone:
            for entry in gone:
                if not items.get(entry.target_value):
                    items[entry.target_value] = await self._item_id(entry.target_value)
            known = [e for e in gone if items[e.target_value]]
            for entry in gone:
                if not items[entry.target_value]:  # not in the list after all
                    items.pop(entry.target_value)
                    result.done.append(entry)
            if known:
                body2 = {"items": [{"id": items[e.target_value]} for e in known]}
                why = await self._bulk("DELETE", body2)
                if why is None:
                    for entry in known:
                        items.pop(entry.target_value, None)
                    result.done.extend(known)
                else:
                    self._record(known, why, result)

    @staticmethod
    def _record(entries: list[Entry], why: tuple[bool, str], result: ApplyResult) -> None:
        permanent, message = why
        (result.rejected if permanent else result.failed).extend((e, message) for e in entries)

    async def _item_id(self, value: str) -> str:
        body = await self._request("GET", self._list_path(), params={"search": value})
        for item in body.get("result") or []:
            if item.get("ip") == value:
                return str(item["id"])
        return ""

    async def _bulk(self, method: str, body: Any) -> tuple[bool, str] | None:
        """One bulk operation, alone on its account, polled to its end. None when it
        completed; else (permanent, why)."""
        lock = _account_lock(self.options.account_id)
        deadline = time.monotonic() + self.options.operation_timeout_seconds
        while not lock.acquire(blocking=False):
            if time.monotonic() > deadline:
                return False, "another bulk operation of this account is still running"
            await asyncio.sleep(self.options.poll_seconds / 4)
        try:
            try:
                answer = await with_retries(
                    lambda: self._request(method, self._list_path(), json=body),
                    attempts=max(self.options.attempts, 8),
                    retry_on=lambda e: isinstance(e, _Busy),
                    base_delay=self.options.poll_seconds,
                    max_delay=10.0,
                )
            except _Busy as exc:
                return False, f"Cloudflare: {exc}"
            except _Refused as exc:
                return exc.status == 400, f"Cloudflare refused the items ({exc.status}): {exc}"
            operation = str(answer["result"]["operation_id"])
            while True:
                status = await self._request(
                    "GET",
                    f"/accounts/{self.options.account_id}/rules/lists/bulk_operations/{operation}",
                )
                state = status["result"]
                if state.get("status") == "completed":
                    return None
                if state.get("status") == "failed":
                    return False, f"bulk operation {operation} failed: {state.get('error', '')}"
                if time.monotonic() > deadline:
                    return False, f"bulk operation {operation} still {state.get('status')}"
                await asyncio.sleep(self.options.poll_seconds)
        finally:
            lock.release()

    # -- rate limiting rules --------------------------------------------------------------

    async def _apply_limits(self, changes: list[tuple[Entry, bool]], result: ApplyResult) -> None:
        """Each key into its tier's set (out of any other); each touched tier's rule
        written once."""
        assert self._tiers is not None
        touched: dict[int, list[Entry]] = {}
        for entry, adding in changes:
            key, rpm = entry.target_value, entry.requests_per_minute or 0
            want = self._tier(rpm) if adding else None
            for tier, (_, keys) in self._tiers.items():
                if key in keys and tier != want:
                    keys.discard(key)
                    touched.setdefault(tier, []).append(entry)
            if want is None:
                self._limits.pop(key, None)
                continue
            self._limits[key] = rpm
            keys = self._tiers.setdefault(want, ("", set()))[1]
            if key not in keys:
                keys.add(key)
                touched.setdefault(want, []).append(entry)
        failed: dict[Entry, str] = {}
        for tier, entries in touched.items():
            why = await self._write_tier(tier)
            failed.update(dict.fromkeys(entries, why) if why else {})
        for entry, _ in changes:
            if entry in failed:
                result.failed.append((entry, failed[entry]))
            else:
                result.done.append(entry)

    def _rule(self, tier: int, keys: set[str]) -> dict[str, Any]:
        header = self.options.key_header
        listed = " ".join(f'"{k}"' for k in sorted(keys))
        return {
            "ref": f"{TIER_REF}{tier}",
            "description": f"Tollgate: keys limited to {tier} requests per minute",
            "expression": f'any(http.request.headers["{header}"][*] in {{{listed}}})',
            "action": "block",
            "enabled": True,
            "ratelimit": {
                "characteristics": ["cf.colo.id", f'http.request.headers["{header}"]'],
                "period": 60,
                "requests_per_period": tier,
                "mitigation_timeout": self.options.mitigation_timeout_seconds,
            },
        }

    async def _write_tier(self, tier: int) -> str:
        assert self._tiers is not None
        rule_id, keys = self._tiers[tier]
        try:
            if not keys:
                if rule_id:
                    await self._request(
                        "DELETE", f"{self._zone_path()}/{self._ruleset}/rules/{rule_id}"
                    )
                del self._tiers[tier]
                return ""
            rule = self._rule(tier, keys)
            if len(rule["expression"]) > EXPRESSION_LIMIT:
                return (
                    f"tier {tier}/min holds more keys than one rule's expression can list "
                    f"({EXPRESSION_LIMIT} characters): add a tier"
                )
            if rule_id:
                await self._request(
                    "PATCH", f"{self._zone_path()}/{self._ruleset}/rules/{rule_id}", json=rule
                )
                return ""
            if self._ruleset:
                body = await self._request(
                    "POST", f"{self._zone_path()}/{self._ruleset}/rules", json=rule
                )
            else:
                body = await self._request(
                    "PUT",
                    f"{self._zone_path()}/phases/http_ratelimit/entrypoint",
                    json={"rules": [rule]},
                )
                self._ruleset = str(body["result"]["id"])
            made = next(r for r in body["result"]["rules"] if r.get("ref") == rule["ref"])
            self._tiers[tier] = (str(made["id"]), keys)
            return ""
        except _Refused as exc:
            self._tiers = None  # read again: what Cloudflare holds is unknown now
            return f"Cloudflare refused the tier {tier} rule ({exc.status}): {exc}"

    # -- health, close --------------------------------------------------------------------

    async def health(self) -> Health:
        gateway = f"cloudflare account {self.options.account_id[:8]}…"
        try:
            if self.options.list_id:
                await self._request("GET", self._list_path(), params={"per_page": 1})
        except (ConnectorError, _Refused, _Busy) as exc:
            return Health(ok=False, gateway=gateway, detail=str(exc))
        return Health(ok=True, gateway=gateway)

    async def close(self) -> None:
        return None


def _entry_of_item(value: str) -> Entry:
    if "/" in value:
        return Entry(EntryType.BLOCK, "cidr", str(ipaddress.ip_network(value)))
    return Entry(EntryType.BLOCK, "ip", value)


def create(config: ConnectorConfig, http: httpx.AsyncClient) -> CloudflareConnector:
    return CloudflareConnector(config, http)
