"""Keeping gateways in step with the desired state.

Desired state: a provider's active, non-shadow, unexpired actions. Every change to
it (planned, lifted, expired, exempted, upheld on appeal) is appended to the change
log in the transaction that makes it (`record_changes`). Each connector has a
`Follower` that applies the changes after its durable cursor, in order, in batches,
and reconciles in full at start, periodically and on demand (see `follower.py`).

The followers run in a worker thread with an event loop, a database engine and an
HTTP client of its own: a slow gateway, an outage or a reconcile of a million
entries never holds up the API's loop, so never a 202. The API's side only writes
changes and wakes the worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import httpx
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from controlplane.audit import service as audit
from controlplane.domain.vocabulary import ActionState
from controlplane.enforce import repository
from controlplane.enforce.actions import Actions
from controlplane.enforce.events import action_event
from controlplane.enforce.follower import Follower, ReconcileReport
from controlplane.enforce.registry import factory
from controlplane.enforce.sdk import ConnectorConfig, ConnectorError, EntryType
from controlplane.errors import NotFound, ServiceUnavailable
from controlplane.store.db import OUTAGES, Database
from controlplane.store.models import ConnectorStatusRow
from controlplane.store.types import utcnow

log = logging.getLogger(__name__)

__all__ = ["Enforcer", "ReconcileReport", "record_changes", "record_changes_blocking"]

T = TypeVar("T")
ENFORCED = {t.value for t in EntryType}
"""Action types a gateway may hold (a `flag_review` goes to people, not gateways)."""
STOP_SECONDS = 10.0


async def record_changes(
    session: AsyncSession,
    actions: Iterable[dict[str, Any]],
    cause: str,
    at: datetime,
    span_id: str | None = None,
) -> None:
    """Append to the change log, in the caller's transaction, the gateway entries these
    actions (as row dicts) touch. Call it after writing the transaction's audit events."""
    await session.run_sync(record_changes_blocking, list(actions), cause, at, span_id)


def record_changes_blocking(
    session: Session,
    actions: Iterable[dict[str, Any]],
    cause: str,
    at: datetime,
    span_id: str | None = None,
) -> None:
    """`record_changes` on a sync session (the decide thread's)."""
    repository.append_changes(
        session,
        [
            {
                "provider": a["provider"],
                "type": a["type"],
                "target_kind": a["target_kind"],
                "target_value": a["target_value"],
                "cause": cause,
                "action_id": a["id"],
                "trace_id": a.get("trace_id"),
                "span_id": a.get("span_id", span_id),
                "at": at,
            }
            for a in actions
            if a["type"] in ENFORCED and not a.get("shadow")
        ],
    )


