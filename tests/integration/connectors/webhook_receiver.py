"""A real HTTP receiver for the webhook connector, following docs/webhook.md.

It runs a stdlib `ThreadingHTTPServer` on 127.0.0.1 (a free port) in a thread of its
own, so the test's event loop and the Tollgate app under test talk to it over real
sockets. It does what the document asks of a receiver (checks the signature and the
timestamp window, applies each change once by its id, keeps state, serves
`GET /state`) and can be told to misbehave: fail the next requests with a 5xx, stall
past the client's timeout (before or after applying), or refuse some targets with a 4xx.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WINDOW_SECONDS = 300
MAX_BODY = 1 << 20


@dataclass
class Received:
    """One request as it arrived, and the status it was answered with."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0

    @property
    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


@dataclass
class _Trouble:
    """What to do to the next requests: answer `status`, or stall `stall` seconds;
    `after_apply` applies the changes first (the answer is what gets lost)."""

    count: int
    status: int = 503
    stall: float = 0.0
    after_apply: bool = False


@dataclass
class WebhookReceiver:
    signing_key: str
    window_seconds: int = WINDOW_SECONDS
    state: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    """The entries it enforces, by (type, kind, value), as documents."""
    received: list[Received] = field(default_factory=list)
    applied: Counter[str] = field(default_factory=Counter)
    """How many times each change id was applied: never more than once."""
    refusals: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Target value -> (4xx status, message) for changes this receiver will not take."""
    _trouble: list[_Trouble] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the receiver first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/tollgate"

    # -- knobs --------------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 503, *, after_apply: bool = False) -> None:
        with self._lock:
            self._trouble.append(_Trouble(count, status=status, after_apply=after_apply))

    def stall_next(self, count: int, seconds: float, *, after_apply: bool = False) -> None:
        with self._lock:
            self._trouble.append(_Trouble(count, stall=seconds, after_apply=after_apply))

    def refuse(self, target_value: str, status: int = 422, message: str = "refused") -> None:
        self.refusals[target_value] = (status, message)

    def posts_for(self, target_value: str) -> list[Received]:
        """The POSTs that carried a change to `target_value`."""
        return [
            r
            for r in list(self.received)
            if r.method == "POST"
            and r.body
            and any(c["entry"]["target"]["value"] == target_value for c in _changes_of(r.body))
        ]

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(_Handler):
            owner = receiver

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # stalled handlers finish now
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- the receiver's logic (docs/webhook.md) -----------------------------------------

    def verify(self, headers: dict[str, str], body: bytes) -> str | None:
        """Why the request is not authentic, or None when it is."""
        timestamp = headers.get("tollgate-timestamp", "")
        if not timestamp.isdigit():
            return "missing Tollgate-Timestamp"
        if abs(time.time() - int(timestamp)) > self.window_seconds:
            return "timestamp outside the replay window"
        expected = hmac.new(
            self.signing_key.encode("utf-8"), timestamp.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        offered = [
            part.split("=", 1)[1]
            for part in headers.get("tollgate-signature", "").split(",")
            if part.strip().startswith("v1=")
        ]
        if not any(hmac.compare_digest(expected, o.strip()) for o in offered):
            return "bad signature"
        return None

    def take_trouble(self) -> _Trouble | None:
        with self._lock:
            if not self._trouble:
                return None
            trouble = self._trouble[0]
            trouble.count -= 1
            if trouble.count <= 0:
                self._trouble.pop(0)
            return trouble

    def apply(self, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply each change once by id; a refused change is not remembered (it may be
        sent again once the cause is fixed)."""
        results = []
        with self._lock:
            for change in changes:
                entry = change["entry"]
                target = entry["target"]
                key = (entry["type"], target["kind"], target["value"])
                if change["id"] in self.applied:
                    results.append({"id": change["id"], "status": "applied"})
                    continue
                if target["value"] in self.refusals:
                    _, message = self.refusals[target["value"]]
                    results.append({"id": change["id"], "status": "rejected", "error": message})
                    continue
                if change["op"] == "remove":
                    self.state.pop(key, None)
                else:
                    self.state[key] = entry
                self.applied[change["id"]] += 1
                results.append({"id": change["id"], "status": "applied"})
        return results


def _changes_of(body: bytes) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = json.loads(body).get("changes", [])
    return changes


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out and left is expected here; stay quiet about it."""


class _Handler(BaseHTTPRequestHandler):
    owner: WebhookReceiver
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read `received` instead."""

    def do_GET(self) -> None:
        record = self._record(b"")
        if self.path.rstrip("/") != "/hooks/tollgate/state":
            return self._answer(record, 404, {"error": "no such path"})
        why = self.owner.verify(record.headers, b"")
        if why is not None:
            return self._answer(record, 401, {"error": why})
        with self.owner._lock:
            entries = list(self.owner.state.values())
        return self._answer(record, 200, {"entries": entries})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._answer(self._record(b""), 413, {"error": "body too large"})
        record = self._record(self.rfile.read(length))
        if self.path.rstrip("/") != "/hooks/tollgate":
            return self._answer(record, 404, {"error": "no such path"})
        why = self.owner.verify(record.headers, record.body)
        if why is not None:
            return self._answer(record, 401, {"error": why})
        try:
            document = json.loads(record.body)
            changes = document["changes"]
            assert document["version"] == 1 and isinstance(changes, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            return self._answer(record, 400, {"error": "not a Tollgate webhook body"})
        trouble = self.owner.take_trouble()
        if trouble is not None and not trouble.after_apply:
            return self._misbehave(record, trouble)
        results = self.owner.apply(changes)
        if trouble is not None:
            return self._misbehave(record, trouble)
        if len(results) == 1 and results[0]["status"] == "rejected":
            value = changes[0]["entry"]["target"]["value"]
            status, message = self.owner.refusals.get(value, (422, results[0]["error"]))
            return self._answer(record, status, {"error": message})
        return self._answer(record, 200, {"results": results})

    def _record(self, body: bytes) -> Received:
        record = Received(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
        )
        self.owner.received.append(record)
        return record

    def _misbehave(self, record: Received, trouble: _Trouble) -> None:
        if trouble.stall:
            self.owner._release.wait(trouble.stall)
        return self._answer(record, trouble.status, {"error": "the backend is unavailable"})

    def _answer(self, record: Received, status: int, document: dict[str, Any]) -> None:
        record.status = status
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
