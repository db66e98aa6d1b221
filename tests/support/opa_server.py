"""A TEST server that emulates OPA's REST API; it is not OPA.

No OPA server binary can be installed on this machine, so the remote engine's tests
talk to this instead: a real HTTP server (stdlib `ThreadingHTTPServer` on 127.0.0.1, a
free port, a thread) serving the subset of OPA's documented v1 REST API that Tollgate
uses, with OPA's status codes and JSON shapes, on top of the real OPA evaluator that
the embedded engine uses (`opa_bindings.OpaEngine`):

- Policy API: `GET /v1/policies`, `GET|PUT|DELETE /v1/policies/{id}`. Like OPA, a PUT
  or DELETE compiles the whole policy set and refuses with 400 and OPA's error shape
  (`{"code": "invalid_parameter", "message": ..., "errors": [{code, message,
  location}]}`; `invalid_operation` for a DELETE), and a PUT of the bytes already
  stored is a no-op. An `OpaEngine` cannot drop a module, so the evaluator is rebuilt
  from all stored policies and data on every change.
- Data API: `GET|PUT|PATCH|DELETE /v1/data/{path}` and `POST /v1/data/{path}` with
  `{"input": ...}`, answering `{"result": ...}`, `{}` when undefined, and OPA's 500
  `{"code": "internal_error", "message": "error(s) occurred while evaluating query",
  "errors": [...]}` when evaluation fails.
- `GET /health`.

Where it differs from OPA: policies carry no `ast` (`{}`), data never conflicts with a
package path, no query parameters (`pretty`, `metrics`, `explain`) are honoured, and
OPA's errors are rebuilt from the evaluator's messages.

For the tests it records each request (method, path, headers, body) and can inject
faults: `fail_next(status, times)` answers the next requests with that status, `delay`
holds every answer back, `reset()` forgets everything as a restarted OPA does.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from opa_bindings import OpaEngine, OpaError

COMPILE_ERROR = "error(s) occurred while compiling module(s)"
EVALUATION_ERROR = "error(s) occurred while evaluating query"
_ERROR_LINE = re.compile(r"^(?P<file>\S+?):(?P<row>\d+): (?P<code>[a-z_]+): (?P<message>.*)$")
_ERROR_COUNT = re.compile(r"^\d+ errors? occurred: ")


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class OpaFailure(Exception):
    """An answer in OPA's error shape."""

    def __init__(self, status: int, code: str, message: str, errors: list[Any] | None = None):
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"code": code, "message": message}
        if errors:
            self.body["errors"] = errors


def opa_errors(error: OpaError) -> list[dict[str, Any]]:
    """The evaluator's `file:row: code: message` lines as OPA's error objects."""
    found = []
    text = _ERROR_COUNT.sub("", error.message.removeprefix("bundle activation failed: "))
    for line in text.splitlines():
        match = _ERROR_LINE.match(line.strip())
        if match:
            found.append(
                {
                    "code": match["code"],
                    "message": match["message"],
                    "location": {"file": match["file"], "row": int(match["row"]), "col": 1},
                }
            )
    return found or [{"code": error.code, "message": error.message}]


def data_ref(segments: list[str]) -> str:
    return "data" + "".join(f"[{json.dumps(s)}]" for s in segments)


@dataclass
class OpaState:
    """Stored policies and data, and the evaluator compiled from them."""

    policies: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    engine: Any = None

    def build(self, policies: dict[str, str], data: dict[str, Any], action: str) -> Any:
        """A compiled evaluator for `policies` + `data`, or OPA's 400."""
        engine = OpaEngine()
        try:
            if data:
                engine.add_data(data)
            for policy_id, source in policies.items():
                engine.add_policy(policy_id, source)
            engine.eval_query("true")  # compiles every module, as OPA does on each change
        except OpaError as exc:
            engine.close()
            code = "invalid_operation" if action == "delete" else "invalid_parameter"
            raise OpaFailure(400, code, COMPILE_ERROR, opa_errors(exc)) from None
        return engine

    def commit(self, policies: dict[str, str], data: dict[str, Any], action: str) -> None:
        engine = self.build(policies, data, action)
        old, self.engine = self.engine, engine
        self.policies, self.data = policies, data
        if old is not None:
            old.close()

    def evaluate(self, segments: list[str], input: Any) -> dict[str, Any]:
        if self.engine is None:
            self.engine = self.build(self.policies, self.data, "put")
        try:
            rows = self.engine.eval_query(f"x := {data_ref(segments)}", input)
        except OpaError as exc:
            raise OpaFailure(500, "internal_error", EVALUATION_ERROR, opa_errors(exc)) from None
        return {"result": rows[0]["x"]} if rows else {}


