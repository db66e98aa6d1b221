"""Envoy: blocks, key revocations and per-key limits, delivered by filesystem xDS.

Envoy reads its routes from a file (RDS over `path_config_source`) and loads a new
version when a file is *moved* onto that path, so every change is: render the route
configuration, write it to a temporary file beside it, fsync, rename. What the route
configuration holds (`sample_bootstrap()` renders the static part that pairs with it):

- block ip / cidr: an RBAC `DENY` policy (per-route override of the listener's RBAC
  filter) whose principals are `direct_remote_ip` (the peer) or, with
  `client_address: forwarded`, `remote_ip` (from X-Forwarded-For, as far as the
  connection manager's `xff_num_trusted_hops` trusts it): 403.
- revoke_key api_key: the virtual host's matcher maps the key header's value (the key's
  SHA-256 fingerprint, set by the authenticating layer in front) to a route that answers
  401 itself; every other request goes to the upstream route. An exact-match map: one
  lookup per request however many keys are revoked.
- rate_limit api_key: a `local_ratelimit` descriptor per key (a token bucket of
  `requests_per_minute` tokens refilled every minute) on the header's value, with
  `filter_enabled` and `filter_enforced` at 100% (both default to 0%, which counts
  nothing and enforces nothing): 429.

An apply costs what its diff holds in Python: the connector keeps the entries in memory
(read back from the file at `observe`) and changes only what the diff names. Rendering
the file is whole-file by nature (xDS has no partial file), so writes are coalesced: at
most one per `flush_min_seconds`, carrying every diff queued meanwhile, and each apply
returns once the file holding its entries is in place (and, with `admin_url`, once
Envoy reports that version loaded: a version Envoy rejects fails the entries it carried,
and the next apply writes again).

This module never imports Tollgate's domain: only `controlplane.enforce.sdk`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
from controlplane.enforce.toolkit import option_error, parse_options, positive

log = logging.getLogger(__name__)

ROUTE = "type.googleapis.com/envoy.config.route.v3.Route"
ROUTE_CONFIGURATION = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
RBAC_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
LOCAL_RATE_LIMIT = (
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
)
HEADER_INPUT = "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput"
RBAC_FILTER = "envoy.filters.http.rbac"
RATE_FILTER = "envoy.filters.http.local_ratelimit"
BLOCK_POLICY = "tollgate-blocked"
DESCRIPTOR_KEY = "tollgate_key"
ALWAYS = {"numerator": 100, "denominator": "HUNDRED"}
UNLIMITED = {"max_tokens": 1_000_000_000, "tokens_per_fill": 1_000_000_000, "fill_interval": "1s"}
"""The filter's own bucket, for requests without a limited key: never the one that refuses."""
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
_HEADER = re.compile(r"^[a-z0-9-]{1,100}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass(frozen=True)
class EnvoyOptions:
    """`options:` of an `envoy` connector in tollgate.yaml (docs/envoy.md)."""

    rds_path: str
    """The file named by the bootstrap's `rds.config_source.path_config_source.path`."""
    route_config_name: str = "tollgate"
    virtual_host: str = "model_api"
    cluster: str = "model_api"
    """The upstream cluster requests that pass go to (defined in the bootstrap)."""
    key_header: str = "x-api-key-sha256"
    """The header carrying the key's SHA-256 fingerprint (`key_match: fingerprint`) or
    the lab's key id (`key_match: id`), set by the authenticating layer in front."""
    key_match: Literal["fingerprint", "id"] = "fingerprint"
    client_address: Literal["direct", "forwarded"] = "direct"
    """`direct`: block the peer's address (`direct_remote_ip`). `forwarded`: the client
    address Envoy derives from X-Forwarded-For (`remote_ip`), for an Envoy behind a
    proxy; set the connection manager's `xff_num_trusted_hops` accordingly."""
    admin_url: str = ""
    """Envoy's admin address (loopback): confirms each version loaded; health."""
    flush_min_seconds: float = positive(0.2, 60)
    """At most one file write per this many seconds, carrying every diff queued."""
    confirm_seconds: float = positive(5.0, 300)
    """How long an apply waits for Envoy to report the new version (with `admin_url`)."""

    @classmethod
    def of(cls, config: ConnectorConfig) -> EnvoyOptions:
        where = f"connector {config.name}: options"
        o = parse_options(cls, where, config.options)
        if not o.rds_path.startswith("/") or re.search(r"\s", o.rds_path):
            raise option_error(where, "rds_path", "must be an absolute path, no spaces")
        for name in ("route_config_name", "virtual_host", "cluster"):
            if not _NAME.fullmatch(getattr(o, name)):
                raise option_error(where, name, "must be up to 100 of A-Z a-z 0-9 _ . -")
        if not _HEADER.fullmatch(o.key_header):
            raise option_error(where, "key_header", "must be a lowercase header name")
        if o.admin_url and not re.fullmatch(
            r"http://(127\.\d+\.\d+\.\d+|localhost|\[::1\]):\d+/?", o.admin_url
        ):
            raise option_error(
                where,
                "admin_url",
                "must be http://127.0.0.1:PORT (Envoy's admin interface is never exposed "
                "beyond loopback)",
            )
        return o


@dataclass
class RouteModel:
    """What the route file holds: blocks by network, revoked keys, limits by key."""

    blocked: dict[str, set[str]] = field(default_factory=dict)
    """Network (as Envoy's address_prefix/prefix_len) -> the target kinds asking for it."""
    revoked: set[str] = field(default_factory=set)
    limits: dict[str, int] = field(default_factory=dict)

    def entries(self) -> frozenset[Entry]:
        found: set[Entry] = set()
        for network, kinds in self.blocked.items():
            net = ipaddress.ip_network(network)
            for kind in kinds:
                value = str(net.network_address) if kind == "ip" else str(net)
                found.add(Entry(EntryType.BLOCK, kind, value))
        found |= {Entry(EntryType.REVOKE_KEY, "api_key", k) for k in self.revoked}
        found |= {Entry(EntryType.RATE_LIMIT, "api_key", k, n) for k, n in self.limits.items()}
        return frozenset(found)


class EnvoyConnector:
    def __init__(self, config: ConnectorConfig, http: httpx.AsyncClient) -> None:
        self.name = config.name
        self.options = EnvoyOptions.of(config)
        self.min_prefix = config.min_prefix
        self.timeout = config.timeout_seconds
        self._http = http
        self._model: RouteModel | None = None
        self._version = 0
        self._written = -1
        """The model version last written to the file (`_version` is the model's)."""
        self._confirmed = True
        self._queue: list[tuple[Diff, asyncio.Future[ApplyResult]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._last_flush = 0.0
        self._lock = asyncio.Lock()
        self.writes = 0

    def capabilities(self) -> frozenset[EntryType]:
        return frozenset(EntryType)

    # -- observe --------------------------------------------------------------------------

    async def observe(self) -> GatewayState:
        """The entries the route file holds (the file is what Envoy loads); the model is
        refreshed from it, so a file edited by hand is known from here on."""
        async with self._lock:
            model, version = await asyncio.to_thread(self._read)
            self._model, self._version = model, max(self._version, version)
            self._written = self._version
            return GatewayState(model.entries(), extra={"version": version})

    def _read(self) -> tuple[RouteModel, int]:
        path = Path(self.options.rds_path)
        if not path.exists():
            return RouteModel(), 0
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            return parse_routes(document, self.options)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConnectorError(
                f"{path} is not a route file this connector wrote ({exc}): move it away "
                "and reconcile to write it again",
                retryable=False,
            ) from None

    # -- apply ----------------------------------------------------------------------------

    async def apply(self, diff: Diff) -> ApplyResult:
        """Change the model by the diff and return once a file carrying it is in place
        (and loaded, with `admin_url`). Writes are coalesced: every diff queued while a
        write waits for `flush_min_seconds` goes out in that one write."""
        done: asyncio.Future[ApplyResult] = asyncio.get_running_loop().create_future()
        self._queue.append((diff, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_queued())
        return await done

    async def _flush_queued(self) -> None:
        while self._queue:
            wait = self._last_flush + self.options.flush_min_seconds - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            batch = [(d, f) for d, f in self._queue if not f.done()]
            self._queue.clear()
            if not batch:
                continue
            self._last_flush = time.monotonic()
            try:
                results = await self._apply_batch([d for d, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _apply_batch(self, diffs: list[Diff]) -> list[ApplyResult]:
        async with self._lock:
            if self._model is None:
                self._model, version = await asyncio.to_thread(self._read)
                self._version = self._written = max(self._version, version)
            results = [self._plan(diff) for diff in diffs]
            if self._version != self._written or not self._confirmed:
                why = await self._write()
                if why:
                    for result in results:
                        result.failed.extend((e, why) for e in result.done)
                        result.done.clear()
            return results

    def _plan(self, diff: Diff) -> ApplyResult:
        """The diff against the model: O(entries in the diff)."""
        assert self._model is not None
        model, result, changed = self._model, ApplyResult(), False
        for entry in (*diff.add, *diff.change):
            why = self._refusal(entry)
            if why:
                result.rejected.append((entry, why))
                continue
            if entry.type is EntryType.BLOCK:
                kinds = model.blocked.setdefault(_network(entry), set())
                changed |= entry.target_kind not in kinds
                kinds.add(entry.target_kind)
            elif entry.type is EntryType.REVOKE_KEY:
                changed |= entry.target_value not in model.revoked
                model.revoked.add(entry.target_value)
            else:
                rpm = entry.requests_per_minute or 0
                changed |= model.limits.get(entry.target_value) != rpm
                model.limits[entry.target_value] = rpm
            result.done.append(entry)
        for entry in diff.remove:
            if entry.type is EntryType.BLOCK and entry.target_kind in ("ip", "cidr"):
                with contextlib.suppress(ValueError):
                    network = _network(entry)
                    kinds = model.blocked.get(network, set())
                    changed |= entry.target_kind in kinds
                    kinds.discard(entry.target_kind)
                    if not kinds:
                        model.blocked.pop(network, None)
            elif entry.type is EntryType.REVOKE_KEY:
                changed |= entry.target_value in model.revoked
                model.revoked.discard(entry.target_value)
            elif entry.type is EntryType.RATE_LIMIT:
                changed |= model.limits.pop(entry.target_value, None) is not None
            result.done.append(entry)
        if changed:
            self._version += 1
        return result

    def _refusal(self, entry: Entry) -> str:
        why = refusal(entry, self.min_prefix)
        if why:
            return why
        if entry.type is EntryType.BLOCK:
            if entry.target_kind not in ("ip", "cidr"):
                return f"Envoy blocks addresses, not {entry.target_kind} targets"
            return ""
        if entry.target_kind != "api_key":
            return (
                f"Envoy sees the {self.options.key_header} header, not {entry.target_kind}s: "
                f"this connector cannot {entry.type.value} an {entry.target_kind}"
            )
        if self.options.key_match == "fingerprint" and not _FINGERPRINT.fullmatch(
            entry.target_value
        ):
            return (
                "key_match is fingerprint: the api_key_id must be the key's SHA-256 "
                "fingerprint (64 lowercase hex digits)"
            )
        if entry.type is EntryType.RATE_LIMIT and not entry.requests_per_minute:
            return "a rate limit needs requests_per_minute >= 1"
        return ""

    async def _write(self) -> str:
        """Render the model, move it into place; with `admin_url`, wait until Envoy
        reports the version. '' when done, else why (the entries fail and are retried)."""
        assert self._model is not None
        version = self._version
        document = render_routes(self._model, self.options, version)
        try:
            await asyncio.to_thread(atomic_write, Path(self.options.rds_path), document)
        except OSError as exc:
            self._confirmed = False
            return f"could not write {self.options.rds_path}: {exc.strerror}"
        self._written = version
        self.writes += 1
        if not self.options.admin_url:
            self._confirmed = True
            return ""
        self._confirmed = await self._loaded(version)
        if not self._confirmed:
            return (
                f"Envoy did not load route version {version} within "
                f"{self.options.confirm_seconds:g}s (rejected? see Envoy's log)"
            )
        return ""

    async def _loaded(self, version: int) -> bool:
        deadline = time.monotonic() + self.options.confirm_seconds
        while True:
            try:
                if await self.loaded_version() == str(version):
                    return True
            except GatewayUnavailable:
                pass
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)

    async def loaded_version(self) -> str:
        """The route configuration version Envoy runs (admin `config_dump`)."""
        url = self.options.admin_url.rstrip("/") + "/config_dump"
        try:
            response = await self._http.get(
                url, params={"resource": "dynamic_route_configs"}, timeout=self.timeout
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(f"Envoy admin at {self.options.admin_url}: {exc}") from None
        for config in response.json().get("configs", []):
            route = config.get("route_config", {})
            if route.get("name") == self.options.route_config_name:
                return str(config.get("version_info", ""))
        return ""

    # -- health, close --------------------------------------------------------------------

    async def health(self) -> Health:
        gateway = f"envoy routes at {self.options.rds_path}"
        if not self.options.admin_url:
            ok = Path(self.options.rds_path).parent.is_dir()
            return Health(ok=ok, gateway=gateway, detail="" if ok else "no such directory")
        try:
            loaded = await self.loaded_version()
        except GatewayUnavailable as exc:
            return Health(ok=False, gateway=gateway, detail=str(exc))
        if self._written >= 0 and loaded != str(self._written):
            return Health(
                ok=False,
                gateway=gateway,
                detail=f"Envoy runs route version {loaded or 'none'}, the file holds "
                f"{self._written}: it was rejected (see Envoy's log)",
            )
        return Health(ok=True, gateway=gateway, detail=f"route version {loaded}")

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._flusher), self.timeout)
            except TimeoutError:
                pass  # what was still queued is applied by the next follower
            except Exception:
                # Its callers were told (each apply fails with it); closing goes on.
                log.warning("Envoy connector's last write failed as it closed", exc_info=True)


# -- rendering ---------------------------------------------------------------------------------


def _network(entry: Entry) -> str:
    return str(ipaddress.ip_network(entry.target_value, strict=True))


def render_routes(model: RouteModel, options: EnvoyOptions, version: int) -> dict[str, Any]:
    """The RDS discovery response Envoy loads from `rds_path`."""
    upstream = {"@type": ROUTE, "match": {"prefix": "/"}, "route": {"cluster": options.cluster}}
    revoked = {
        "@type": ROUTE,
        "match": {"prefix": "/"},
        "direct_response": {
            "status": 401,
            "body": {"inline_string": '{"error":"api key revoked"}'},
        },
    }
    principal = "direct_remote_ip" if options.client_address == "direct" else "remote_ip"
    policies: dict[str, Any] = {}
    if model.blocked:
        principals = []
        for network in sorted(model.blocked):
            net = ipaddress.ip_network(network)
            principals.append(
                {
                    principal: {
                        "address_prefix": str(net.network_address),
                        "prefix_len": net.prefixlen,
                    }
                }
            )
        policies[BLOCK_POLICY] = {"permissions": [{"any": True}], "principals": principals}
    host: dict[str, Any] = {
        "name": options.virtual_host,
        "domains": ["*"],
        "rate_limits": [
            {
                "actions": [
                    {
                        "request_headers": {
                            "header_name": options.key_header,
                            "descriptor_key": DESCRIPTOR_KEY,
                        }
                    }
                ]
            }
        ],
        "typed_per_filter_config": {
            RBAC_FILTER: {
                "@type": RBAC_PER_ROUTE,
                "rbac": {"rules": {"action": "DENY", "policies": policies}},
            },
            RATE_FILTER: {
                "@type": LOCAL_RATE_LIMIT,
                "stat_prefix": "tollgate_rate",
                "token_bucket": UNLIMITED,
                "filter_enabled": {"default_value": ALWAYS, "runtime_key": "tollgate_rl_on"},
                "filter_enforced": {"default_value": ALWAYS, "runtime_key": "tollgate_rl_enf"},
                "response_headers_to_add": [
                    {
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                        "header": {"key": "retry-after", "value": "60"},
                    }
                ],
                "descriptors": [
                    {
                        "entries": [{"key": DESCRIPTOR_KEY, "value": key}],
                        "token_bucket": {
                            "max_tokens": rpm,
                            "tokens_per_fill": rpm,
                            "fill_interval": "60s",
                        },
                    }
                    for key, rpm in sorted(model.limits.items())
                ],
            },
        },
    }
    if model.revoked:  # an exact-match map may not be empty
        host["matcher"] = {
            "matcher_tree": {
                "input": {
                    "name": "tollgate-key",
                    "typed_config": {"@type": HEADER_INPUT, "header_name": options.key_header},
                },
                "exact_match_map": {
                    "map": {
                        key: {"action": {"name": "tollgate-revoked", "typed_config": revoked}}
                        for key in sorted(model.revoked)
                    }
                },
            },
            "on_no_match": {"action": {"name": "upstream", "typed_config": upstream}},
        }
    else:
        host["routes"] = [{k: v for k, v in upstream.items() if k != "@type"}]
    return {
        "version_info": str(version),
        "resources": [
            {
                "@type": ROUTE_CONFIGURATION,
                "name": options.route_config_name,
                "virtual_hosts": [host],
            }
        ],
    }


def parse_routes(document: Mapping[str, Any], options: EnvoyOptions) -> tuple[RouteModel, int]:
    """The model a route file holds (the inverse of `render_routes`), and its version."""
    model = RouteModel()
    (route_config,) = [
        r for r in document["resources"] if r.get("name") == options.route_config_name
    ]
    (host,) = [h for h in route_config["virtual_hosts"] if h["name"] == options.virtual_host]
    filters = host.get("typed_per_filter_config", {})
    policy = filters.get(RBAC_FILTER, {}).get("rbac", {}).get("rules", {}).get("policies", {})
    for principal in policy.get(BLOCK_POLICY, {}).get("principals", []):
        (cidr,) = principal.values()
        net = ipaddress.ip_network(f"{cidr['address_prefix']}/{cidr['prefix_len']}")
        kind = "ip" if net.prefixlen == net.max_prefixlen else "cidr"
        model.blocked.setdefault(str(net), set()).add(kind)
    keys = host.get("matcher", {}).get("matcher_tree", {}).get("exact_match_map", {})
    model.revoked = set(keys.get("map", {}))
    for descriptor in filters.get(RATE_FILTER, {}).get("descriptors", []):
        (item,) = descriptor["entries"]
        model.limits[item["value"]] = int(descriptor["token_bucket"]["max_tokens"])
    return model, int(document.get("version_info") or 0)


def atomic_write(path: Path, document: Mapping[str, Any]) -> None:
    """Write beside the target, fsync, rename: Envoy sees only whole files (it watches
    moves onto the path, not writes to it)."""
    data = json.dumps(document, separators=(",", ":")).encode()
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temporary).chmod(0o644)
        Path(temporary).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(temporary).unlink()
        raise


def sample_bootstrap(
    options: EnvoyOptions,
    *,
    listen: tuple[str, int],
    upstream: tuple[str, int],
    admin: tuple[str, int] | None = None,
    xff_num_trusted_hops: int = 0,
) -> dict[str, Any]:
    """Envoy's bootstrap that pairs with `options`: a listener whose connection manager
    takes its routes from `rds_path`, with the RBAC and local rate limit filters the
    route file configures per virtual host, and the upstream cluster."""
    manager: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "tollgate",
        "rds": {
            "route_config_name": options.route_config_name,
            "config_source": {
                "resource_api_version": "V3",
                "path_config_source": {"path": options.rds_path},
            },
        },
        "http_filters": [
            {"name": RBAC_FILTER, "typed_config": {"@type": RBAC}},
            {
                "name": RATE_FILTER,
                "typed_config": {"@type": LOCAL_RATE_LIMIT, "stat_prefix": "tollgate_rate"},
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }
    if xff_num_trusted_hops:
        manager["xff_num_trusted_hops"] = xff_num_trusted_hops
    bootstrap: dict[str, Any] = {
        "node": {"id": "tollgate", "cluster": "tollgate"},
        "static_resources": {
            "listeners": [
                {
                    "name": "model_api",
                    "address": {"socket_address": {"address": listen[0], "port_value": listen[1]}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": options.cluster,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": options.cluster,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": upstream[0],
                                                    "port_value": upstream[1],
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }
    if admin is not None:
        bootstrap["admin"] = {
            "address": {"socket_address": {"address": admin[0], "port_value": admin[1]}}
        }
    return bootstrap


def create(config: ConnectorConfig, http: httpx.AsyncClient) -> EnvoyConnector:
    return EnvoyConnector(config, http)
