"""What one Tollgate process runs: database, active engine, pipeline services, jobs."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from controlplane import heap
from controlplane.audit import jobs as audit_jobs
from controlplane.auth.jobs import Tokens
from controlplane.bouncers.config import load_stream_config
from controlplane.bouncers.service import DecisionStream
from controlplane.customers.service import CustomerService
from controlplane.enforce.config import load_connectors
from controlplane.enforce.service import Enforcer
from controlplane.engine.runtime import EngineSlot, load_engine
from controlplane.errors import EngineUnavailable, InvalidInput, TollgateError
from controlplane.evaluate.service import Decider
from controlplane.ingest import repository as verdicts
from controlplane.ingest.service import IngestService
from controlplane.intel.config import load_intel
from controlplane.intel.jobs import Puller
from controlplane.intel.pull import Intake
from controlplane.intel.service import IntelService
from controlplane.intel.taxii.service import TaxiiService
from controlplane.leadership import Leadership
from controlplane.plan import repository as actions
from controlplane.policy.service import PolicyService
from controlplane.policy.source import source_from
from controlplane.remedy.reviews_service import ReviewService
from controlplane.remedy.service import Remedy
from controlplane.settings import Providers, Settings, load_providers
from controlplane.store.db import OUTAGES, Database, outage_reason, upgrade
from controlplane.telemetry import spanstore
from controlplane.telemetry.tracing import configure

log = logging.getLogger(__name__)

CONVERGE_SECONDS = 5
GIL_SWITCH_SECONDS = 0.0005
"""How long a thread waiting for the GIL waits before the holder is asked to drop it
(Python's default: 5 ms). An engine worker back from its native evaluation needs the
GIL for a moment to read the result; while the decide thread works on the previous
decision it waited up to 5 ms for it, longer than most evaluations. With 0.5 ms,
`bench/ingest.py` on SQLite measured the engine's time per verdict inside the
pipeline lower in three paired runs out of three (by 8-19%), verdicts/s 5-23% higher;
on a 2-CPU machine whose run-to-run spread is itself up to 20%, so a hint, not proof."""
INTEL_PUBLISH_SECONDS = 10
INTEL_AGE_OUT_SECONDS = 3600
EVERY_REPLICA = frozenset({"converge", "expire", "expire_exemptions", "leadership"})
"""Jobs every replica runs: converging its own engine; expiry, whose due rows are claimed
with `FOR UPDATE SKIP LOCKED` (two replicas never expire the same action or exemption,
nor write two events for it); and the check for the lead itself. The others run on the
leader only."""


@dataclass
class Runtime:
    settings: Settings
    db: Database
    engines: EngineSlot
    ingest: IngestService
    policies: PolicyService
    tokens: Tokens
    enforcer: Enforcer
    leadership: Leadership
    customers: CustomerService
    reviews: ReviewService
    remedy: Remedy
    intel: IntelService
    taxii: TaxiiService
    puller: Puller
    providers: Providers = field(default_factory=Providers)
    bouncers: DecisionStream | None = None
    """The CrowdSec decision stream (`crowdsec:` in the config file)."""
    scheduler: AsyncIOScheduler = field(default_factory=AsyncIOScheduler)
    _sync_problems: list[str] = field(default_factory=list)
    _jobs_in_outage: set[str] = field(default_factory=set)
    _span_store: bool = False
    _started: bool = False
    _stopped: bool = False

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        settings.check()
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
        db = Database(settings.resolved_database_url)
        engines = EngineSlot()
        policies = PolicyService(db, source_from(settings), settings.entrypoint)
        providers = load_providers(settings.config)
        # With enforcement off, connector workers apply the change log: this process
        # only names the connectors, and never reads (or needs) their credentials.
        embedded = settings.enforce.strip().lower() == "embedded"
        enforcer = Enforcer(
            db,
            load_connectors(settings.config, read_secrets=embedded),
            actions=actions,
            embedded=embedded,
        )
        intel_config = load_intel(settings.config)
        decider = Decider(db, engines, providers, keyring=intel_config.keyring, verdicts=verdicts)
        ingest = IngestService(db, decider, on_planned=enforcer.wake)
        remedy = Remedy(enforcer, providers)
        intel = IntelService(
            intel_config,
            bundle=lambda: engines.current.bundle,
            lift=remedy.lift,
            floor=providers.loosest_floor,
        )
        intake = Intake(intel)
        return cls(
            settings,
            db,
            engines,
            ingest,
            policies,
            Tokens(db),
            enforcer,
            Leadership(db, settings.takeover_grace),
            CustomerService(),
            ReviewService(enforcer.wake),
            remedy,
            intel,
            TaxiiService(intel_config, intake),
            Puller(db, intake),
            providers,
            DecisionStream(load_stream_config(settings.config)),
        )

    async def start(self) -> None:
        """Migrate, gate and load the policy revision, load the decider's indexes, decide
        leftovers, start jobs.
        Once: `tollgate serve` starts it before serving, and the app's startup again."""
        if self._started:
            return
        self._started = True
        configure(self.settings.otlp_endpoint)
        await asyncio.to_thread(upgrade, self.db.url)
        await self.sync_policies()
        await self.enforcer.start()
        await self.ingest.warm()
        await self.recover()
        heap.settle()
        for job, seconds in (
            (self.recover, self.settings.recovery_seconds),
            (self.sync_policies, self.settings.policy_sync_seconds),
            (self.converge, CONVERGE_SECONDS),
            (self.enforcer.expire, self.settings.expiry_seconds),
            (self.expire_exemptions, self.settings.expiry_seconds),
            (self.publish_from_actions, INTEL_PUBLISH_SECONDS),
            (self.age_out, INTEL_AGE_OUT_SECONDS),
        ):
            self.scheduler.add_job(
                job, "interval", seconds=seconds, id=job.__name__, max_instances=1, coalesce=True
            )
        if self.intel.config.peers:
            self.scheduler.add_job(
                self.puller.pull_all,
                "interval",
                seconds=self.intel.config.pull_seconds,
                id="pull_intel",
                max_instances=1,
                coalesce=True,
            )
        audit_jobs.schedule(self.scheduler, self.db, self.settings)
        # A replica standing by looks for the lead as often as it expires (the shortest
        # interval), so it takes the periodic jobs over that soon after the leader dies.
        self.scheduler.add_job(
            self.leadership.check,
            "interval",
            seconds=self.settings.expiry_seconds,
            id="leadership",
            max_instances=1,
            coalesce=True,
        )
        self._start_span_store()
        for job in self.scheduler.get_jobs():
            func = job.func if job.id in EVERY_REPLICA else self.leadership.only(job.func)
            job.modify(func=self._through_outages(job.id, func))
        # Known at once (and shown by /readyz), not only at the first job's tick.
        await self.leadership.check()
        self.scheduler.start()

    def _through_outages(
        self, name: str, job: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[None]]:
        """`job`, skipped with one WARNING line when the database is unavailable (not a
        traceback at every tick), and one more when it runs again: the next tick retries."""

        async def tolerant(*args: Any) -> None:
            try:
                await job(*args)
            except asyncio.CancelledError:
                if self._stopped:
                    return  # the process is stopping: a job cut short is no error
                raise
            except OUTAGES as exc:
                if name not in self._jobs_in_outage:
                    self._jobs_in_outage.add(name)
                    log.warning(
                        "periodic job %s skipped: the database is unavailable (%s); "
                        "retrying at every run",
                        name,
                        outage_reason(exc),
                    )
                return
            if name in self._jobs_in_outage:
                self._jobs_in_outage.discard(name)
                log.warning("periodic job %s runs again: the database answers", name)

        return tolerant

    def _start_span_store(self) -> None:
        """Keep finished spans in this database (written off the request path) and prune
        them after `TOLLGATE_SPAN_RETENTION_HOURS`. Attached last in `start`, so a start
        that fails leaves no writer behind."""
        if self.settings.span_retention_hours <= 0:
            return
        spanstore.store.attach(configure(self.settings.otlp_endpoint), self.db.url)
        self._span_store = True
        self.scheduler.add_job(
            self.prune_spans,
            "interval",
            seconds=spanstore.PRUNE_SECONDS,
            id="prune_spans",
            max_instances=1,
            coalesce=True,
        )

    async def prune_spans(self) -> None:
        """The span store's retention job, in a worker thread, one transaction per
        chunk of spans (queued with the process's other writers of the database)."""
        removed = await asyncio.to_thread(self._prune_spans)
        if removed:
            log.info(
                "span store: pruned %d spans older than %sh",
                removed,
                self.settings.span_retention_hours,
            )

    def _prune_spans(self) -> int:
        total = 0
        while True:
            with self.db.write_blocking() as session, session.begin():
                removed = spanstore.prune(session, self.settings.span_retention_hours)
            total += removed
            if removed < spanstore.PRUNE_CHUNK:
                return total

    async def sync_policies(self) -> None:
        """Gate and activate the source's revision if it is new, then converge."""
        try:
            result = await self.policies.sync("tollgate", "sync from the policy source")
        except TollgateError as exc:
            log.error("policy sync failed: %s", exc.message)
            self._sync_problems = [exc.message]
        else:
            self._sync_problems = result.problems
            if result.outcome == "rejected":
                log.error(
                    "policy revision %s was rejected and will not be activated: %s",
                    result.revision,
                    "; ".join(result.problems),
                )
            elif result.outcome == "activated":
                log.info("policy revision %s passed its check and tests", result.revision)
        await self.converge()

    async def converge(self) -> None:
        """Make the engine evaluate the active revision (a rollback lands here too)."""
        bundle = await self.policies.active()
        if bundle is None:
            problems = "; ".join(self._sync_problems[:5]) or "none found"
            raise EngineUnavailable(
                "no policy revision has passed `tollgate policy check` and `tollgate policy "
                f"test`, so nothing can decide. Problems: {problems}. Fix the policies "
                f"in {self.settings.policy_dir} and start again."
            )
        if self.engines.loaded and self.engines.current.revision == bundle.revision:
            return
        # On the loop itself: a remote engine's HTTP session belongs to this loop.
        engine = await load_engine(self.settings, bundle)
        self.engines.swap(engine)
        log.info("policy revision %s is now deciding", bundle.revision)

    async def expire_exemptions(self, limit: int = 1000) -> int:
        """End up to `limit` exemptions past their expiry (a job: one transaction)."""
        async with self.db.transaction() as session:
            return await self.remedy.expire_exemptions(session, limit)

    async def publish_from_actions(self) -> int:
        """Offer what stands behind new hard actions to the intel share policy."""
        async with self.db.transaction() as session:
            return await self.intel.publish_from_actions(session)

    async def age_out(self) -> int:
        """Forget pulled indicators that ended long ago."""
        async with self.db.transaction() as session:
            return await self.intel.age_out(session)

    async def recover(self) -> None:
        """Decide every verdict that was stored but not decided."""
        while await self.ingest.decide_undecided() > 0:
            pass

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._span_store:
            # Writes what is queued first: the last request's spans are not lost.
            await asyncio.to_thread(spanstore.store.detach, self.db.url)
            self._span_store = False
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        await self.enforcer.close()
        self.intel.close()
        await self.leadership.release()
        # Off the loop: a group being decided still evaluates on it.
        await asyncio.to_thread(self.ingest.close)
        self.engines.close()
        await self.db.dispose()


@dataclass
class WorkerRuntime:
    """What a connector worker (`tollgate worker`) runs: only the followers, one per
    connector, applying the change log the API replicas write. It runs no migrations
    (the chart's migration Job does), decides nothing and runs no periodic jobs; on
    PostgreSQL each connector's advisory lock lets one worker apply while the others
    stand by."""

    settings: Settings
    db: Database
    enforcer: Enforcer
    _span_store: bool = False

    @classmethod
    def create(cls, settings: Settings) -> WorkerRuntime:
        settings.check()
        configs = load_connectors(settings.config)
        if not configs:
            raise InvalidInput(
                f"{settings.config}: no connectors configured, so a connector worker has "
                "nothing to apply. Set TOLLGATE_CONFIG to the file with `connectors:`"
            )
        db = Database(settings.resolved_database_url)
        return cls(settings, db, Enforcer(db, configs, actions=actions))

    async def start(self) -> None:
        provider = configure(self.settings.otlp_endpoint)
        await self.enforcer.start()
        if self.settings.span_retention_hours > 0:
            # The followers' `connector.apply` spans join their traces in the console.
            spanstore.store.attach(provider, self.db.url)
            self._span_store = True
        log.info("connector worker following the change log for %s", ", ".join(self.enforcer.names))

    async def stop(self) -> None:
        if self._span_store:
            await asyncio.to_thread(spanstore.store.detach, self.db.url)
            self._span_store = False
        await self.enforcer.close()
        await self.db.dispose()
