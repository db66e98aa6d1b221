"""A server killed with SIGKILL while detectors send verdicts, then started again: every
verdict acknowledged with 202 has exactly one decision and its actions reach the
gateway, once; a request the crash cut off is retried, as detectors do, and decided
once too. Real processes, a real PostgreSQL and a real webhook receiver."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import col

from controlplane.store.db import Database, upgrade
from controlplane.store.models import ActionRow, AuditEventRow, DecisionRow, VerdictRow
from tests.integration.connectors.webhook_receiver import WebhookReceiver
from tests.support.databases import PostgresServer
from tests.support.fleet import (
    admin_headers,
    receiver_targets,
    serve,
    server_settings,
    until,
    webhook_receiver,
)
from tests.support.processes import Process
from tests.support.store import fetch
from tests.support.verdicts import new_subject, verdict

PROVIDER = "lab-a"
BATCH = 20
SENDERS = 3
KILL_AFTER = 120
"""Verdicts acknowledged before the kill."""


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    with postgres.database() as url:
        upgrade(url)
        yield url


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as hook:
        yield hook


@dataclass
class Detector:
    """Sends batches of new verdicts to whichever server is current; a batch whose request
    fails on the way (no answer) is kept and sent again, as a detector retries."""

    client: httpx.AsyncClient
    server: Process
    acknowledged: list[str] = field(default_factory=list)
    unanswered: list[list[dict[str, Any]]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    sending: bool = True

    async def send(self, batch: list[dict[str, Any]]) -> bool:
        try:
            answer = await self.client.post(
                f"{self.server.url}/v1/verdicts", json={"verdicts": batch}
            )
        except httpx.TransportError:
            self.unanswered.append(batch)
            return False
        if answer.status_code != 202:
            self.refused.append(f"{answer.status_code}: {answer.text[:200]}")
            return False
        self.acknowledged.extend(r["verdict_id"] for r in answer.json()["results"])
        return True

    async def run(self) -> None:
        while self.sending:
            batch = [verdict(subject=new_subject(), provider=PROVIDER) for _ in range(BATCH)]
            if not await self.send(batch):
                await asyncio.sleep(0.05)

    async def retry_unanswered(self) -> None:
        while self.unanswered:
            assert await self.send(self.unanswered.pop(0)), self.refused


@pytest.mark.postgres
async def test_a_server_killed_mid_batch_loses_and_doubles_nothing(
    postgres_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    env = server_settings(postgres_url, tmp_path, receiver, [PROVIDER])
    headers = await admin_headers(postgres_url)
    db = Database(postgres_url)
    try:
        with ExitStack() as stack:
            first = serve(stack, env, tmp_path)
            await first.ready()
            async with httpx.AsyncClient(headers=headers, timeout=60) as client:
                detector = Detector(client, first)
                senders = [asyncio.create_task(detector.run()) for _ in range(SENDERS)]

                async def enough() -> bool:
                    return len(detector.acknowledged) >= KILL_AFTER

                await until(enough, f"{KILL_AFTER} verdicts acknowledged")
                first.process.kill()  # SIGKILL, with requests in flight
                first.process.wait(10)
                detector.sending = False
                await asyncio.gather(*senders)
                assert detector.refused == [], "only the crash may cut a request off"
                assert detector.unanswered, "the kill came while batches were in flight"

                second = serve(stack, env, tmp_path)
                await second.ready()
                detector.server = second
                await detector.retry_unanswered()
                # And the detectors carry on.
                await detector.send([verdict(subject=new_subject()) for _ in range(BATCH)])
                acknowledged = list(detector.acknowledged)

                async def all_applied() -> bool:
                    rows = await fetch(db, ActionRow, col(ActionRow.verdict_id).in_(acknowledged))
                    return len(rows) >= len(acknowledged) and all(
                        r.state == "applied" for r in rows
                    )

                await until(all_applied, "every action applied after the restart")

        assert len(set(acknowledged)) == len(acknowledged) >= KILL_AFTER + BATCH
        decisions = Counter(
            r.verdict_id
            for r in await fetch(db, DecisionRow, col(DecisionRow.verdict_id).in_(acknowledged))
        )
        assert decisions == Counter(acknowledged), "exactly one decision per verdict"
        verdicts = await fetch(db, VerdictRow, col(VerdictRow.id).in_(acknowledged))
        assert {v.status for v in verdicts} == {"decided"}
        actions = await fetch(db, ActionRow, col(ActionRow.verdict_id).in_(acknowledged))
        assert Counter(a.verdict_id for a in actions) == Counter(acknowledged), "one each"
        applied = Counter(
            e.action_id
            for e in await fetch(db, AuditEventRow, col(AuditEventRow.type) == "action.applied")
        )
        assert {a.id: applied[a.id] for a in actions} == {a.id: 1 for a in actions}
        at_gateway = {value for (_, _, value) in receiver.state}
        assert {a.target_value for a in actions} <= at_gateway, "every one at the gateway"
        assert set(receiver.applied.values()) == {1}
        assert receiver_targets(receiver)["remove"] == set()
    finally:
        await db.dispose()
