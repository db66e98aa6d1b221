"""The webhook connector: a lab's own key or gateway service enforces Tollgate's entries.

Many labs enforce in a service of their own (the key service that issues API keys,
an in-house rate limiter) rather than in HAProxy or NGINX. This connector tells such
a service every change as a signed JSON POST; `docs/webhook.md` is the receiver's
contract (body schema, headers, signature recipe, idempotency, the state endpoint).

Why it looks the way it does:
- Every request is signed (HMAC-SHA256 over `timestamp.body`) because the receiver
  acts on it: an unsigned "remove the block on this key" would be an open door.
- Every change carries an id that stays the same while the change is retried, so a
  change whose answer was lost (timeout after the receiver applied it) is applied once.
  The id is *not* a pure function of the change: add X, remove X, add X again are
  three changes, and a receiver that remembered the first add would skip the third.
- 5xx, timeouts and unreachable receivers are retryable; a 4xx means the receiver will
  not take the change as sent, so the connector remembers the refusal for a while and
  answers the Enforcer's immediate retries from memory instead of sending it again.
- Without `observe: true` the connector can only report what it last pushed, so drift
  at the receiver (an entry deleted there by hand) is never seen, let alone repaired.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

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
from controlplane.enforce.targets import DEFAULT_FLOOR, PrefixFloor, refusal
from controlplane.enforce.toolkit import bounded, option_error, parse_options

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SIGNATURE_HEADER = "Tollgate-Signature"
TIMESTAMP_HEADER = "Tollgate-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_SCHEME = "v1"
MIN_KEY_LENGTH = 16
MAX_BATCH = 500
MESSAGE_LIMIT = 300
RETRYABLE_4XX = frozenset({408, 425, 429})
"""Request Timeout, Too Early, Too Many Requests: the receiver asks to be tried later."""
OPEN_CHANGE_TTL = 6 * 3600.0
"""An unfinished change nobody retried for this long is no longer desired: forget its id."""
BUDGET_SHARE = 0.9
"""An apply stops sending at this share of `timeout_seconds`, so it reports per entry
before the Enforcer's own timeout cancels it and loses the results."""

Op = Literal["add", "remove", "change"]


