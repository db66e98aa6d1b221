"""Talking to an OPA server through opa-python-client's async client, the Tollgate way.

What the library does, read from its 3.0.0 source (`opa_client/opa_async.py`), and
what this adapter does about it:

- `AsyncOpaClient._init_session` makes its own `aiohttp.ClientSession` with only a
  total timeout and no tracing. We make the session (a total *and* a connect timeout
  from the settings, the OpenTelemetry aiohttp trace config so every call is a client
  span and sends `traceparent`) and give it to the clients as their `_session`; the
  clients are never entered with `async with`, so they never make one of their own.
- `update_policy_from_string(..., rego_compat=True)` is the default: when OPA refuses a
  module with a v0-syntax error it rewrites the module with a regex and uploads the
  rewrite. We always pass `rego_compat=False`: OPA stores the module byte for byte, or
  refuses it and Tollgate says why.
- `_request` retries a refused/reset connection, a connect timeout and a 500, 502 or
  504 answer `retries` times, sleeping 0.3 s, 0.6 s, ... between tries (the total
  timeout is not retried). So one call takes at most
  `(retries + 1) * TOLLGATE_OPA_TIMEOUT + 0.3 * (2**retries - 1)` seconds (measured:
  with `retries=2`, its default, a 502 is sent 3 times over 0.9 s of sleeps, not the
  "four times" once noted; the tests pin `ADMIN_RETRIES + 1` attempts). Two
  clients share the session: `admin` (`ADMIN_RETRIES`) pushes policies and data, whose
  PUT and DELETE are idempotent, to a server that may be starting; `decide`
  (`DECIDE_RETRIES` = 0) evaluates, because an OPA 500 there is the policy's own
  runtime error (retrying it only repeats it, with sleeps, per input) and a verdict
  whose batch fails stays undecided and is retried by the recovery job.
- `query_rule` calls `raise_for_status()` before reading the body, which throws OPA's
  error away (the rule, the line, `eval_conflict_error`). `decide` uses the client's
  own `_request` (its retry loop and session) and reads the body.
- Its exceptions (`RegoParseError`, `DeletePolicyError`, `DeleteDataError`,
  `TypeException`) and aiohttp's are mapped here, in one place: the server cannot be
  used -> `EngineUnavailable`; OPA refused what we sent -> `OpaRejected`, which the
  engine turns into a `PolicyError` naming the file.

These lean on the library's private `_session` and `_request`, so the dependency is
pinned to the exact version read (`opa-python-client==3.0.0`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from opa_client import AsyncOpaClient  # type: ignore[import-untyped]
from opa_client.errors import (  # type: ignore[import-untyped]
    DeleteDataError,
    DeletePolicyError,
    PolicyNotFoundError,
    RegoParseError,
    TypeException,
)
from opentelemetry.instrumentation.aiohttp_client import create_trace_config

from controlplane.errors import EngineUnavailable

ADMIN_RETRIES = 2
"""Retries of a push call (policy or data PUT/DELETE, the policy list)."""

DECIDE_RETRIES = 0
"""Retries of an evaluation: none, see the module docstring."""

EVALUATION_ERROR = "error(s) occurred while evaluating query"
"""OPA's message when a query failed at evaluation (its HTTP status is 500)."""


@dataclass(frozen=True)
class OpaTarget:
    """Where the OPA server is, and how long to wait for it."""

    url: str
    timeout: float
    connect_timeout: float
    scheme: str = field(init=False)
    host: str = field(init=False)
    port: int = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or port == -1
            or parts.path not in ("", "/")
            or parts.query
        ):
            raise EngineUnavailable(
                f"TOLLGATE_OPA_URL={self.url!r} is not an OPA server address: use "
                "http(s)://host:port with no path, e.g. http://127.0.0.1:8181"
            )
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise EngineUnavailable(
                "TOLLGATE_OPA_TIMEOUT and TOLLGATE_OPA_CONNECT_TIMEOUT must be positive seconds"
            )
        object.__setattr__(self, "scheme", parts.scheme)
        object.__setattr__(self, "host", parts.hostname)
        object.__setattr__(self, "port", port or (443 if parts.scheme == "https" else 80))

    @property
    def client_host(self) -> str:
        """The host as the library pastes it into `scheme://host:port` (IPv6 bracketed)."""
        return f"[{self.host}]" if ":" in self.host else self.host