class Enforcer:
    """What the API, the CLI and the jobs see of enforcement."""

    def __init__(
        self,
        db: Database,
        configs: Sequence[ConnectorConfig],
        poll_seconds: float = 0.25,
        *,
        actions: Actions,
        embedded: bool = True,
    ) -> None:
        self._db = db
        self._actions = actions
        """The action table's queries (the plan step's repository)."""
        self._configs = list(configs)
        self._poll = poll_seconds
        self._worker: _Worker | None = None
        self.embedded = embedded
        """False (`TOLLGATE_ENFORCE=off`): this process only writes the change log;
        connector workers (`tollgate worker`) apply it."""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self._configs]

    def config(self, name: str) -> ConnectorConfig:
        for c in self._configs:
            if c.name == name:
                return c
        raise NotFound(f"no connector {name!r}; configured: {', '.join(self.names) or 'none'}")

    @property
    def _running(self) -> dict[str, Follower]:
        return self._worker.followers if self._worker else {}

    async def start(self) -> None:
        """Start the worker thread and a follower per configured connector."""
        if not self._configs or not self.embedded:
            return
        worker = _Worker(self._db.url, self._actions, self._configs, self._poll)
        await asyncio.to_thread(worker.start)
        self._worker = worker

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await asyncio.to_thread(worker.stop)

    def wake(self, _providers: Iterable[str] = ()) -> None:
        """New changes are in the log: followers look now rather than at their next poll."""
        if self._worker is not None:
            self._worker.wake()

    async def health(self, session: AsyncSession, name: str) -> tuple[bool, str, str]:
        """Health now, from this process's follower; from what the connector workers
        last recorded (read in `session`) when this process applies nothing."""
        if not self.embedded:
            return await self._reported_health(session, name)
        follower = self._follower(name)
        return await self._on_worker(_health(follower))

    @property
    def alive(self) -> bool:
        """The followers' thread runs (a connector worker's liveness)."""
        return self._worker is not None and self._worker.alive

    def applying(self) -> dict[str, bool]:
        """Connector -> whether this process's follower holds its lock and applies (the
        others stand by to take over)."""
        return {name: f.active for name, f in self._running.items()}

    async def statuses(self, session: AsyncSession) -> dict[str, ConnectorStatusRow]:
        """Each connector's last recorded status, by name."""
        return await repository.statuses(session)

    async def _reported_health(self, session: AsyncSession, name: str) -> tuple[bool, str, str]:
        """Health as the connector workers last recorded it (this process applies nothing)."""
        config = self.config(name)
        status = (await repository.statuses(session)).get(name)
        if status is None:
            return False, config.type, "no connector worker has reported on it yet"
        return status.healthy, config.type, status.detail or "as reported by a connector worker"

    async def reconcile(self, name: str) -> ReconcileReport:
        """A full reconcile now, by the follower that applies for this connector."""
        follower = self._follower(name)
        if not follower.active:
            raise ServiceUnavailable(
                f"connector {name} is applied by another replica now; ask that one, or "
                "wait for its periodic reconcile"
            )
        return await self._on_worker(follower.request_reconcile())

    async def reconcile_all(self) -> list[ReconcileReport]:
        return [await self.reconcile(name) for name in self.names]

    async def settle(self) -> None:
        """Until every change logged so far has been tried at every gateway (tests,
        benchmarks and the demo use it)."""
        if self._worker is not None:
            await self._on_worker(self._worker.settle())

    async def status(self, session: AsyncSession) -> dict[str, tuple[int, int]]:
        """Connector -> (its cursor, the log's head)."""
        head = await repository.change_head(session)
        cursors = await repository.cursors(session)
        return {name: (cursors.get(name, 0), head) for name in self.names}

    def serving(self, provider: str) -> list[tuple[str, frozenset[str]]]:
        """(connector, the entry types it enforces) of each running connector serving
        this provider."""
        return [
            (name, frozenset(f.types))
            for name, f in self._running.items()
            if "*" in f.config.providers or provider in f.config.providers
        ]

    # -- expiry (on the caller's loop: it only writes the log) ----------------------------

    async def expire(self, limit: int = 5000) -> int:
        """Mark actions past their TTL expired (each an audit event) and log removals.
        A job (the runtime runs it every `expiry_seconds` on each replica): one
        transaction of its own, then the followers are woken."""
        now = utcnow()
        async with self._db.write() as session, session.begin():
            due = await self._actions.due_to_expire(session, now, limit)
            if not due:
                return 0
            changes = {a.id: ActionState.EXPIRED.value for a in due}
            await self._actions.set_action_states(session, changes, now)
            expired = ActionState.EXPIRED.value
            await audit.record(session, [action_event(a, expired, "tollgate", now) for a in due])
            await record_changes(session, [a.model_dump() for a in due], "expired", now)
        self.wake()
        return len(due)

    # -- plumbing ----------------------------------------------------------------------

    def _follower(self, name: str) -> Follower:
        self.config(name)  # NotFound naming the configured ones
        if not self.embedded:
            raise ServiceUnavailable(
                f"connector {name} is applied by the connector workers (`tollgate worker`), "
                "not by this server (TOLLGATE_ENFORCE=off); their periodic reconcile repairs "
                "drift, or restart a worker to reconcile at once"
            )
        follower = self._running.get(name)
        if follower is None:
            raise ServiceUnavailable(f"connector {name} is not running; is the server starting?")
        return follower

    async def _on_worker(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._worker is None:
            coro.close()
            raise ServiceUnavailable("enforcement is not running; is the server starting?")
        return await asyncio.wrap_future(self._worker.submit(coro))


async def _health(follower: Follower) -> tuple[bool, str, str]:
    try:
        h = await asyncio.wait_for(follower.connector.health(), follower.config.timeout_seconds)
    except (ConnectorError, TimeoutError) as exc:
        return False, follower.config.type, str(exc) or "timed out"
    return h.ok, h.gateway, h.detail


class _Worker:
    """A thread running its own event loop: the followers, their database engine and
    their HTTP client live there."""

    def __init__(
        self, url: str, actions: Actions, configs: Sequence[ConnectorConfig], poll: float
    ) -> None:
        self._url = url
        self._actions = actions
        self._configs = configs
        self._poll = poll
        self.followers: dict[str, Follower] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tollgate-enforce", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STOP_SECONDS)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._loop is not None

    def wake(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake_all)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def settle(self) -> None:
        async with self._db.read() as session:
            head = await repository.change_head(session)
        for follower in self.followers.values():
            await follower.settle(head)

    def _wake_all(self) -> None:
        for follower in self.followers.values():
            follower.wake()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        try:
            self._db = Database(self._url)
            http = httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0))
            for config in self._configs:
                connector = factory(config.type)(config, http)
                self.followers[config.name] = Follower(
                    self._db, self._actions, config, connector, self._expected, self._poll
                )
            self._stop = asyncio.Event()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._loop = asyncio.get_running_loop()
        tasks = [
            asyncio.create_task(_supervise(f), name=f"follow-{name}")
            for name, f in self.followers.items()
        ]
        self._ready.set()
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for follower in self.followers.values():
            try:
                await follower.connector.close()
            except Exception:
                log.exception("closing connector %s failed", follower.config.name)
        await http.aclose()
        await self._db.dispose()

    def _expected(self, provider: str, kind: str, target_kind: str) -> list[str]:
        """The connectors that must hold an action of this provider, type and target kind."""
        return [name for name, f in self.followers.items() if f.holds(provider, kind, target_kind)]


async def _supervise(follower: Follower) -> None:
    """A follower that fails (its database went away, say) starts again after a pause."""
    while True:
        try:
            await follower.run()
        except asyncio.CancelledError:
            raise
        except OUTAGES as exc:
            follower.database_unavailable(exc)
            await asyncio.sleep(1.0)
            continue
        except Exception:
            log.exception(
                "connector %s stopped following the change log; restarting in 5 s",
                follower.config.name,
            )
        await asyncio.sleep(5.0)
