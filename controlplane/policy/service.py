"""Revisions: gate (check + tests), record, activate, roll back.

The database holds the truth: a snapshot of every revision seen, and every
activation. Each server converges its engine on the newest activation, so a
rollback from the CLI reaches every replica without a restart. A source
revision is gated once: one that failed stays rejected, and one rolled back
from is not re-activated by the next sync, only a newer commit is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.audit import repository as audit_repository
from controlplane.audit import service as audit
from controlplane.audit.chain import EventDraft
from controlplane.engine.bundle import PolicyBundle, is_uncommitted, short_revision
from controlplane.errors import Conflict, NotFound, PolicyError
from controlplane.policy import repository
from controlplane.policy.checks import check_bundle
from controlplane.policy.source import PolicySource
from controlplane.policy.testing import run_tests
from controlplane.store.db import Database
from controlplane.store.models import PolicyActivationRow, PolicyRevisionRow, new_id
from controlplane.store.types import utcnow

PASSED = "passed"
REJECTED = "rejected"


@dataclass(frozen=True)
class SyncResult:
    revision: str
    outcome: str
    """`activated`, `rejected`, `unchanged` (already known)."""
    problems: list[str]
    tests: dict[str, Any]


Converge = Callable[[], Awaitable[None]]
"""Makes this process's engine decide with the active revision: what the API's sync and
rollback call once their change has committed (the runtime's `converge`, handed in by
the policy area's provider, so no handler is given the runtime)."""


def gate(bundle: PolicyBundle, entrypoint: str) -> tuple[list[str], dict[str, Any]]:
    """Check and test a revision (blocking: run it in a thread)."""
    problems = [str(p) for p in check_bundle(bundle, entrypoint)]
    if problems:
        return problems, {"passed": 0, "failed": 0, "failures": [], "ran": False}
    report = run_tests(bundle)
    failures = [
        f"{o.package}.{o.name} ({o.file}:{o.line}): {o.message}"
        for o in report.outcomes
        if not o.passed
    ]
    return problems + failures, {
        "passed": report.passed,
        "failed": report.failed,
        "failures": failures,
        "ran": True,
    }


class PolicyService:
    """Syncing and rolling back, as jobs: the periodic sync, the CLI's local paths, and
    the API's sync and rollback (which then converge the engine, so each commits first).
    A sync fetches and gates a revision (seconds of tests) between short transactions,
    never holding one while it works; the rules it applies take a session."""

    def __init__(self, db: Database, source: PolicySource, entrypoint: str) -> None:
        self._db = db
        self._source = source
        self._entrypoint = entrypoint

    async def sync(self, actor: str, reason: str) -> SyncResult:
        """Fetch the source; gate, record and activate its revision if the source moved.

        A source that stays where it was is not followed again, so a rollback holds
        until the source moves; a source that moves back to a revision seen before
        (a revert, a reset ref) is followed without gating that revision again."""
        bundle = await asyncio.to_thread(self._source.fetch)
        source = self._source.description
        async with self._db.read() as session:
            known = await repository.get_revision(session, bundle.revision)
            active = await repository.active_revision(session)
            synced = await repository.synced_revision(session, source)
        if known is not None:
            moved = synced != known.id
            if moved:
                async with self._db.transaction() as session:
                    await mark_synced(session, source, known.id)
            if known.status == PASSED and known.id != active and (moved or active is None):
                why = reason if synced is None else f"{reason}: the source is back at it"
                async with self._db.transaction() as session:
                    await activate(session, known.id, "activate", actor, why)
                return SyncResult(known.id, "activated", [], known.tests)
            return SyncResult(known.id, "unchanged", known.problems, known.tests)
        problems, tests = await asyncio.to_thread(gate, bundle, self._entrypoint)
        status = REJECTED if problems else PASSED
        # Recorded, marked synced and activated in one transaction: a replica that
        # starts at the same moment and loses the race to record it finds it active
        # (its insert waits for ours to commit, then fails), never recorded but not
        # yet active (it would have started with nothing to decide with).
        try:
            async with self._db.transaction() as session:
                await record(session, bundle, source, status, problems, tests, actor)
                await mark_synced(session, source, bundle.revision)
                if not problems:
                    await activate(session, bundle.revision, "activate", actor, reason)
        except IntegrityError:
            # Another replica recorded the same revision first: theirs stands.
            return SyncResult(bundle.revision, "unchanged", problems, tests)
        if problems:
            return SyncResult(bundle.revision, "rejected", problems, tests)
        return SyncResult(bundle.revision, "activated", [], tests)

    async def rollback(self, revision: str | None, actor: str, reason: str) -> str:
        """Reactivate `revision`, or the latest committed revision activated before the
        current one (never a copy with uncommitted edits, never the current one again)."""
        async with self._db.read() as session:
            chosen = await rollback_target(session, revision, self._source.allows_uncommitted)
        async with self._db.transaction() as session:
            await activate(session, chosen, "rollback", actor, reason)
        return chosen

    async def recorded(self, revision: str) -> PolicyBundle | None:
        """`recorded`, in a read session of its own."""
        async with self._db.read() as session:
            return await recorded(session, revision)

    async def active(self) -> PolicyBundle | None:
        """`active`, in a read session of its own (the engine converges on it)."""
        async with self._db.read() as session:
            return await active(session)


async def mark_synced(session: AsyncSession, source: str, revision: str) -> None:
    """The source was seen at `revision` (a source that stays there is not followed
    again)."""
    await repository.set_synced(session, source, revision, utcnow())


async def record(
    session: AsyncSession,
    bundle: PolicyBundle,
    source: str,
    status: str,
    problems: list[str],
    tests: dict[str, Any],
    actor: str,
) -> None:
    """Record a gated revision (its snapshot, and why it was rejected), audited."""
    now = utcnow()
    await repository.insert_revision(
        session,
        {
            "id": bundle.revision,
            "source": source,
            "status": status,
            "created_at": now,
            "problems": problems,
            "tests": tests,
            "modules": bundle.modules,
            "data": [list(item) for item in bundle.data],
        },
    )
    await audit.record(
        session,
        [
            EventDraft(
                type="policy.gated",
                actor=actor,
                at=now,
                payload={
                    "revision": bundle.revision,
                    "status": status,
                    "problems": problems,
                    "tests": {k: tests[k] for k in ("passed", "failed")},
                    "source": source,
                },
            )
        ],
    )


async def rollback_target(
    session: AsyncSession, revision: str | None, allows_uncommitted: bool
) -> str:
    """The revision a rollback reactivates: `revision` (an id or a unique prefix), or
    the latest committed revision activated before the current one; refused when it
    failed its gate, holds uncommitted edits a server may not run, or is active."""
    history = await repository.activations(session, 1000)
    if not history:
        raise Conflict("no revision was ever activated: nothing to roll back to")
    current = history[0].revision
    if revision is None:
        earlier = [
            a.revision for a in history if a.revision != current and not is_uncommitted(a.revision)
        ]
        if not earlier:
            raise Conflict(
                f"no committed revision other than {short_revision(current)} was ever "
                "activated: nothing to roll back to"
            )
        revision = earlier[0]
    row = await repository.get_revision(session, revision)
    if row is None:
        row = await _by_prefix(session, revision, "tollgate policy rollback {id}")
    if row.status != PASSED:
        raise Conflict(
            f"revision {short_revision(row.id)} failed its check or tests and can never be "
            f"activated: {'; '.join(row.problems[:3])}"
        )
    if is_uncommitted(row.id) and not allows_uncommitted:
        raise Conflict(
            f"revision {short_revision(row.id)} holds uncommitted edits and a server "
            "activates only commits (TOLLGATE_POLICY_ALLOW_UNCOMMITTED is for development)"
        )
    if row.id == current:
        raise Conflict(f"revision {short_revision(row.id)} is already active")
    return row.id


async def _by_prefix(session: AsyncSession, prefix: str, pick: str) -> PolicyRevisionRow:
    """The one revision whose id starts with `prefix`. An ambiguous prefix lists every
    match with the command (`pick`, `{id}` filled in) that names it."""
    matches = [r for r in await repository.revisions(session, 10000) if r.id.startswith(prefix)]
    if not matches:
        raise NotFound(f"no revision starts with {prefix!r}: see `GET /v1/policies`")
    if len(matches) > 1:
        listed = "; ".join(
            f"{r.id} ({r.status}, recorded {r.created_at:%Y-%m-%d %H:%M:%S}): "
            f"`{pick.format(id=r.id)}`"
            for r in matches
        )
        raise Conflict(
            f"{prefix!r} matches {len(matches)} revisions; pick one: {listed}",
            details=[{"field": "revision", "message": r.id} for r in matches],
        )
    return matches[0]


async def recorded(session: AsyncSession, revision: str) -> PolicyBundle | None:
    """A recorded revision's snapshot by id or unique prefix; None if unknown."""
    row = await repository.get_revision(session, revision)
    if row is None:
        try:
            row = await _by_prefix(session, revision, "{id}")
        except NotFound:
            return None
    return bundle_of(row)


async def activate(
    session: AsyncSession, revision: str, kind: str, actor: str, reason: str
) -> None:
    """Make `revision` the active one (`activate` or `rollback`), audited."""
    # Activations are ordered by time, so each is strictly later than the last
    # whatever the clocks of the machines that made them; the audit head lock
    # serialises concurrent activations (replicas, CLI) while this is decided.
    await session.run_sync(audit_repository.lock_head)
    latest = await repository.activations(session, 1)
    now = utcnow()
    if latest and now <= latest[0].at:
        now = latest[0].at + timedelta(microseconds=1)
    await repository.insert_activation(
        session,
        {
            "id": new_id("pac"),
            "revision": revision,
            "kind": kind,
            "actor": actor,
            "reason": reason,
            "at": now,
        },
    )
    await audit.record(
        session,
        [
            EventDraft(
                type=f"policy.{'rolled_back' if kind == 'rollback' else 'activated'}",
                actor=actor,
                at=now,
                payload={"revision": revision, "reason": reason},
            )
        ],
    )


async def history(
    session: AsyncSession,
) -> tuple[list[PolicyRevisionRow], list[PolicyActivationRow]]:
    """Every revision seen and every activation, newest first."""
    return await repository.revisions(session), await repository.activations(session)


async def active(session: AsyncSession) -> PolicyBundle | None:
    """The active revision's snapshot, or None before the first activation."""
    revision = await repository.active_revision(session)
    if revision is None:
        return None
    row = await repository.get_revision(session, revision)
    if row is None:
        raise PolicyError(f"active revision {revision} has no snapshot")
    return bundle_of(row)


def bundle_of(row: PolicyRevisionRow) -> PolicyBundle:
    return PolicyBundle(
        root=Path(row.source),
        revision=row.id,
        modules=dict(row.modules),
        data=[(str(path), document) for path, document in row.data],
    )