def sign(key: str, timestamp: str, body: bytes) -> str:
    """The documented recipe: hex HMAC-SHA256, keyed by the UTF-8 signing key, of
    `timestamp + "." + body` (the raw body bytes as sent; empty for `GET /state`)."""
    message = timestamp.encode("ascii") + b"." + body
    return hmac.new(key.encode("utf-8"), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class WebhookOptions:
    """`options:` of a webhook connector in `tollgate.yaml` (docs/webhook.md)."""

    url: str
    observe: bool = False
    """GET `{url}/state` to learn what the receiver enforces; off: trust what was pushed."""
    batch_size: int = bounded(1, 1, MAX_BATCH)
    """Changes per POST; 1 keeps the simplest receiver, up to 500 for large fleets."""
    concurrency: int = bounded(4, 1, 32)
    """POSTs in flight at once: changes to different entries are independent."""
    request_timeout_seconds: float = bounded(2.5, 0.05, 300)
    """One request's bound; half of `timeout_seconds` unless set, so a stalled request
    leaves the apply time to report the rest."""
    refusal_hold_seconds: float = bounded(60.0, 0, 86400)
    """How long a 4xx refusal is answered from memory before the change is sent again."""
    allow_http: bool = False
    """Plain http to another machine (loopback is always allowed): off by default."""

    @classmethod
    def of(cls, config: ConnectorConfig) -> WebhookOptions:
        where = f"connector {config.name}: options"
        parsed = parse_options(
            cls,
            where,
            config.options,
            request_timeout_seconds=min(300.0, max(0.05, config.timeout_seconds / 2)),
        )
        if not parsed.url:
            raise option_error(where, "url", "is required: the receiver's https URL")
        _check_url(where, parsed.url, allow_http=parsed.allow_http)
        return dataclasses.replace(parsed, url=parsed.url.rstrip("/"))


@dataclass
class _Change:
    """A change from the moment it is first sent until the receiver accepts it."""

    id: str
    op: Op
    entry: Entry
    touched: float
    refusal: str | None = None
    refused_at: float = 0.0

    def document(self) -> dict[str, Any]:
        return {"id": self.id, "op": self.op, "entry": entry_document(self.entry, self.op)}


@dataclass
class _Outcome:
    """What became of one change in one delivery: done, refused (4xx) or retryable."""

    error: str | None = None
    refused: bool = False


@dataclass
class WebhookConnector:
    """Pushes Tollgate's entries to a lab's own service over signed HTTP."""

    name: str
    options: WebhookOptions
    timeout_seconds: float
    """The connector's `timeout_seconds`: bounds `GET /state`, and (less a margin) an apply."""
    _http: httpx.AsyncClient = field(repr=False)
    _key: str = field(repr=False)
    _pushed: dict[tuple[str, str, str], Entry] = field(default_factory=dict, repr=False)
    _open: dict[tuple[str, tuple[str, str, str], int | None], _Change] = field(
        default_factory=dict, repr=False
    )
    _last_delivery: tuple[bool, str] = (True, "nothing sent yet")
    min_prefix: PrefixFloor = DEFAULT_FLOOR

    @property
    def receiver(self) -> str:
        """Where changes go, fit for messages: the URL was refused if it carried
        credentials or a query."""
        return self.options.url

    def capabilities(self) -> frozenset[EntryType]:
        return frozenset(EntryType)

    # -- observe ------------------------------------------------------------------------

    async def observe(self) -> GatewayState:
        """The receiver's entries from `GET {url}/state`, or, with `observe: false`, the
        entries this connector last pushed successfully (drift there goes unseen)."""
        if not self.options.observe:
            return GatewayState(frozenset(self._pushed.values()), extra={"source": "pushed"})
        document = await self._state()
        entries, unknown = parse_state(document)
        return GatewayState(entries, extra={"source": "state endpoint", "unknown": unknown})

    async def _state(self) -> Any:
        timestamp = str(int(time.time()))
        headers = self._headers(timestamp, b"")
        try:
            response = await self._http.get(
                f"{self.options.url}/state",
                headers=headers,
                timeout=self._timeout(self.timeout_seconds),
            )
        except httpx.TimeoutException:
            raise GatewayUnavailable(
                f"{self.receiver}/state did not answer in {self.timeout_seconds:.1f}s"
            ) from None
        except httpx.TransportError as exc:
            raise GatewayUnavailable(f"cannot reach {self.receiver}: {_transport(exc)}") from None
        if response.status_code >= 500 or response.status_code in RETRYABLE_4XX:
            raise GatewayUnavailable(
                f"{self.receiver}/state answered {response.status_code}: {_message(response)}"
            )
        if response.status_code != 200:
            raise ConnectorError(
                f"{self.receiver}/state answered {response.status_code}: {_message(response)}"
                f"{_hint(response.status_code)}",
                retryable=False,
            )
        try:
            return response.json()
        except ValueError:
            raise ConnectorError(
                f"{self.receiver}/state did not answer JSON (docs/webhook.md has the shape)",
                retryable=False,
            ) from None

    # -- apply --------------------------------------------------------------------------

    async def apply(self, diff: Diff) -> ApplyResult:
        """POST every change; report each done or failed with the receiver's reason."""
        now = time.monotonic()
        self._forget_stale(now)
        result = ApplyResult()
        # Only canonical values leave Tollgate; a removal sends back what the receiver's
        # own state listed.
        held_back = [
            (e, why) for e in (*diff.add, *diff.change) if (why := refusal(e, self.min_prefix))
        ]
        result.rejected.extend(held_back)
        refused = {e.key for e, _ in held_back}
        changes = [
            *(self._change("add", e, now) for e in diff.add if e.key not in refused),
            *(self._change("remove", e, now) for e in diff.remove),
            *(self._change("change", e, now) for e in diff.change if e.key not in refused),
        ]
        hold = self.options.refusal_hold_seconds
        to_send = []
        for change in changes:
            if change.refusal is not None and now - change.refused_at < hold:
                result.failed.append((change.entry, change.refusal))
            else:
                to_send.append(change)
        size = self.options.batch_size
        batches = [to_send[i : i + size] for i in range(0, len(to_send), size)]
        deadline = now + self.timeout_seconds * BUDGET_SHARE
        gate = asyncio.Semaphore(self.options.concurrency)
        outcomes = await asyncio.gather(*(self._deliver(b, deadline, gate) for b in batches))
        for batch, by_id in zip(batches, outcomes, strict=True):
            for change in batch:
                self._settle(change, by_id[change.id], result)
        return result

    def _change(self, op: Op, entry: Entry, now: float) -> _Change:
        # A remove is by key: its parameters do not make it another change.
        rpm = None if op == "remove" else entry.requests_per_minute
        identity = (op, entry.key, rpm)
        change = self._open.get(identity)
        if change is None:
            change = _Change(_change_id(op, entry, rpm), op, entry, now)
            self._open[identity] = change
        change.touched = now
        return change

    def _settle(self, change: _Change, outcome: _Outcome, result: ApplyResult) -> None:
        if outcome.error is None:
            result.done.append(change.entry)
            self._open.pop((change.op, change.entry.key, _rpm(change)), None)
            if change.op == "remove":
                self._pushed.pop(change.entry.key, None)
            else:
                self._pushed[change.entry.key] = change.entry
            return
        if outcome.refused:
            change.refusal, change.refused_at = outcome.error, time.monotonic()
        result.failed.append((change.entry, outcome.error))

    def _forget_stale(self, now: float) -> None:
        stale = [k for k, c in self._open.items() if now - c.touched > OPEN_CHANGE_TTL]
        for key in stale:
            del self._open[key]

    async def _deliver(
        self, batch: Sequence[_Change], deadline: float, gate: asyncio.Semaphore
    ) -> dict[str, _Outcome]:
        """One POST carrying `batch`: each change's outcome, by change id."""
        async with gate:
            remaining = deadline - time.monotonic()
            if remaining < 0.05:
                why = "not sent: this apply's time budget ran out; it is retried"
                return {c.id: _Outcome(why) for c in batch}
            body = json.dumps(
                {
                    "version": SCHEMA_VERSION,
                    "connector": self.name,
                    "changes": [c.document() for c in batch],
                },
                separators=(",", ":"),
            ).encode("utf-8")
            timestamp = str(int(time.time()))
            headers = self._headers(timestamp, body)
            headers["Content-Type"] = "application/json"
            headers[IDEMPOTENCY_HEADER] = _request_key(batch)
            seconds = min(self.options.request_timeout_seconds, remaining)
            try:
                response = await self._http.post(
                    self.options.url, content=body, headers=headers, timeout=self._timeout(seconds)
                )
            except httpx.TimeoutException:
                return self._all(batch, f"{self.receiver} did not answer in {seconds:.2f}s")
            except httpx.TransportError as exc:
                return self._all(batch, f"cannot reach {self.receiver}: {_transport(exc)}")
        return self._outcomes(batch, response)

    def _outcomes(self, batch: Sequence[_Change], response: httpx.Response) -> dict[str, _Outcome]:
        status = response.status_code
        if 200 <= status < 300:
            self._last_delivery = (True, f"last delivery answered {status}")
            return _per_change(batch, response)
        message = f"receiver answered {status}: {_message(response)}{_hint(status)}"
        refused = status < 500 and status not in RETRYABLE_4XX
        if 300 <= status < 400:
            message = f"receiver answered {status} (a redirect): configure its final URL"
        log.warning("webhook %s: %d change(s) not applied: %s", self.name, len(batch), message)
        # Refusing one entry (422) is the receiver working; refusing every request
        # (signature, path, redirect) is this connector being misconfigured.
        broken = not refused or status < 400 or status in (401, 403, 404)
        return self._all(batch, message, refused=refused, broken=broken)

    def _all(
        self, batch: Sequence[_Change], message: str, *, refused: bool = False, broken: bool = True
    ) -> dict[str, _Outcome]:
        if broken:
            self._last_delivery = (False, message)
        return {c.id: _Outcome(message, refused=refused) for c in batch}

    # -- shared -------------------------------------------------------------------------

    def _headers(self, timestamp: str, body: bytes) -> dict[str, str]:
        return {
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: f"{SIGNATURE_SCHEME}={sign(self._key, timestamp, body)}",
            "User-Agent": f"tollgate-webhook/{SCHEMA_VERSION}",
        }

    @staticmethod
    def _timeout(seconds: float) -> httpx.Timeout:
        return httpx.Timeout(seconds, connect=min(seconds, 2.0))

    async def health(self) -> Health:
        """With `observe`, whether the state endpoint answers; otherwise how the last
        delivery went (there is no other endpoint a receiver must have)."""
        gateway = f"webhook {self.receiver}"
        if not self.options.observe:
            ok, detail = self._last_delivery
            return Health(ok=ok, gateway=gateway, detail=detail)
        try:
            entries, _ = parse_state(await self._state())
        except ConnectorError as exc:
            return Health(ok=False, gateway=gateway, detail=str(exc))
        return Health(ok=True, gateway=gateway, detail=f"entries at the receiver: {len(entries)}")

    async def close(self) -> None:
        """Forget pushed state and open changes; the HTTP client belongs to the caller."""
        self._pushed.clear()
        self._open.clear()


def create(config: ConnectorConfig, http: httpx.AsyncClient) -> WebhookConnector:
    """The `webhook` connector type; refuses to start unsigned (no `signing_key`)."""
    key = config.secrets.get("signing_key", "")
    if len(key) < MIN_KEY_LENGTH:
        problem = "is missing" if not key else f"is shorter than {MIN_KEY_LENGTH} characters"
        raise _config_error(
            f"connector {config.name}: secrets.signing_key {problem}. The receiver acts on "
            "these requests, so they must be signed: set `secrets: {signing_key: {env: NAME}}` "
            "(or {file: PATH}) to a random key of 32+ characters shared with the receiver"
        )
    options = WebhookOptions.of(config)
    return WebhookConnector(
        name=config.name,
        options=options,
        timeout_seconds=config.timeout_seconds,
        _http=http,
        _key=key,
        min_prefix=config.min_prefix,
    )


# -- the wire format -------------------------------------------------------------------


def entry_document(entry: Entry, op: Op = "add") -> dict[str, Any]:
    """An entry as the receiver sees it; parameters mean nothing to a remove."""
    params: dict[str, Any] = {}
    if op != "remove" and entry.requests_per_minute is not None:
        params["requests_per_minute"] = entry.requests_per_minute
    return {
        "type": entry.type.value,
        "target": {"kind": entry.target_kind, "value": entry.target_value},
        "params": params,
        "reference": entry.reference,
    }


def parse_state(document: Any) -> tuple[frozenset[Entry], int]:
    """Entries from a `GET /state` answer, and how many had a type Tollgate does not know
    (left alone: Tollgate cannot want or remove what it cannot name)."""
    items = document.get("entries") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise ConnectorError(
            'the receiver\'s state must be {"entries": [...]} (docs/webhook.md)', retryable=False
        )
    entries, unknown = set(), 0
    for i, item in enumerate(items):
        try:
            kind = EntryType(item["type"])
        except ValueError:
            unknown += 1
            continue
        except (KeyError, TypeError):
            raise _state_error(i, "type") from None
        target = item.get("target")
        if not isinstance(target, dict) or not all(
            isinstance(target.get(k), str) for k in ("kind", "value")
        ):
            raise _state_error(i, "target")
        params = item.get("params") or {}
        rpm = params.get("requests_per_minute") if isinstance(params, dict) else None
        if kind is EntryType.RATE_LIMIT and not isinstance(rpm, int):
            raise _state_error(i, "params.requests_per_minute")
        entries.add(
            Entry(
                kind, target["kind"], target["value"], rpm if kind is EntryType.RATE_LIMIT else None
            )
        )
    return frozenset(entries), unknown


def _per_change(batch: Sequence[_Change], response: httpx.Response) -> dict[str, _Outcome]:
    """A 2xx applies the whole request unless its body's `results` says otherwise per change."""
    outcomes = {c.id: _Outcome() for c in batch}
    try:
        results = response.json().get("results") if response.content else None
    except (ValueError, AttributeError):
        results = None
    for item in results if isinstance(results, list) else []:
        if not isinstance(item, dict) or item.get("id") not in outcomes:
            continue
        error = _clean(str(item.get("error") or "no reason given"))
        if item.get("status") == "rejected":
            outcomes[item["id"]] = _Outcome(f"receiver rejected it: {error}", refused=True)
        elif item.get("status") == "failed":
            outcomes[item["id"]] = _Outcome(f"receiver failed to apply it: {error}")
    return outcomes


def _change_id(op: Op, entry: Entry, rpm: int | None) -> str:
    # The nonce makes a later identical change (after a remove) a new change.
    parts = (op, *entry.key, str(rpm), secrets.token_hex(16))
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _request_key(batch: Sequence[_Change]) -> str:
    if len(batch) == 1:
        return batch[0].id
    return hashlib.sha256(",".join(sorted(c.id for c in batch)).encode("ascii")).hexdigest()


def _rpm(change: _Change) -> int | None:
    return None if change.op == "remove" else change.entry.requests_per_minute


def _message(response: httpx.Response) -> str:
    """The receiver's own reason: `error`/`message`/`detail` of a JSON body, else its text."""
    try:
        document = response.json()
    except ValueError:
        document = None
    if isinstance(document, dict):
        for field_name in ("error", "message", "detail"):
            if isinstance(document.get(field_name), str):
                return _clean(document[field_name])
    return _clean(response.text) or response.reason_phrase or "no reason given"


def _hint(status: int) -> str:
    if status in (401, 403):
        return " (check that Tollgate and the receiver share the same signing_key and clocks)"
    if status == 404:
        return " (check the url option; GET /state exists only on receivers that keep state)"
    return ""


def _clean(text: str) -> str:
    return " ".join(text.split())[:MESSAGE_LIMIT]


def _transport(exc: httpx.TransportError) -> str:
    return _clean(str(exc)) or type(exc).__name__


def _state_error(i: int, where: str) -> ConnectorError:
    return ConnectorError(
        f"the receiver's state has a bad entries[{i}].{where} (docs/webhook.md has the shape)",
        retryable=False,
    )


def _config_error(message: str) -> ConnectorError:
    return ConnectorError(message, retryable=False)


def _check_url(where: str, url: str, *, allow_http: bool) -> None:
    """An absolute http(s) URL without credentials or a query (they would leak into
    messages and logs); plain http only to this machine unless `allow_http`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _config_error(f"{where}.url must be an absolute https:// URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise _config_error(
            f"{where}.url must not carry credentials, a query or a fragment: requests are "
            "authenticated by their signature"
        )
    if parts.scheme == "http" and not allow_http and not _loopback(parts.hostname):
        raise _config_error(
            f"{where}.url is plain http to another machine: the signature protects the "
            "changes but not who is blocked from being read; use https, or set allow_http: true"
        )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
