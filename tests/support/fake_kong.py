"""A FAKE Kong Admin API: not Kong. No Kong runs on this machine, so the Kong
connector's tests talk to this instead: a real HTTP server (stdlib, 127.0.0.1, a free
port, a thread) answering only the documented Admin API requests the connector sends,
with Kong's status codes and JSON shapes as its documentation gives them:

- `GET /` (node information, with `version`);
- `GET /consumers/{username or id}`, `GET /consumers?custom_id=X` (`{"data": [...]}`);
- `GET /key-auths/{id}`, `DELETE /key-auths/{id}` (204; 404 `{"message": "Not found"}`);
- `GET /plugins?tags=T` (paged: `{"data": [...], "next": "/plugins?offset=..."}`),
  `POST /plugins`, `POST /consumers/{id}/plugins` (201; a second plugin of the same name
  on the same consumer is 409 `UNIQUE violation detected on ...`), `PATCH /plugins/{id}`
  (the config merged), `DELETE /plugins/{id}` (204);
- schema checks Kong makes on what the connector sends: `rate-limiting` needs a positive
  `config.minute`; `ip-restriction` needs `config.allow` or `config.deny` non-empty, and
  each entry an IP or CIDR (400 `schema violation`);
- `Kong-Admin-Token` checked when a token is set (401).

Where it differs from Kong: no database, no workspaces, no other entities, no plugin
execution (it enforces nothing), and only the fields above are validated. For the tests
it records requests and can fail the next ones (`fail_next(status, times)`).
"""

from __future__ import annotations

import ipaddress
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PAGE = 2
"""Plugins per page: small, so paging is exercised."""


@dataclass
class KongState:
    consumers: dict[str, dict[str, Any]] = field(default_factory=dict)
    key_auths: dict[str, dict[str, Any]] = field(default_factory=dict)
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    token: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_consumer(self, username: str, custom_id: str | None = None) -> dict[str, Any]:
        consumer = {"id": str(uuid.uuid4()), "username": username, "custom_id": custom_id}
        self.consumers[consumer["id"]] = consumer
        return consumer

    def add_key(self, consumer: dict[str, Any], key: str) -> dict[str, Any]:
        credential = {"id": str(uuid.uuid4()), "key": key, "consumer": {"id": consumer["id"]}}
        self.key_auths[credential["id"]] = credential
        return credential

    def fail_next(self, status: int, times: int = 1) -> None:
        self.failures.extend([status] * times)


class _Handler(BaseHTTPRequestHandler):
    state: KongState

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _handle(self, method: str) -> None:
        state = self.state
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with state.lock:
            state.requests.append((method, self.path))
            if state.failures:
                self._send(state.failures.pop(0), {"message": "An unexpected error occurred"})
                return
            if state.token and self.headers.get("Kong-Admin-Token") != state.token:
                self._send(
                    401, {"message": "Invalid credentials. Token or User credentials required"}
                )
                return
            status, body = self._route(method, parts, query)
        self._send(status, body)

    def _route(self, method: str, parts: list[str], query: dict[str, str]) -> tuple[int, Any]:
        s = self.state
        not_found = (404, {"message": "Not found"})
        if method == "GET" and not parts:
            return 200, {"version": "3.9.0", "tagline": "Welcome to kong"}
        if parts[:1] == ["consumers"]:
            if method == "GET" and len(parts) == 1:
                found = [
                    c for c in s.consumers.values() if c["custom_id"] == query.get("custom_id")
                ]
                return 200, {"data": found, "next": None}
            consumer = next(
                (c for c in s.consumers.values() if parts[1] in (c["id"], c["username"])), None
            )
            if consumer is None:
                return not_found
            if method == "GET" and len(parts) == 2:
                return 200, consumer
            if method == "POST" and parts[2:] == ["plugins"]:
                return self._create_plugin({**self._body(), "consumer": {"id": consumer["id"]}})
        if parts[:1] == ["key-auths"] and len(parts) == 2:
            credential = s.key_auths.get(parts[1])
            if credential is None:
                return not_found
            if method == "GET":
                return 200, credential
            if method == "DELETE":
                del s.key_auths[parts[1]]
                return 204, None
        if parts[:1] == ["plugins"]:
            if method == "GET" and len(parts) == 1:
                tags = query.get("tags")
                found = sorted(
                    (p for p in s.plugins.values() if not tags or tags in p["tags"]),
                    key=lambda p: p["id"],
                )
                start = int(query.get("offset", 0))
                page = found[start : start + PAGE]
                more = start + PAGE < len(found)
                return 200, {
                    "data": page,
                    "next": f"/plugins?tags={tags}&offset={start + PAGE}" if more else None,
                    "offset": str(start + PAGE) if more else None,
                }
            if method == "POST" and len(parts) == 1:
                return self._create_plugin(self._body())
            plugin = s.plugins.get(parts[1]) if len(parts) == 2 else None
            if plugin is None:
                return not_found
            if method == "PATCH":
                body = self._body()
                updated = {**plugin, "config": {**plugin["config"], **body.get("config", {})}}
                problem = _schema(updated)
                if problem:
                    return 400, problem
                s.plugins[plugin["id"]] = updated
                return 200, updated
            if method == "DELETE":
                del s.plugins[plugin["id"]]
                return 204, None
        return not_found

    def _create_plugin(self, body: dict[str, Any]) -> tuple[int, Any]:
        plugin = {
            "id": str(uuid.uuid4()),
            "name": body.get("name"),
            "consumer": body.get("consumer"),
            "service": body.get("service"),
            "config": body.get("config", {}),
            "tags": body.get("tags", []),
            "enabled": True,
        }
        problem = _schema(plugin)
        if problem:
            return 400, problem
        for other in self.state.plugins.values():
            same = (other["name"], other["consumer"], other["service"])
            if same == (plugin["name"], plugin["consumer"], plugin["service"]):
                return 409, {
                    "message": f"UNIQUE violation detected on '{{name={plugin['name']}}}'",
                    "name": "unique constraint violation",
                    "code": 5,
                }
        self.state.plugins[plugin["id"]] = plugin
        return 201, plugin

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


def _schema(plugin: dict[str, Any]) -> dict[str, Any] | None:
    config = plugin["config"]

    def violation(where: str, message: str) -> dict[str, Any]:
        return {
            "message": f"schema violation ({where}: {message})",
            "name": "schema violation",
            "code": 2,
            "fields": {"config": {where.split(".", 1)[1]: message}},
        }

    if plugin["name"] == "rate-limiting":
        minute = config.get("minute")
        if not isinstance(minute, int) or minute < 1:
            return violation("config.minute", "value must be greater than 0")
    if plugin["name"] == "ip-restriction":
        if not (config.get("allow") or config.get("deny")):
            return {
                "message": "schema violation (at least one of these fields must be non-empty: "
                "'config.allow', 'config.deny')",
                "name": "schema violation",
                "code": 2,
            }
        for i, value in enumerate(config.get("deny") or []):
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                return violation(f"config.deny.{i + 1}", f"invalid ip or cidr range: '{value}'")
    return None


@contextmanager
def fake_kong() -> Iterator[tuple[str, KongState]]:
    state = KongState()
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="fake-kong", daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}", state
    finally:
        server.shutdown()
        server.server_close()