class OpaTestServer:
    """The running test server: `url`, what it holds, what it received, and faults."""

    def __init__(self) -> None:
        self.state = OpaState()
        self.lock = threading.RLock()
        self.requests: list[Recorded] = []
        self.delay = 0.0
        self._faults: list[int] = []
        self._connections: set[socket.socket] = set()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="opa-test-server",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> OpaTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections too, as a server that went away."""
        self._httpd.shutdown()
        self._httpd.server_close()
        with self.lock:
            connections, self._connections = set(self._connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        with self.lock:
            if self.state.engine is not None:
                self.state.engine.close()
                self.state.engine = None

    def reset(self) -> None:
        """Forget every policy and document, as an OPA server that restarted."""
        with self.lock:
            if self.state.engine is not None:
                self.state.engine.close()
            self.state = OpaState()

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next `times` requests with `status` and a non-JSON body, as a
        proxy in front of OPA would."""
        with self.lock:
            self._faults.extend([status] * times)

    def clear(self) -> None:
        """Forget recorded requests and pending faults; no delay."""
        with self.lock:
            self.requests.clear()
            self._faults.clear()
            self.delay = 0.0

    def received(self, method: str, prefix: str = "") -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    def policy_ids(self) -> list[str]:
        with self.lock:
            return sorted(self.state.policies)

    def raw_policy(self, policy_id: str) -> str:
        with self.lock:
            return self.state.policies[policy_id]

    def document(self) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.state.data)

    # Requests, under the lock: the evaluator serialises its evaluations anyway.

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if path == "/health":
            return 200, {}
        if path == "/v1/policies" or path == "/v1/policies/":
            return self._list()
        if path.startswith("/v1/policies/"):
            policy_id = unquote(path.removeprefix("/v1/policies/"))
            return self._policy(method, policy_id, body)
        if path == "/v1/data" or path.startswith("/v1/data/"):
            segments = [unquote(s) for s in path.removeprefix("/v1/data").split("/") if s]
            return self._data(method, segments, body)
        return 404, {"code": "resource_not_found", "message": f"no route for {method} {path}"}

    def _list(self) -> tuple[int, Any]:
        policies = self.state.policies
        return 200, {"result": [{"id": i, "raw": raw, "ast": {}} for i, raw in policies.items()]}

    def _policy(self, method: str, policy_id: str, body: bytes) -> tuple[int, Any]:
        stored = self.state.policies
        if method == "GET":
            if policy_id not in stored:
                return _not_found(f'policy id "{policy_id}"')
            return 200, {"result": {"id": policy_id, "raw": stored[policy_id], "ast": {}}}
        if method == "PUT":
            source = body.decode("utf-8")
            if stored.get(policy_id) == source:
                return 200, {}
            if not source.strip():
                raise OpaFailure(400, "invalid_parameter", "empty module")
            self.state.commit({**stored, policy_id: source}, self.state.data, "put")
            return 200, {}
        if method == "DELETE":
            if policy_id not in stored:
                return _not_found(f'policy id "{policy_id}"')
            rest = {i: s for i, s in stored.items() if i != policy_id}
            self.state.commit(rest, self.state.data, "delete")
            return 200, {}
        return 405, {"code": "invalid_parameter", "message": f"{method} not allowed"}

    def _data(self, method: str, segments: list[str], body: bytes) -> tuple[int, Any]:
        if method == "GET":
            return 200, self.state.evaluate(segments, None)
        if method == "POST":
            request = json.loads(body or b"{}")
            return 200, self.state.evaluate(segments, request.get("input"))
        data = copy.deepcopy(self.state.data)
        if method == "PUT":
            value = _json(body)
            if not segments:
                if not isinstance(value, dict):
                    raise OpaFailure(400, "invalid_parameter", "root must be an object")
                data = value
            else:
                parent = _parent(data, segments, create=True)
                assert parent is not None  # creating: a conflict raises instead
                parent[segments[-1]] = value
        elif method == "DELETE":
            parent = _parent(data, segments, create=False)
            if not segments or parent is None or segments[-1] not in parent:
                return _not_found(f"document /{'/'.join(segments)}")
            del parent[segments[-1]]
        elif method == "PATCH":
            for op in _json(body):
                _patch(data, segments, op)
        else:
            return 405, {"code": "invalid_parameter", "message": f"{method} not allowed"}
        self.state.commit(dict(self.state.policies), data, "data")
        return 204, None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise OpaFailure(400, "invalid_parameter", str(exc)) from None