class OpaRejected(Exception):
    """OPA understood the request and refused it (HTTP 4xx): a compile error, an empty
    module, a data document that conflicts with a rule, a module others still need."""

    def __init__(self, code: str, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.errors = errors

    def describe(self) -> str:
        """OPA's own words: each error as `file:row: code: message`."""
        if not self.errors:
            return self.message
        return "; ".join(describe_error(error) for error in self.errors)


def describe_error(error: dict[str, Any]) -> str:
    where = error.get("location") or {}
    place = f"{where.get('file', '?')}:{where.get('row', '?')}: " if where else ""
    return f"{place}{error.get('code', 'error')}: {error.get('message', '')}"


@dataclass(frozen=True, slots=True)
class Answer:
    """OPA's answer to one evaluation: a defined result, undefined, or the policy's error."""

    defined: bool
    result: Any = None
    error: str | None = None


class OpaHttp:
    """One traced aiohttp session to an OPA server and the two library clients on it.

    Make it inside the event loop that will use it (an aiohttp session belongs to one
    loop); `aclose()` it there.
    """

    def __init__(self, target: OpaTarget, *, concurrency: int) -> None:
        self.target = target
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(1, concurrency)),
            timeout=aiohttp.ClientTimeout(
                total=target.timeout, connect=min(target.connect_timeout, target.timeout)
            ),
            trace_configs=[create_trace_config()],
        )
        self._admin = self._client(ADMIN_RETRIES)
        self._decide = self._client(DECIDE_RETRIES)

    def _client(self, retries: int) -> Any:
        client = AsyncOpaClient(
            host=self.target.client_host,
            port=self.target.port,
            ssl=self.target.scheme == "https",
            retries=retries,
            timeout=self.target.timeout,
        )
        client._session = self._session  # ours: timeouts and tracing (module docstring)
        return client

    @property
    def closed(self) -> bool:
        return self._session.closed

    async def aclose(self) -> None:
        await self._session.close()

    @asynccontextmanager
    async def _calling(self, what: str) -> AsyncIterator[None]:
        """Map aiohttp's failures to `EngineUnavailable`, each saying what to check."""
        url = self.target.url
        try:
            yield
        except aiohttp.ConnectionTimeoutError:
            raise EngineUnavailable(
                f"OPA at {url} did not accept a connection within "
                f"{min(self.target.connect_timeout, self.target.timeout)}s ({what}): check "
                "TOLLGATE_OPA_URL and that the OPA server is running "
                "(TOLLGATE_OPA_CONNECT_TIMEOUT sets the wait)"
            ) from None
        except TimeoutError:
            raise EngineUnavailable(
                f"OPA at {url} did not answer within {self.target.timeout}s ({what}): "
                "check the OPA server's load and log, or raise TOLLGATE_OPA_TIMEOUT"
            ) from None
        except aiohttp.ClientResponseError as exc:
            raise unusable(url, exc.status, what, exc.message) from None
        except aiohttp.ClientError as exc:
            raise EngineUnavailable(
                f"cannot reach OPA at {url} ({what}: {exc or type(exc).__name__}): check "
                "TOLLGATE_OPA_URL and that the OPA server is running"
            ) from None

    def _rejected_or_unavailable(self, code: str | None, message: str, what: str) -> Exception:
        """A library error carries OPA's `code`, not the status: OPA answers
        `internal_error` with a 500 and every refusal of its input with a 4xx."""
        if code in (None, "internal_error"):
            return unusable(self.target.url, 500, what, message or "no message")
        return OpaRejected(code, message or "", [])

    async def policy_ids(self) -> list[str]:
        """Every policy id on the server (`GET /v1/policies`)."""
        async with self._calling("listing policies"):
            ids: list[str] = await self._admin.get_policies_list()
        return ids

    async def has_policy(self, policy_id: str) -> bool:
        """Whether the server holds the policy (`GET /v1/policies/{id}`)."""
        what = f"looking for policy {policy_id}"
        try:
            async with self._calling(what):
                await self._admin.get_policy(quote(policy_id))
        except PolicyNotFoundError as exc:
            if exc.expression == "resource_not_found":
                return False
            raise self._rejected_or_unavailable(exc.expression, exc.message, what) from None
        return True

    async def put_policy(self, policy_id: str, source: str) -> None:
        """`PUT /v1/policies/{id}` with `source` as is: `rego_compat` is off."""
        what = f"uploading policy {policy_id}"
        try:
            async with self._calling(what):
                await self._admin.update_policy_from_string(
                    source, quote(policy_id), rego_compat=False
                )
        except TypeException:
            # The library refuses an empty string itself; OPA would say the same.
            raise OpaRejected("invalid_parameter", "empty module", []) from None
        except RegoParseError as exc:
            if exc.expression in (None, "internal_error"):
                raise unusable(self.target.url, 500, what, exc.message) from None
            errors = [e for e in exc.errors if isinstance(e, dict)]
            raise OpaRejected(exc.expression, exc.message or "", errors) from None

    async def delete_policy(self, policy_id: str) -> None:
        """`DELETE /v1/policies/{id}`; a policy that is already gone is fine."""
        what = f"deleting policy {policy_id}"
        try:
            async with self._calling(what):
                await self._admin.delete_policy(quote(policy_id))
        except DeletePolicyError as exc:
            if exc.expression != "resource_not_found":
                raise self._rejected_or_unavailable(exc.expression, exc.message, what) from None

    async def put_data(self, path: str, document: dict[str, Any]) -> None:
        """`PUT /v1/data/{path}`: the document replaces whatever was at `path`."""
        what = f"uploading data at data.{path.replace('/', '.')}"
        try:
            async with self._calling(what):
                await self._admin.update_or_create_data(document, quote(path))
        except RegoParseError as exc:
            raise self._rejected_or_unavailable(exc.expression, exc.message, what) from None

    async def delete_data(self, path: str) -> None:
        """`DELETE /v1/data/{path}`; a path that is already gone is fine."""
        what = f"deleting data at data.{path.replace('/', '.')}"
        try:
            async with self._calling(what):
                await self._admin.delete_data(quote(path))
        except DeleteDataError as exc:
            if exc.expression != "resource_not_found":
                raise self._rejected_or_unavailable(exc.expression, exc.message, what) from None

    async def decide(self, path: str, input: dict[str, Any]) -> Answer:
        """`POST /v1/data/{path}` with `{"input": input}`. No `result` in the answer
        means undefined; a 500 with OPA's evaluation error is the policy's error."""
        url = f"{self._decide.root_url}/data/{quote(path)}"
        what = f"evaluating data.{path.replace('/', '.')}"
        async with (
            self._calling(what),
            self._decide._request("POST", url, json={"input": input}) as response,
        ):
            status = response.status
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = None
        if not isinstance(body, dict):
            raise unusable(self.target.url, status, what, "the answer is not a JSON object")
        if status == 200:
            if "result" in body:
                return Answer(True, body["result"])
            return Answer(False)
        if status == 500 and is_evaluation_error(body):
            errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
            detail = "; ".join(describe_error(e) for e in errors) or str(body.get("message"))
            return Answer(False, error=detail)
        message = str(body.get("message") or body)
        if 400 <= status < 500 and status not in (401, 403, 408, 429):
            raise OpaRejected(str(body.get("code", "invalid_parameter")), message, [])
        raise unusable(self.target.url, status, what, message)


def is_evaluation_error(body: dict[str, Any]) -> bool:
    """OPA's 500 for a query that failed while evaluating (a conflict, a builtin error)."""
    codes = [e.get("code", "") for e in body.get("errors") or [] if isinstance(e, dict)]
    return body.get("message") == EVALUATION_ERROR or any(c.startswith("eval_") for c in codes)


def unusable(url: str, status: int, what: str, detail: str) -> EngineUnavailable:
    """An answer that means the server, not the policy, is the problem."""
    if status in (401, 403):
        hint = "the server's authorization policy refuses Tollgate: allow its requests"
    elif status in (404, 405):
        hint = "is TOLLGATE_OPA_URL the address of an OPA server?"
    else:
        hint = "check the OPA server's log (Tollgate retries the verdicts later)"
    return EngineUnavailable(f"OPA at {url} answered HTTP {status} ({what}: {detail}): {hint}")
