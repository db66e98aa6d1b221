"""Planning actions straight into the store, with their changes logged as the planner
logs them: for tests (and benchmarks) that need a given desired state, such as blocks
on addresses no bundled policy would block, without a verdict per action."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import insert

from controlplane.enforce.service import record_changes
from controlplane.store.db import Database
from controlplane.store.models import ActionRow, DecisionRow, VerdictRow
from controlplane.store.types import utcnow


@dataclass(frozen=True)
class Planned:
    """One action to plan."""

    type: str
    target_kind: str
    target_value: str
    provider: str = "lab-a"
    params: dict[str, Any] = field(default_factory=dict)
    ttl_seconds: float | None = 3600.0
    rule: str = "tests.planned"
    shadow: bool = False


async def plan(db: Database, *planned: Planned, chunk: int = 5000) -> list[str]:
    """Insert a verdict, its decision and these actions (state pending), and log their
    changes in the same transaction; returns the action ids in order."""
    now = utcnow()
    tag = secrets.token_hex(6)
    verdict_id, decision_id = f"v-seed-{tag}", f"dec_seed_{tag}"
    actions = [
        {
            "id": f"act_{tag}_{i:07d}",
            "decision_id": decision_id,
            "verdict_id": verdict_id,
            "provider": p.provider,
            "type": p.type,
            "target_kind": p.target_kind,
            "target_value": p.target_value,
            "params": p.params,
            "ttl_seconds": p.ttl_seconds,
            "expires_at": now + timedelta(seconds=p.ttl_seconds) if p.ttl_seconds else None,
            "rule": p.rule,
            "reason": "planned by a test",
            "state": "pending",
            "shadow": p.shadow,
            "policy_revision": "tests",
            "created_at": now,
            "updated_at": now,
        }
        for i, p in enumerate(planned)
    ]
    async with db.write() as session, session.begin():
        await session.execute(
            insert(VerdictRow),
            [
                {
                    "id": verdict_id,
                    "provider": "lab-a",
                    "detector_name": "tests",
                    "detector_version": "1",
                    "score": 0.9,
                    "confidence": 0.9,
                    "observed_at": now,
                    "received_at": now,
                    "body": {},
                    "content_hash": "0" * 64,
                    "status": "decided",
                }
            ],
        )
        await session.execute(
            insert(DecisionRow),
            [
                {
                    "id": decision_id,
                    "verdict_id": verdict_id,
                    "provider": "lab-a",
                    "policy_revision": "tests",
                    "entrypoint": "tollgate.decision",
                    "engine": "tests",
                    "status": "ok",
                    "input": {},
                    "result": {},
                    "duration_ms": 0.0,
                    "decided_at": now,
                }
            ],
        )
        for i in range(0, len(actions), chunk):
            await session.execute(insert(ActionRow), actions[i : i + chunk])
            await record_changes(session, actions[i : i + chunk], "planned", now)
    return [a["id"] for a in actions]
