"""A FAKE Cloudflare API: not Cloudflare. Nothing of Cloudflare runs here, so the
Cloudflare connector's tests talk to this instead: a real HTTP server (stdlib,
127.0.0.1, a free port, a thread) answering only the documented requests the connector
sends, in Cloudflare's envelope (`{"success", "errors", "messages", "result"}`):

- Lists: `GET /accounts/{a}/rules/lists/{l}/items` (cursor paging, `result_info.cursors.
  after`; `search=`), `POST .../items` (append) and `DELETE .../items` (`{"items": [{"id"}]}`)
  answer `{"operation_id"}` and change the list asynchronously: the operation is
  `pending`, then `running`, then `completed` (or `failed` with `error`) at successive
  `GET /accounts/{a}/rules/lists/bulk_operations/{id}`, and the items change when it
  completes. One pending bulk operation per account: another write meanwhile is refused
  (the documentation says it "will be rejected" without naming the error: the fake
  answers 400 with the message `outstanding bulk operation in progress`).
  IP items: IPv4 /8../32, IPv6 /12../64 (400 otherwise); `max_items` per list (the
  operation fails with "This list is at the maximum number of items").
- Rulesets: `GET|PUT /zones/{z}/rulesets/phases/http_ratelimit/entrypoint` (404 before the
  first PUT), `POST /zones/{z}/rulesets/{r}/rules`, `PATCH|DELETE .../rules/{id}`; an
  expression longer than 4,096 characters is refused (400).
- `Authorization: Bearer <token>` checked (403, code 10000 `Authentication error`).

Where it differs from Cloudflare: no other endpoints or fields, nothing enforced, the
expression is stored, not parsed. For the tests it records requests.
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

ACCOUNT = "0" * 31 + "a"
LIST = "1" * 31 + "b"
ZONE = "2" * 31 + "c"
TOKEN = "cf-test-token"
PAGE = 3


@dataclass
class CloudflareState:
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    ruleset: dict[str, Any] | None = None
    max_items: int = 10_000
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pending(self) -> bool:
        return any(op["status"] in ("pending", "running") for op in self.operations.values())

    def values(self) -> set[str]:
        return {item["ip"] for item in self.items.values()}


def _ok(result: Any, **extra: Any) -> dict[str, Any]:
    return {"success": True, "errors": [], "messages": [], "result": result, **extra}


def _error(code: int, message: str) -> dict[str, Any]:
    return {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": None,
    }


def _item_problem(value: Any) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except (TypeError, ValueError):
        return f"{value!r} is not a valid IP address or CIDR"
    low, high = (8, 32) if network.version == 4 else (12, 64)
    if "/" in str(value) and not low <= network.prefixlen <= high:
        return f"{value}: IPv{network.version} CIDRs from /{low} to /{high} only"
    if network.version == 6 and network.prefixlen > 64:
        return f"{value}: IPv6 CIDRs from /12 to /64 only"
    return ""


class _Handler(BaseHTTPRequestHandler):
    state: CloudflareState

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p][2:]  # after /client/v4
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with self.state.lock:
            self.state.requests.append((method, url.path))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._send(403, _error(10000, "Authentication error"))
                return
            status, body = self._route(method, parts, query)
        self._send(status, body)

    def _route(self, method: str, parts: list[str], query: dict[str, str]) -> tuple[int, Any]:
        s = self.state
        missing = (404, _error(7003, "Could not route to " + "/".join(parts)))
        if parts[:4] == ["accounts", ACCOUNT, "rules", "lists"]:
            rest = parts[4:]
            if rest[:1] == ["bulk_operations"] and method == "GET":
                op = s.operations.get(rest[1])
                if op is None:
                    return missing
                self._advance(op)
                return 200, _ok({k: v for k, v in op.items() if not k.startswith("_")})
            if rest[:2] == [LIST, "items"]:
                if method == "GET":
                    found = sorted(s.items.values(), key=lambda i: i["id"])
                    if "search" in query:
                        found = [i for i in found if query["search"] in i["ip"]]
                    start = int(query.get("cursor") or 0)
                    page = found[start : start + PAGE]
                    after = str(start + PAGE) if start + PAGE < len(found) else None
                    info = {"cursors": {"after": after}} if after else {"cursors": {}}
                    return 200, _ok(page, result_info=info)
                if s.pending():
                    return 400, _error(10000, "outstanding bulk operation in progress")
                body = self._body()
                if method == "POST":
                    for item in body:
                        problem = _item_problem(item.get("ip"))
                        if problem:
                            return 400, _error(10021, problem)
                    return 200, _ok({"operation_id": self._operation("add", body)})
                if method == "DELETE":
                    return 200, _ok({"operation_id": self._operation("delete", body["items"])})
        if parts[:2] == ["zones", ZONE] and parts[2:3] == ["rulesets"]:
            rest = parts[3:]
            if rest == ["phases", "http_ratelimit", "entrypoint"]:
                if method == "GET":
                    return (200, _ok(s.ruleset)) if s.ruleset else missing
                if method == "PUT":
                    body = self._body()
                    rules = [self._rule(r) for r in body.get("rules", [])]
                    if any(r is None for r in rules):
                        return 400, _error(20100, "expression too long")
                    s.ruleset = {
                        "id": uuid.uuid4().hex,
                        "phase": "http_ratelimit",
                        "kind": "zone",
                        "rules": rules,
                    }
                    return 200, _ok(s.ruleset)
            if s.ruleset and rest[:2] == [s.ruleset["id"], "rules"]:
                if method == "POST" and len(rest) == 2:
                    rule = self._rule(self._body())
                    if rule is None:
                        return 400, _error(20100, "expression too long")
                    s.ruleset["rules"].append(rule)
                    return 200, _ok(s.ruleset)
                index = (
                    next(
                        (i for i, r in enumerate(s.ruleset["rules"]) if r["id"] == rest[2:3][0]),
                        None,
                    )
                    if len(rest) == 3
                    else None
                )
                if index is None:
                    return missing
                if method == "PATCH":
                    rule = self._rule({**s.ruleset["rules"][index], **self._body()})
                    if rule is None:
                        return 400, _error(20100, "expression too long")
                    rule["id"] = s.ruleset["rules"][index]["id"]
                    s.ruleset["rules"][index] = rule
                    return 200, _ok(s.ruleset)
                if method == "DELETE":
                    del s.ruleset["rules"][index]
                    return 200, _ok(s.ruleset)
        return missing

    def _rule(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if len(body.get("expression", "")) > 4096:
            return None
        return {
            "id": body.get("id") or uuid.uuid4().hex,
            **{k: v for k, v in body.items() if k != "id"},
        }

    def _operation(self, kind: str, items: list[dict[str, Any]]) -> str:
        op_id = uuid.uuid4().hex
        self.state.operations[op_id] = {
            "id": op_id,
            "status": "pending",
            "_kind": kind,
            "_items": items,
        }
        return op_id

    def _advance(self, op: dict[str, Any]) -> None:
        s = self.state
        if op["status"] == "pending":
            op["status"] = "running"
        elif op["status"] == "running":
            if op["_kind"] == "add":
                new = [i for i in op["_items"] if i["ip"] not in s.values()]
                if len(s.items) + len(new) > s.max_items:
                    op["status"], op["error"] = (
                        "failed",
                        "This list is at the maximum number of items",
                    )
                    return
                for item in new:
                    item_id = uuid.uuid4().hex
                    s.items[item_id] = {
                        "id": item_id,
                        "ip": item["ip"],
                        "comment": item.get("comment", ""),
                    }
            else:
                for item in op["_items"]:
                    s.items.pop(item["id"], None)
            op["status"], op["completed"] = "completed", "2026-11-30T00:00:00Z"

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


@contextmanager
def fake_cloudflare() -> Iterator[tuple[str, CloudflareState]]:
    """The fake's API base URL (as `https://api.cloudflare.com/client/v4`) and its state."""
    state = CloudflareState()
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="fake-cloudflare", daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}/client/v4", state
    finally:
        server.shutdown()
        server.server_close()
