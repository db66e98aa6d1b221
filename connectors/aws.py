"""AWS: IP blocks in WAFv2 IP sets, key revocation and per-key limits in API Gateway.

- block ip / cidr: an address in one of the connector's WAFv2 IP sets (a web ACL rule
  the lab adds references them and blocks: 403). AWS holds at most 10,000 addresses per
  set, so blocks are sharded over `ipv4_shards` / `ipv6_shards` sets named
  `{ip_set_prefix}-ipv4-0`, `-1`, ... (created at the first observe or apply, so the
  web ACL can reference them all up front).
- revoke_key api_key: the API Gateway key is disabled (API Gateway answers 403
  `Forbidden` for a disabled key), and marked `[tollgate revoked=1]` at the end of its
  description, so a lift re-enables
  only keys Tollgate disabled and `observe` never reports a key the lab disabled itself.
- rate_limit api_key: usage plans are tiers (`usage_plans`: plan id -> requests per
  minute): the key is moved to the strictest tier at or below its limit (429 past it),
  out of its own plans, which are remembered in its marks and given back at the lift.

Why it looks the way it does:
- `UpdateIPSet` replaces a set's whole list and takes the `LockToken` of the version it
  replaces. The connector keeps each set's list and token in memory (read at observe or
  first use), so an apply writes only the shards its diff touched, once each; a
  `WAFOptimisticLockException` (someone else wrote the set) re-reads that set, fresh
  token and list, re-applies the diff on top of it and tries again, a bounded number of
  times. Others' addresses are kept, never overwritten.
- AWS throttles WAF and API Gateway writes per account and Region: every write takes a
  token from a bucket shared by all connectors of this process on that account and
  Region (`writes_per_second`), and throttling errors are retried with backoff.
- The emulator (moto) accepts any CIDR and any number of addresses; AWS does not. So
  the connector checks each address itself (canonical, prefix 1..32 / 1..128, the per-
  set limit) and rejects what AWS would refuse, before any call.
- boto3 is synchronous: each call runs in a thread (`asyncio.to_thread`) with
  botocore's connect/read timeouts and its standard retry mode.

Account and org targets: API Gateway knows keys, not Tollgate's accounts or orgs, and a
connector is given entries only (no mapping from an account to its keys). So account
and org entries are rejected, saying so; policies that should reach AWS target the
keys (docs/aws.md).

This module never imports Tollgate's domain: only `controlplane.enforce.sdk`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

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
    WriteRate,
    bounded,
    option_error,
    parse_options,
    positive,
    with_retries,
)

T = TypeVar("T")

WAF_SET_LIMIT = 10_000
"""Addresses one WAFv2 IP set may hold (AWS's quota; the emulator does not check it)."""
_MARKS = re.compile(r"\s*\[tollgate((?: [a-z]+=[A-Za-z0-9,]*)*)\]$")
"""What Tollgate did to a key, at the end of its description: `[tollgate revoked=1
limit=75 home=plan1,plan2]` (revoked by Tollgate; limited to 75/min; the plans it was in
before). In the description rather than in tags because the emulator has no tags on
keys; either way a lab's own description is kept in front."""
_KEY_ID = re.compile(r"^[A-Za-z0-9]{1,128}$")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_THROTTLED = frozenset(
    {
        "ThrottlingException",
        "TooManyRequestsException",
        "WAFLimitsExceededException",
        "WAFUnavailableEntityException",
        "WAFInternalErrorException",
        "ServiceUnavailableException",
        "RequestLimitExceeded",
    }
)
"""Errors AWS answers when it is busy or throttling: retried with backoff, then failed.
(`WAFLimitsExceededException` also means "too many writes per second".)"""


@dataclass(frozen=True)
class AwsOptions:
    """`options:` of an `aws` connector in tollgate.yaml (docs/aws.md)."""

    region: str = "us-east-1"
    endpoint_url: str = ""
    """Another endpoint than AWS's (a VPC endpoint, or a moto server in tests)."""
    waf: bool = True
    """Enforce blocks in WAFv2 IP sets."""
    scope: Literal["REGIONAL", "CLOUDFRONT"] = "REGIONAL"
    ip_set_prefix: str = "tollgate-blocked"
    ipv4_shards: int = bounded(1, 0, 100)
    ipv6_shards: int = bounded(1, 0, 100)
    addresses_per_set: int = bounded(WAF_SET_LIMIT, 1, WAF_SET_LIMIT)
    api_gateway: bool = True
    """Enforce key revocations and rate limits in API Gateway."""
    key_match: Literal["id", "name"] = "id"
    """`id`: `api_key_id` is the API Gateway key's id; `name`: its name."""
    usage_plans: Mapping[str, int] = field(default_factory=dict)
    """Tiers: usage plan id -> the requests per minute it allows (its throttle)."""
    home_usage_plan: str = ""
    """Where a key goes at a lift when Tollgate did not see it in any plan before."""
    writes_per_second: float = positive(1.0)
    """Writes to AWS per second, shared by every connector on this account and Region."""
    write_burst: int = positive(5)
    lock_attempts: int = positive(5, 20)
    """Tries of an IP set write that meets `WAFOptimisticLockException`."""
    throttle_attempts: int = positive(4, 20)
    """Tries of a call that AWS throttles."""
    connect_timeout: float = positive(2.0, 60)
    read_timeout: float = positive(5.0, 300)

    @classmethod
    def of(cls, config: ConnectorConfig) -> AwsOptions:
        where = f"connector {config.name}: options"
        o = parse_options(cls, where, config.options, read_timeout=config.timeout_seconds)
        if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", o.region):
            raise option_error(where, "region", f"{o.region!r} is not an AWS Region")
        if o.scope == "CLOUDFRONT" and o.region != "us-east-1":
            raise option_error(where, "scope", "CLOUDFRONT needs region us-east-1")
        if o.endpoint_url and not re.fullmatch(r"https?://[^\s/?#@]+/?", o.endpoint_url):
            raise option_error(where, "endpoint_url", "must be http(s)://host[:port]")
        if not _NAME.fullmatch(o.ip_set_prefix) or len(o.ip_set_prefix) > 90:
            raise option_error(where, "ip_set_prefix", "must be up to 90 of A-Z a-z 0-9 _ -")
        for plan, rpm in o.usage_plans.items():
            if not _KEY_ID.fullmatch(plan):
                raise option_error(where, "usage_plans", f"{plan!r} is not a plan id")
            if rpm < 1:
                raise option_error(where, f"usage_plans[{plan!r}]", "must be >= 1")
        if o.home_usage_plan and not _KEY_ID.fullmatch(o.home_usage_plan):
            raise option_error(where, "home_usage_plan", "is not a plan id")
        if o.home_usage_plan in o.usage_plans:
            raise option_error(where, "home_usage_plan", "must not be a tier")
        if not (o.waf or o.api_gateway):
            raise option_error(where, "waf", "and options.api_gateway are both off: turn one on")
        return o


# -- WAF addresses ----------------------------------------------------------------------------


def waf_address(entry: Entry) -> tuple[str, int]:
    """The address as WAFv2 holds it (always CIDR notation) and its IP version; raises
    ValueError for what WAF refuses (a /0 network)."""
    network = ipaddress.ip_network(entry.target_value, strict=True)
    if network.prefixlen == 0:
        raise ValueError("WAF refuses /0 networks")
    return str(network), network.version


def entry_of_address(address: str) -> Entry:
    network = ipaddress.ip_network(address, strict=False)
    if network.prefixlen == network.max_prefixlen:
        return Entry(EntryType.BLOCK, "ip", str(network.network_address))
    return Entry(EntryType.BLOCK, "cidr", str(network))


@dataclass
class _Shard:
    """One IP set: its identity, the list AWS holds and the token of that version."""

    name: str
    version: int
    id: str = ""
    lock_token: str = ""
    addresses: set[str] = field(default_factory=set)


@dataclass
class _ShardPlan:
    add: set[str] = field(default_factory=set)
    remove: set[str] = field(default_factory=set)
    entries: list[Entry] = field(default_factory=list)


def _aws_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _aws_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return f"{error.get('Code', '')}: {error.get('Message', '')}"[:300]
    return type(exc).__name__


class AwsConnector:
    def __init__(self, config: ConnectorConfig, http: httpx.AsyncClient) -> None:
        self.name = config.name
        self.options = AwsOptions.of(config)
        self.min_prefix = config.min_prefix
        self._secrets = dict(config.secrets)
        unknown = set(self._secrets) - {"access_key_id", "secret_access_key", "session_token"}
        if unknown:
            raise ConnectorError(
                f"connector {config.name}: unknown secret(s) {sorted(unknown)}; known: "
                "access_key_id, secret_access_key, session_token",
                retryable=False,
            )
        if ("access_key_id" in self._secrets) != ("secret_access_key" in self._secrets):
            raise ConnectorError(
                f"connector {config.name}: secrets access_key_id and secret_access_key go together",
                retryable=False,
            )
        self._clients: dict[str, Any] = {}
        self._shards: list[_Shard] | None = None
        self._where: dict[str, _Shard] = {}
        """Address -> the shard holding it."""
        self._owners: dict[str, set[tuple[str, str, str]]] = {}
        """Address -> the entries asking for it (an ip and its /32 cidr share one)."""
        self._key_ids: dict[str, str] = {}
        """`key_match: name`: key name -> API Gateway key id."""
        self._lock = asyncio.Lock()
        self._rate: WriteRate | None = None

    def capabilities(self) -> frozenset[EntryType]:
        kinds: set[EntryType] = set()
        if self.options.waf:
            kinds.add(EntryType.BLOCK)
        if self.options.api_gateway:
            kinds.add(EntryType.REVOKE_KEY)
            if self.options.usage_plans:
                kinds.add(EntryType.RATE_LIMIT)
        return frozenset(kinds)

    # -- calls ----------------------------------------------------------------------------

    def _client(self, service: str) -> Any:
        client = self._clients.get(service)
        if client is None:
            import boto3
            from botocore.config import Config

            session = boto3.session.Session(
                aws_access_key_id=self._secrets.get("access_key_id"),
                aws_secret_access_key=self._secrets.get("secret_access_key"),
                aws_session_token=self._secrets.get("session_token"),
                region_name=self.options.region,
            )
            client = session.client(
                service,
                endpoint_url=self.options.endpoint_url or None,
                config=Config(
                    connect_timeout=self.options.connect_timeout,
                    read_timeout=self.options.read_timeout,
                    retries={"max_attempts": 2, "mode": "standard"},
                ),
            )
            self._clients[service] = client
        return client

    async def _call(self, service: str, op: str, *, write: bool = False, **kwargs: Any) -> Any:
        """One AWS call in a thread; throttling is retried with backoff (each write try
        takes a token of the account's bucket); unreachable is `GatewayUnavailable`."""
        from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as Unreachable

        async def once() -> Any:
            if write:
                await (await self._write_rate()).acquire()
            client = await asyncio.to_thread(self._client, service)
            return await asyncio.to_thread(getattr(client, op), **kwargs)

        try:
            return await with_retries(
                once,
                attempts=self.options.throttle_attempts,
                retry_on=lambda e: _aws_code(e) in _THROTTLED,
            )
        except ClientError:
            raise
        except (Unreachable, HTTPClientError) as exc:
            raise GatewayUnavailable(f"{service} {op}: {type(exc).__name__}") from None
        except BotoCoreError as exc:
            raise ConnectorError(f"{service} {op}: {exc}", retryable=False) from None

    async def _write_rate(self) -> WriteRate:
        if self._rate is None:
            identity = await asyncio.to_thread(lambda: self._client("sts").get_caller_identity())
            self._rate = WriteRate.for_scope(
                ("aws", str(identity.get("Account", "")), self.options.region),
                self.options.writes_per_second,
                self.options.write_burst,
            )
        return self._rate

    # -- observe --------------------------------------------------------------------------

    async def observe(self) -> GatewayState:
        """Every address in the connector's IP sets, every key it disabled (marked), and
        every key in a tier plan, as entries; the in-memory model is refreshed."""
        async with self._lock:
            entries: set[Entry] = set()
            extra: dict[str, Any] = {}
            if self.options.waf:
                shards = await self._load_shards()
                self._where.clear()
                self._owners.clear()
                for shard in shards:
                    for address in shard.addresses:
                        entry = entry_of_address(address)
                        self._where[address] = shard
                        self._owners[address] = {entry.key}
                        entries.add(entry)
                extra["addresses_per_set"] = {s.name: len(s.addresses) for s in shards}
            if self.options.api_gateway:
                entries |= await self._observe_keys()
            return GatewayState(frozenset(entries), extra=extra)

    async def _load_shards(self) -> list[_Shard]:
        """The connector's IP sets, created when missing, each read with its LockToken."""
        wanted = [
            _Shard(f"{self.options.ip_set_prefix}-ipv{v}-{i}", v)
            for v, count in ((4, self.options.ipv4_shards), (6, self.options.ipv6_shards))
            for i in range(count)
        ]
        known: dict[str, str] = {}
        marker: str | None = None
        while True:
            page = await self._waf(
                "list_ip_sets", Scope=self.options.scope, Limit=100, **_page("NextMarker", marker)
            )
            known.update({s["Name"]: s["Id"] for s in page.get("IPSets", [])})
            marker = page.get("NextMarker")
            if not marker or not page.get("IPSets"):
                break
        for shard in wanted:
            if shard.name in known:
                shard.id = known[shard.name]
                await self._refresh(shard)
                continue
            created = await self._waf(
                "create_ip_set",
                write=True,
                Name=shard.name,
                Scope=self.options.scope,
                IPAddressVersion=f"IPV{shard.version}",
                Addresses=[],
                Description="Blocked by Tollgate: managed by the tollgate aws connector",
            )
            shard.id = created["Summary"]["Id"]
            shard.lock_token = created["Summary"]["LockToken"]
        self._shards = wanted
        return wanted

    async def _refresh(self, shard: _Shard) -> None:
        got = await self._waf("get_ip_set", Name=shard.name, Scope=self.options.scope, Id=shard.id)
        shard.lock_token = got["LockToken"]
        shard.addresses = {
            str(ipaddress.ip_network(a, strict=False)) for a in got["IPSet"]["Addresses"]
        }

    async def _waf(self, op: str, *, write: bool = False, **kwargs: Any) -> Any:
        return await self._call("wafv2", op, write=write, **kwargs)

    async def _observe_keys(self) -> set[Entry]:
        entries: set[Entry] = set()
        position: str | None = None
        while True:
            page = await self._call(
                "apigateway",
                "get_api_keys",
                limit=500,
                **_page("position", position),
            )
            for key in page.get("items", []):
                marks = marks_of(key)
                name = key["id"] if self.options.key_match == "id" else key.get("name", "")
                if self.options.key_match == "name":
                    self._key_ids[name] = key["id"]
                if marks.get("revoked") == "1" and not key.get("enabled", True):
                    entries.add(Entry(EntryType.REVOKE_KEY, "api_key", name))
                if marks.get("limit", "").isdigit():
                    entries.add(Entry(EntryType.RATE_LIMIT, "api_key", name, int(marks["limit"])))
            position = page.get("position")
            if not position:
                return entries

    # -- apply ----------------------------------------------------------------------------

    async def apply(self, diff: Diff) -> ApplyResult:
        """Blocks per shard (one write per touched shard), keys one by one. Idempotent:
        an address already held, a key already disabled or in its tier, is done."""
        result = ApplyResult()
        async with self._lock:
            blocks: list[tuple[Entry, bool]] = []
            keys: list[tuple[Entry, bool]] = []
            for entry in (*diff.add, *diff.change):
                why = self._refusal(entry)
                if why:
                    result.rejected.append((entry, why))
                elif entry.type is EntryType.BLOCK:
                    blocks.append((entry, True))
                else:
                    keys.append((entry, True))
            for entry in diff.remove:
                if entry.type is EntryType.BLOCK and self.options.waf:
                    blocks.append((entry, False))
                elif entry.type is not EntryType.BLOCK and self.options.api_gateway:
                    keys.append((entry, False))
                else:
                    result.done.append(entry)  # never held here
            if blocks:
                await self._apply_blocks(blocks, result)
            for entry, adding in keys:
                await self._apply_key(entry, adding, result)
        return result

    def _refusal(self, entry: Entry) -> str:
        why = refusal(entry, self.min_prefix)
        if why:
            return why
        if entry.type is EntryType.BLOCK:
            if not self.options.waf:
                return "this aws connector has waf off: it does not enforce blocks"
            if entry.target_kind not in ("ip", "cidr"):
                return f"WAF blocks addresses, not {entry.target_kind} targets"
            try:
                waf_address(entry)
            except ValueError as exc:
                return f"refused before it reached the gateway: {exc}"
            return ""
        if not self.options.api_gateway:
            return "this aws connector has api_gateway off: it does not enforce keys"
        if entry.target_kind in ("account", "org"):
            return (
                f"API Gateway knows keys, not {entry.target_kind}s, and this connector is "
                f"given no mapping from an {entry.target_kind} to its keys: target the keys"
            )
        if entry.target_kind != "api_key":
            return f"API Gateway cannot {entry.type.value} a {entry.target_kind}"
        if self.options.key_match == "id" and not _KEY_ID.fullmatch(entry.target_value):
            return "not an API Gateway key id (letters and digits only)"
        if entry.type is EntryType.RATE_LIMIT:
            if not self.options.usage_plans:
                return "no usage_plans configured: this connector cannot limit keys"
            if self._tier(entry.requests_per_minute or 0) is None:
                least = min(self.options.usage_plans.values())
                return (
                    f"no usage plan is as strict as {entry.requests_per_minute}/min (the "
                    f"strictest allows {least}/min): add a stricter tier to usage_plans"
                )
        return ""

    def _tier(self, rpm: int) -> str | None:
        """The strictest-but-closest plan at or below `rpm`: never looser than asked."""
        plans = self.options.usage_plans.items()
        fitting = [(limit, plan) for plan, limit in plans if limit <= rpm]
        return max(fitting)[1] if fitting else None

    # -- WAF ------------------------------------------------------------------------------

    async def _apply_blocks(self, blocks: list[tuple[Entry, bool]], result: ApplyResult) -> None:
        shards = self._shards if self._shards is not None else await self._load_shards_model()
        plans: dict[str, _ShardPlan] = {}
        room = {s.name: len(s.addresses) for s in shards}
        for entry, adding in blocks:
            address, version = waf_address(entry)
            owners = self._owners.setdefault(address, set())
            if adding:
                owners.add(entry.key)
                held = self._where.get(address)
                if held is not None and address not in plans.get(held.name, _ShardPlan()).remove:
                    result.done.append(entry)
                    continue
                shard = held or next(
                    (
                        s
                        for s in shards
                        if s.version == version and room[s.name] < self.options.addresses_per_set
                    ),
                    None,
                )
                if shard is None:
                    owners.discard(entry.key)
                    count = self.options.ipv4_shards if version == 4 else self.options.ipv6_shards
                    result.failed.append(
                        (
                            entry,
                            f"every IPv{version} IP set is full ({count} sets of "
                            f"{self.options.addresses_per_set}): raise ipv{version}_shards",
                        )
                    )
                    continue
                plan = plans.setdefault(shard.name, _ShardPlan())
                plan.remove.discard(address)
                plan.add.add(address)
                plan.entries.append(entry)
                room[shard.name] += 1
            else:
                owners.discard(entry.key)
                held = self._where.get(address)
                if owners or held is None:
                    if not owners:
                        self._owners.pop(address, None)
                    result.done.append(entry)
                    continue
                plan = plans.setdefault(held.name, _ShardPlan())
                plan.add.discard(address)
                plan.remove.add(address)
                plan.entries.append(entry)
                room[held.name] -= 1
        by_name = {s.name: s for s in shards}
        for name, plan in plans.items():
            await self._write_shard(by_name[name], plan, result)

    async def _load_shards_model(self) -> list[_Shard]:
        shards = await self._load_shards()
        for shard in shards:
            for address in shard.addresses:
                self._where[address] = shard
                self._owners.setdefault(address, set()).add(entry_of_address(address).key)
        return shards

    async def _write_shard(self, shard: _Shard, plan: _ShardPlan, result: ApplyResult) -> None:
        """Replace the set's list with (what it holds + adds - removes), under its
        LockToken; on `WAFOptimisticLockException`, read the set again and retry."""
        from botocore.exceptions import ClientError

        for attempt in range(self.options.lock_attempts):
            addresses = (shard.addresses | plan.add) - plan.remove
            if len(addresses) > self.options.addresses_per_set:
                why = f"IP set {shard.name} would exceed {self.options.addresses_per_set}"
                result.failed.extend((e, why) for e in plan.entries)
                return
            try:
                reply = await self._waf(
                    "update_ip_set",
                    write=True,
                    Name=shard.name,
                    Scope=self.options.scope,
                    Id=shard.id,
                    Addresses=sorted(addresses),
                    LockToken=shard.lock_token,
                )
            except ClientError as exc:
                code = _aws_code(exc)
                retry = attempt + 1 < self.options.lock_attempts
                if code == "WAFOptimisticLockException" and retry:
                    await self._refresh(shard)
                    continue
                if code == "WAFNonexistentItemException":
                    self._shards = None  # deleted by hand: found or made again next time
                why = f"UpdateIPSet {shard.name}: {_aws_message(exc)}"
                if code == "WAFInvalidParameterException":
                    result.rejected.extend((e, why) for e in plan.entries)
                else:
                    result.failed.extend((e, why) for e in plan.entries)
                return
            shard.lock_token = reply["NextLockToken"]
            shard.addresses = addresses
            for address in plan.add:
                self._where[address] = shard
            for address in plan.remove:
                self._where.pop(address, None)
                if not self._owners.get(address):
                    self._owners.pop(address, None)
            result.done.extend(plan.entries)
            return

    # -- API Gateway ----------------------------------------------------------------------

    async def _key_id(self, name: str) -> str | None:
        if self.options.key_match == "id":
            return name
        if name in self._key_ids:
            return self._key_ids[name]
        page = await self._call("apigateway", "get_api_keys", nameQuery=name, limit=500)
        for key in page.get("items", []):
            if key.get("name") == name:
                self._key_ids[name] = key["id"]
                return str(key["id"])
        return None

    async def _apply_key(self, entry: Entry, adding: bool, result: ApplyResult) -> None:
        from botocore.exceptions import ClientError

        try:
            key_id = await self._key_id(entry.target_value)
            if key_id is None:
                if adding:
                    result.rejected.append((entry, "API Gateway has no key of that name"))
                else:
                    result.done.append(entry)
                return
            if entry.type is EntryType.REVOKE_KEY:
                await self._revoke(key_id, adding)
            else:
                await self._limit(key_id, entry, adding)
        except ClientError as exc:
            code = _aws_code(exc)
            if code == "NotFoundException":
                if adding:
                    result.rejected.append((entry, "API Gateway has no key with that id"))
                else:
                    result.done.append(entry)
                return
            why = f"API Gateway: {_aws_message(exc)}"
            if code == "BadRequestException":
                result.rejected.append((entry, why))
            else:
                result.failed.append((entry, why))
            return
        result.done.append(entry)

    async def _revoke(self, key_id: str, revoking: bool) -> None:
        key = await self._call("apigateway", "get_api_key", apiKey=key_id)
        marks = marks_of(key)
        if revoking:
            if key.get("enabled", True):
                await self._set_enabled(key_id, False)
            if marks.get("revoked") != "1":
                await self._mark(key_id, key, {**marks, "revoked": "1"})
        elif marks.get("revoked") == "1":  # only a key Tollgate disabled comes back
            if not key.get("enabled", True):
                await self._set_enabled(key_id, True)
            await self._mark(key_id, key, {k: v for k, v in marks.items() if k != "revoked"})

    async def _set_enabled(self, key_id: str, enabled: bool) -> None:
        await self._call(
            "apigateway",
            "update_api_key",
            write=True,
            apiKey=key_id,
            patchOperations=[
                {"op": "replace", "path": "/enabled", "value": "true" if enabled else "false"}
            ],
        )

    async def _mark(self, key_id: str, key: Mapping[str, Any], marks: dict[str, str]) -> None:
        """Record what Tollgate did to the key at the end of its description."""
        description = with_marks(str(key.get("description") or ""), marks)
        await self._call(
            "apigateway",
            "update_api_key",
            write=True,
            apiKey=key_id,
            patchOperations=[{"op": "replace", "path": "/description", "value": description}],
        )

    async def _plans_of(self, key_id: str) -> list[str]:
        plans: list[str] = []
        position: str | None = None
        while True:
            page = await self._call(
                "apigateway",
                "get_usage_plans",
                keyId=key_id,
                limit=500,
                **_page("position", position),
            )
            plans.extend(p["id"] for p in page.get("items", []))
            position = page.get("position")
            if not position:
                return plans

    async def _limit(self, key_id: str, entry: Entry, limiting: bool) -> None:
        """Move the key into its tier (out of every other plan, remembered in its marks),
        or back to the plans it came from."""
        key = await self._call("apigateway", "get_api_key", apiKey=key_id)
        marks = marks_of(key)
        current = await self._plans_of(key_id)
        tiers = set(self.options.usage_plans)
        if limiting:
            target = self._tier(entry.requests_per_minute or 0)
            assert target is not None  # checked by _refusal
            remembered = [p for p in marks.get("home", "").split(",") if p]
            homes = list(dict.fromkeys([*remembered, *(p for p in current if p not in tiers)]))
            wanted = {**marks, "limit": str(entry.requests_per_minute), "home": ",".join(homes)}
            if not wanted["home"]:
                del wanted["home"]
            if wanted != marks:  # remembered before the key leaves its plans
                await self._mark(key_id, key, wanted)
            for plan in current:
                if plan != target:
                    await self._plan_key(plan, key_id, add=False)
            if target not in current:
                await self._plan_key(target, key_id, add=True)
            return
        if "limit" not in marks:
            return  # not limited by Tollgate
        homes = [p for p in marks.get("home", "").split(",") if p]
        if not homes and self.options.home_usage_plan:
            homes = [self.options.home_usage_plan]
        for plan in current:
            if plan in tiers:
                await self._plan_key(plan, key_id, add=False)
        for plan in homes:
            if plan not in current:
                await self._plan_key(plan, key_id, add=True)
        await self._mark(
            key_id, key, {k: v for k, v in marks.items() if k not in ("limit", "home")}
        )

    async def _plan_key(self, plan: str, key_id: str, *, add: bool) -> None:
        from botocore.exceptions import ClientError

        try:
            if add:
                await self._call(
                    "apigateway",
                    "create_usage_plan_key",
                    write=True,
                    usagePlanId=plan,
                    keyId=key_id,
                    keyType="API_KEY",
                )
            else:
                await self._call(
                    "apigateway",
                    "delete_usage_plan_key",
                    write=True,
                    usagePlanId=plan,
                    keyId=key_id,
                )
        except ClientError as exc:
            code = _aws_code(exc)
            if add and code == "ConflictException":
                return  # already there
            if not add and code == "NotFoundException":
                return  # already gone
            raise

    # -- health, close --------------------------------------------------------------------

    async def health(self) -> Health:
        gateway = f"aws {self.options.region}" + (
            f" at {self.options.endpoint_url}" if self.options.endpoint_url else ""
        )
        try:
            if self.options.waf:
                await self._waf("list_ip_sets", Scope=self.options.scope, Limit=1)
            if self.options.api_gateway:
                await self._call("apigateway", "get_api_keys", limit=1)
        except ConnectorError as exc:
            return Health(ok=False, gateway=gateway, detail=str(exc))
        except Exception as exc:
            return Health(ok=False, gateway=gateway, detail=_aws_message(exc))
        held = sum(len(s.addresses) for s in self._shards or [])
        return Health(ok=True, gateway=gateway, detail=f"{held} addresses in IP sets")

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            close: Callable[[], None] | None = getattr(client, "close", None)
            if close is not None:
                await asyncio.to_thread(close)


def marks_of(key: Mapping[str, Any]) -> dict[str, str]:
    match = _MARKS.search(str(key.get("description") or ""))
    if match is None:
        return {}
    return dict(pair.split("=", 1) for pair in match.group(1).split())


def with_marks(description: str, marks: Mapping[str, str]) -> str:
    base = _MARKS.sub("", description)
    if not marks:
        return base
    pairs = " ".join(f"{k}={v}" for k, v in sorted(marks.items()))
    return f"{base} [tollgate {pairs}]".lstrip()


def _page(name: str, value: str | None) -> dict[str, Any]:
    """The paging argument of a call: absent on the first page."""
    return {name: value} if value else {}


def create(config: ConnectorConfig, http: httpx.AsyncClient) -> AwsConnector:
    return AwsConnector(config, http)