def _not_found(what: str) -> tuple[int, Any]:
    return 404, {"code": "resource_not_found", "message": f"storage_not_found_error: {what}"}


def _parent(data: dict[str, Any], segments: list[str], *, create: bool) -> dict[str, Any] | None:
    node: Any = data
    for key in segments[:-1]:
        if create and key not in node:
            node[key] = {}
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            if create:
                raise OpaFailure(404, "resource_conflict", f"write conflict at {key}")
            return None
    return node if isinstance(node, dict) else None


def _patch(data: dict[str, Any], root: list[str], op: dict[str, Any]) -> None:
    segments = root + [s.replace("~1", "/").replace("~0", "~") for s in op["path"].split("/") if s]
    if not segments:
        raise OpaFailure(400, "invalid_parameter", "bad patch path: cannot patch the root")
    parent = _parent(data, segments, create=op["op"] == "add")
    if parent is None or (op["op"] != "add" and segments[-1] not in parent):
        raise OpaFailure(404, "resource_not_found", f"storage_not_found_error: {op['path']}")
    if op["op"] in ("add", "replace"):
        parent[segments[-1]] = op["value"]
    elif op["op"] == "remove":
        del parent[segments[-1]]
    else:
        raise OpaFailure(400, "invalid_parameter", f"bad patch operation: {op['op']}")


def _handler(server: OpaTestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as OPA; every answer has a length
        disable_nagle_algorithm = True  # headers and body go out in two writes

        def setup(self) -> None:
            super().setup()
            with server.lock:
                server._connections.add(self.connection)

        def finish(self) -> None:
            with server.lock:
                server._connections.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def handle(self) -> None:
            with contextlib.suppress(ConnectionError):  # a client that hung up: not news
                super().handle()

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = urlsplit(self.path).path
            with server.lock:
                server.requests.append(Recorded(self.command, path, dict(self.headers), body))
                fault = server._faults.pop(0) if server._faults else None
                delay = server.delay
            if delay:
                time.sleep(delay)
            if fault is not None:
                self._answer(fault, b"<html>Bad Gateway</html>", "text/html")
                return
            try:
                with server.lock:
                    status, payload = server.handle(self.command, path, body)
            except OpaFailure as exc:
                status, payload = exc.status, exc.body
            if payload is None:
                self._answer(status, b"", None)
            else:
                self._answer(status, json.dumps(payload).encode(), "application/json")

        def _answer(self, status: int, body: bytes, content_type: str | None) -> None:
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read `server.requests` instead."""

    return Handler


@contextmanager
def opa_test_server() -> Iterator[OpaTestServer]:
    """A started test server, stopped afterwards."""
    server = OpaTestServer().start()
    try:
        yield server
    finally:
        server.stop()


def unused_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
