"""What one Tollgate process runs: database, active engine, pipeline services, jobs."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from controlplane.engine.runtime import EngineSlot, load_embedded
from controlplane.evaluate.service import Decider
from controlplane.ingest.service import IngestService
from controlplane.settings import Settings
from controlplane.store.db import Database, upgrade
from controlplane.telemetry.tracing import configure

log = logging.getLogger(__name__)

RECOVERY_SECONDS = 15


@dataclass
class Runtime:
    settings: Settings
    db: Database
    engines: EngineSlot
    ingest: IngestService
    scheduler: AsyncIOScheduler = field(default_factory=AsyncIOScheduler)

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        db = Database(settings.resolved_database_url)
        engines = EngineSlot()
        return cls(settings, db, engines, IngestService(db, Decider(db, engines)))

    async def start(self) -> None:
        """Migrate, load and probe the policy revision, decide leftovers, start jobs."""
        configure(self.settings.otlp_endpoint)
        await asyncio.to_thread(upgrade, self.db.url)
        engine = await asyncio.to_thread(
            load_embedded,
            self.settings.policy_dir,
            self.settings.entrypoint,
            self.settings.engine_workers,
        )
        self.engines.swap(engine)
        log.info("policy revision %s loaded from %s", engine.revision, self.settings.policy_dir)
        await self.recover()
        self.scheduler.add_job(
            self.recover,
            "interval",
            seconds=RECOVERY_SECONDS,
            id="decide-undecided",
            max_instances=1,
            coalesce=True,
        )
        self.scheduler.start()

    async def recover(self) -> None:
        """Decide every verdict that was stored but not decided."""
        while await self.ingest.decide_undecided() > 0:
            pass

    async def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.engines.close()
        await self.db.dispose()
