"""Evaluate's SQL (the `decision` table, its one querier) and the lookups an input is
built from, asked of the tables' owners: actions of plan, exemptions, lifts and
appeals of remedy, indicators of intel; earlier verdicts through the `VerdictHistory`
the caller hands in (ingest owns verdicts, and a stage never imports an earlier one)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncGenerator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from controlplane.enforce import repository as changes_repo
from controlplane.evaluate.context import (
    HISTORY_WINDOW,
    RECENT_VERDICTS,
    IntelIndex,
    Lookups,
    NetworkSet,
    PairSummary,
    PriorVerdict,
)
from controlplane.intel import repository as intel_repo
from controlplane.intel.hashing import Keyring
from controlplane.plan import repository as actions_repo
from controlplane.remedy import repository as remedy_repo
from controlplane.settings import Providers
from controlplane.store.bulk import insert_many
from controlplane.store.db import Database
from controlplane.store.models import DecisionRow
from controlplane.store.types import utcnow

log = logging.getLogger(__name__)


class PairRows(Protocol):
    """A busy pair's stored history (`controlplane.ingest.repository.PairHistory`)."""

    @property
    def surely_earlier(self) -> int: ...

    @property
    def newest(self) -> list[tuple[Any, ...]]: ...

    @property
    def edge(self) -> list[tuple[Any, ...]]: ...


class VerdictHistory(Protocol):
    """(decide thread) Earlier verdicts, asked of their owner (`controlplane.ingest.
    repository`): rows are (provider, id, account, key, observed, received, score,
    confidence, detector)."""

    def prior_verdicts(
        self,
        session: Session,
        providers: Sequence[str],
        accounts: Sequence[str],
        keys: Sequence[str],
        since: datetime,
        *,
        limit: int | None = None,
    ) -> list[tuple[Any, ...]] | None: ...

    def window_counts(
        self,
        session: Session,
        providers: Sequence[str],
        values: dict[str, Sequence[str]],
        since: datetime,
    ) -> dict[tuple[str, str, str], int]: ...

    def pair_history(
        self,
        session: Session,
        provider: str,
        account: str | None,
        key: str | None,
        *,
        smin: datetime,
        smax: datetime,
        rmin: datetime,
        exclude: Sequence[str],
        newest: int,
    ) -> PairRows: ...


@dataclass(frozen=True)
class HistoryAsk:
    """One verdict of a batch, as its history is asked: about its account or key,
    observed since `since` (30 days before it), received before `received`."""

    provider: str
    verdict_id: str
    account: str | None
    key: str | None
    since: datetime
    received: datetime


HOT_HISTORY = 500
"""An account or key with more verdicts than this in a batch's window is counted in the
database, its newest few read (`pair_history`), instead of read whole."""
KEYS_PER_READ = {"postgresql": 5_000}
"""Subject keys asked per statement by `fill_lookups`: on PostgreSQL each IN list is one
array parameter, so a batch's keys take one statement per table (in chunks of 300 its
exemptions, lifts and appeals took ~8 ms of round trips a batch, finding none);
elsewhere each value is a parameter: 300."""
CHUNK_ROWS = 10_000
"""The others are read whole, in chunks of about this many rows by their counts."""


def action_document(row: Mapping[Any, Any]) -> dict[str, Any]:
    """An action row as policies see it in `history.active_actions`."""
    return {
        "id": row["id"],
        "type": row["type"],
        "target": {"kind": row["target_kind"], "value": row["target_value"]},
        "params": row["params"],
        "rule": row["rule"],
        "state": row["state"],
        "created_at": row["created_at"].isoformat(),
        "expires_at": row["expires_at"].isoformat() if row["expires_at"] else None,
    }


def fill_lookups(
    session: Session,
    lookups: Lookups,
    subject_keys: set[tuple[str, str, str]],
    now: datetime,
    providers: Providers | None = None,
) -> None:
    """Fetch active actions, exemptions and remedies for these
    (provider, kind, value) keys: one query per table (a chunk of keys at a time), asked
    of the table's owner, by index. The `cidr` keys are the CIDR actions that hold the
    batch's IPs (see `CidrTargets`)."""
    settings = providers or Providers()
    window = now - max(HISTORY_WINDOW, settings.longest_cooldown)
    keys = sorted(subject_keys)
    size = KEYS_PER_READ.get(session.connection().dialect.name, 300)
    for chunk in _chunks(keys, size):
        for row in actions_repo.active_on_keys(session, chunk, now):
            lookups.add_action(row["provider"], action_document(row))
        for e in remedy_repo.live_exemptions_on(session, chunk, now):
            lookups.exemptions[(e.provider, e.subject_kind, e.subject_value)] = {
                "subject": {"kind": e.subject_kind, "value": e.subject_value},
                "owner": e.owner,
                "reason": e.reason,
                "expires_at": e.expires_at.isoformat() if e.expires_at else None,
            }
        for lift in remedy_repo.lifts_on(session, chunk, window):
            cooldown = settings.of(lift.provider).cooldown
            lookups.add_remedy(lift.provider, _lift_document(lift, cooldown))
        for appeal in remedy_repo.pending_appeals_on(session, chunk, window):
            key = (appeal.provider, appeal.subject_kind, appeal.subject_value)
            lookups.remedies[key].append(_appeal_document(appeal))
    if keys:
        _fill_range_remedies(session, lookups, {p for p, _, _ in keys}, window, settings)


def fill_prior(
    session: Session, lookups: Lookups, asks: Sequence[HistoryAsk], verdicts: VerdictHistory
) -> None:
    """Earlier verdicts about the batch's accounts and keys, observed in the window of
    its earliest verdict: read whole (one statement) when they are few, as they nearly
    always are. Past a cap in all, the accounts and keys with more than
    `HOT_HISTORY` each are counted in the database per (account, key) pair of the
    batch and only their newest few read, so a subject watched for a month costs a
    batch three index ranges, not a read of its month; the others are read whole, in
    chunks their counts keep small."""
    if not asks:
        return
    wanted = {(a.provider, "account", a.account) for a in asks if a.account} | {
        (a.provider, "api_key", a.key) for a in asks if a.key
    }
    since = min(a.since for a in asks)
    providers = sorted({p for p, _, _ in wanted})
    accounts = sorted(v for _, k, v in wanted if k == "account")
    keys = sorted(v for _, k, v in wanted if k == "api_key")
    rows = verdicts.prior_verdicts(session, providers, accounts, keys, since, limit=CHUNK_ROWS)
    if rows is not None:
        _add_prior(lookups, rows, wanted)
        return
    counts = verdicts.window_counts(
        session, providers, {"account": accounts, "api_key": keys}, since
    )
    hot = {k for k in wanted if counts.get(k, 0) > HOT_HISTORY}
    cold = sorted(wanted - hot)
    chunk: list[tuple[str, str, str]] = []
    size = 0
    for subject in [*cold, None]:
        n = counts.get(subject, 0) if subject is not None else 0
        if chunk and (subject is None or size + n > CHUNK_ROWS):
            rows = verdicts.prior_verdicts(
                session,
                sorted({p for p, _, _ in chunk}),
                sorted(v for _, k, v in chunk if k == "account"),
                sorted(v for _, k, v in chunk if k == "api_key"),
                since,
            )
            _add_prior(lookups, rows or [], set(chunk))
            chunk, size = [], 0
        if subject is not None:
            chunk.append(subject)
            size += n
    pairs: dict[tuple[str, str | None, str | None], list[HistoryAsk]] = {}
    for a in asks:
        if (a.provider, "account", a.account) in hot or (a.provider, "api_key", a.key) in hot:
            pairs.setdefault((a.provider, a.account, a.key), []).append(a)
    for (provider, account, key), members in pairs.items():
        found = verdicts.pair_history(
            session,
            provider,
            account,
            key,
            smin=min(a.since for a in members),
            smax=max(a.since for a in members),
            rmin=min(a.received for a in members),
            exclude=[
                a.verdict_id
                for a in asks
                if a.provider == provider
                and ((account and a.account == account) or (key and a.key == key))
            ],
            newest=RECENT_VERDICTS,
        )
        lookups.pair_history[(provider, account, key)] = PairSummary(
            found.surely_earlier,
            [_prior_of(r) for r in found.newest],
            [_prior_of(r) for r in found.edge],
        )


def _prior_of(row: tuple[Any, ...]) -> PriorVerdict:
    _, verdict_id, account, key, observed, received, score, confidence, detector = row
    return PriorVerdict(verdict_id, account, key, observed, received, score, confidence, detector)


def _add_prior(
    lookups: Lookups, rows: Iterable[tuple[Any, ...]], wanted: set[tuple[str, str, str]]
) -> None:
    for row in rows:
        provider, account, key = row[0], row[2], row[3]
        found = _prior_of(row)
        if (provider, "account", account) in wanted:
            lookups.verdicts[(provider, "account", account)].append(found)
        if (provider, "api_key", key) in wanted:
            lookups.verdicts[(provider, "api_key", key)].append(found)


def _lift_document(lift: Any, cooldown: timedelta) -> dict[str, Any]:
    return {
        "id": lift.id,
        "appeal_id": lift.appeal_id,
        "state": lift.cause,
        "rule": lift.rule,
        "type": lift.type,
        "target": {"kind": lift.target_kind, "value": lift.target_value},
        "score": lift.score,
        "at": _rfc3339(lift.at),
        "cooldown_until": _rfc3339(lift.at + cooldown),
    }


def _appeal_document(appeal: Any) -> dict[str, Any]:
    """An appeal still open or denied, as `history.appeals` shows it."""
    return {
        "id": appeal.id,
        "appeal_id": appeal.id,
        "state": appeal.state,
        "rule": None,
        "type": None,
        "target": {"kind": appeal.subject_kind, "value": appeal.subject_value},
        "score": None,
        "at": _rfc3339(appeal.filed_at),
        "cooldown_until": None,
    }


def _fill_range_remedies(
    session: Session,
    lookups: Lookups,
    providers: set[str],
    since: datetime,
    settings: Providers,
) -> None:
    """Recent lifts of CIDR blocks of these providers: a verdict's IP inside one sees it.
    People lift few ranges, so this is a handful of rows by the (provider, kind) index."""
    known = {r["id"] for rs in lookups.remedies.values() for r in rs}
    for lift in remedy_repo.range_lifts(session, sorted(providers), since):
        if lift.id not in known:
            document = _lift_document(lift, settings.of(lift.provider).cooldown)
            lookups.range_remedies[lift.provider].add(
                ipaddress.ip_network(lift.target_value, strict=False), document
            )


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class CidrTargets:
    """Every network some CIDR action has targeted, kept current from the change log:
    a batch asks it which networks hold its IPs, then fetches only those networks'
    actions, whatever else is blocked. It is loaded once, then follows the log (new
    blocks are added at the next batch); networks whose actions ended stay until the
    next rebuild, which costs nothing but a query that finds no active action."""

    REBUILD_EVERY = 100_000
    """Removals (lifts, expiries) seen before the set is rebuilt from active actions."""

    def __init__(self) -> None:
        self._networks: dict[str, NetworkSet] = {}
        self._seq: int | None = None
        self._removed = 0

    def holding(
        self, session: Session, ips: set[tuple[str, str]], now: datetime
    ) -> set[tuple[str, str, str]]:
        """(provider, 'cidr', network) keys of the networks that hold these (provider, ip)."""
        self._catch_up(session, now)
        found: set[tuple[str, str, str]] = set()
        for provider, ip in ips:
            networks = self._networks.get(provider)
            if networks is not None:
                found.update((provider, "cidr", n) for n in networks.holding(ip))
        return found

    def _catch_up(self, session: Session, now: datetime) -> None:
        if self._seq is None or self._removed >= self.REBUILD_EVERY:
            # The head first: a change logged while the actions are read is seen again.
            self._seq = changes_repo.change_head_blocking(session)
            self._networks, self._removed = {}, 0
            for provider, value in actions_repo.active_cidr_targets(session, now):
                self._networks.setdefault(provider, NetworkSet()).add(value)
        while True:
            changes = changes_repo.changes_after_blocking(session, self._seq, 5000, "cidr")
            for change in changes:
                if change.cause == "planned":
                    self._networks.setdefault(change.provider, NetworkSet()).add(
                        change.target_value
                    )
                else:
                    self._removed += 1
                self._seq = change.seq
            if len(changes) < 5000:
                return


class IntelCache:
    """The intel index: loaded once (at start, `Decider.warm`), then extended with the
    indicators added or changed since (found by `modified`, an indexed column; a revoked
    one is dropped at once); expired ones stop matching at once and are dropped at the
    next full load, every `RELOAD_SECONDS`. That load (a million indicators take
    seconds) runs in a thread of its own while batches go on with the current index; the
    new one is swapped in at the next batch, then caught up like any other."""

    RELOAD_SECONDS = 600.0
    LOOKBACK = timedelta(seconds=30)
    """How far before the newest change seen a look goes again: a row stamped earlier
    may commit later (versions already taken are skipped)."""
    LOOK_BACK_EVERY = timedelta(seconds=2)
    """How often a batch looks back that far; the others read only rows stamped after
    the newest seen. Looking back at every batch would read every indicator of the
    last 30 s again per batch: a peer sharing ten thousand at once would cost each
    batch ten thousand rows for half a minute."""

    def __init__(self, keyring: Keyring | None = None, db: Database | None = None) -> None:
        self._keyring = keyring or Keyring()
        self._db = db
        """Where a reload reads from, on its own connection (none: reload inline)."""
        self._index = IntelIndex([], self._keyring)
        self._loaded_at: datetime | None = None
        self._watermark: datetime | None = None
        self._recent: dict[tuple[str, datetime], datetime] = {}
        self._loader: ThreadPoolExecutor | None = None
        self._reload: Future[IntelIndex] | None = None
        self._reload_at: datetime | None = None
        self._looked_back: datetime | None = None

    def index(self, session: Session, now: datetime) -> IntelIndex:
        due = self._loaded_at is None or (now - self._loaded_at) >= timedelta(
            seconds=self.RELOAD_SECONDS
        )
        if self._loaded_at is None or (due and self._db is None):
            self._swap(self._load(session, now), now)
        elif due and self._reload is None:
            self._reload_at = now
            if self._loader is None:
                self._loader = ThreadPoolExecutor(1, thread_name_prefix="tollgate-intel-load")
            self._reload = self._loader.submit(self._load_apart, now)
        if self._reload is not None and self._reload.done():
            reload, self._reload = self._reload, None
            try:
                self._swap(reload.result(), self._reload_at or now)
            except Exception:
                # The current index goes on serving; the next batch tries again.
                log.exception("reloading the intel index failed; it keeps the current one")
        assert self._watermark is not None
        since = self._watermark + timedelta(microseconds=1)  # what is stamped after it
        if self._looked_back is None or now - self._looked_back >= self.LOOK_BACK_EVERY:
            since, self._looked_back = self._watermark - self.LOOKBACK, now
        rows = intel_repo.indicators_changed_since(session, since)
        fresh = [r for r in rows if (r.id, _changed(r)) not in self._recent]
        self._index.drop(r.id for r in fresh)  # an earlier version of a changed row
        self._index.extend(_documents(r for r in fresh if not r.revoked))
        if fresh:
            self._watermark = max(self._watermark, max(_changed(r) for r in fresh))
        horizon = self._watermark - self.LOOKBACK
        self._recent.update(
            ((r.id, _changed(r)), _changed(r)) for r in fresh if _changed(r) >= horizon
        )
        if len(self._recent) > 10_000:
            self._recent = {k: at for k, at in self._recent.items() if at >= horizon}
        return self._index

    def close(self) -> None:
        if self._loader is not None:
            self._loader.shutdown(wait=True, cancel_futures=True)
            self._loader = None

    def _swap(self, index: IntelIndex, loaded_at: datetime) -> None:
        """`index` holds the live indicators as of `loaded_at`: what changed from a
        little before is looked at again (`_recent` is empty), so nothing is missed."""
        self._index, self._loaded_at, self._recent = index, loaded_at, {}
        self._watermark = loaded_at

    def _load(self, session: Session, now: datetime) -> IntelIndex:
        index = IntelIndex([], self._keyring)
        index.extend(_documents(intel_repo.live_indicators(session, now)))
        return index

    def _load_apart(self, now: datetime) -> IntelIndex:
        assert self._db is not None
        with self._db.read_blocking() as session:
            return self._load(session, now)


def _documents(rows: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Indicator rows as the index takes them."""
    for r in rows:
        yield {
            "id": r.id,
            "kind": r.kind,
            "value": r.value,
            "source": r.source,
            "confidence": r.confidence,
            "tlp": r.tlp,
            "pap": r.pap,
            "expires_at": r.expires_at,
            "last_seen": r.last_seen,
            "first_seen": r.first_seen,
            "created_at": r.created_at,
            "decay_days": r.decay_days,
            "detail": r.detail,
        }


def _changed(row: Any) -> datetime:
    moment: datetime = row.modified or row.created_at
    return moment


def insert_decisions(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        insert_many(session.connection(), DecisionRow.__table__, rows)  # type: ignore[attr-defined]


async def get_decision(session: AsyncSession, decision_id: str) -> DecisionRow | None:
    return await session.get(DecisionRow, decision_id)


async def decisions_by_id(session: AsyncSession, ids: Sequence[str]) -> dict[str, DecisionRow]:
    found: dict[str, DecisionRow] = {}
    for chunk in _chunks(sorted(set(ids)), 500):
        rows = await session.execute(select(DecisionRow).where(col(DecisionRow.id).in_(chunk)))
        found.update({row.id: row for row in rows.scalars()})
    return found


def ids_of_verdicts(verdict_ids: Select[Any]) -> Select[Any]:
    """A subquery of the ids of the decisions of the verdicts `verdict_ids` selects."""
    return select(col(DecisionRow.id)).where(col(DecisionRow.verdict_id).in_(verdict_ids))


def ids_of_revision(revision: str) -> Select[Any]:
    """A subquery of the ids of the decisions a policy revision made."""
    return select(col(DecisionRow.id)).where(col(DecisionRow.policy_revision) == revision)


def _chunks(items: Sequence[Any], size: int = 300) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def decisions_of_verdicts(
    session: AsyncSession, verdict_ids: Sequence[str]
) -> dict[str, DecisionRow]:
    found: dict[str, DecisionRow] = {}
    for chunk in _chunks(list(verdict_ids), 500):
        rows = await session.execute(
            select(DecisionRow).where(col(DecisionRow.verdict_id).in_(chunk))
        )
        found.update({row.verdict_id: row for row in rows.scalars()})
    return found


@dataclass(frozen=True)
class DecisionSummary:
    id: str
    verdict_id: str
    status: str
    policy_revision: str
    error: str | None
    trace_id: str | None


async def decision_summaries(
    session: AsyncSession, verdict_ids: Sequence[str]
) -> dict[str, DecisionSummary]:
    """What an ingest answer reports per verdict, without loading inputs and results."""
    found: dict[str, DecisionSummary] = {}
    for chunk in _chunks(list(verdict_ids), 500):
        rows = await session.execute(
            select(
                col(DecisionRow.id),
                col(DecisionRow.verdict_id),
                col(DecisionRow.status),
                col(DecisionRow.policy_revision),
                col(DecisionRow.error),
                col(DecisionRow.trace_id),
            ).where(col(DecisionRow.verdict_id).in_(chunk))
        )
        found.update({row.verdict_id: DecisionSummary(*row) for row in rows})
    return found


async def decisions_since(
    session: AsyncSession, since: datetime | None, chunk: int
) -> AsyncGenerator[list[tuple[Any, ...]], None]:
    """Stored decisions of the window in chunks, for an impact replay: (verdict id,
    revision, input, status, result), oldest first, streamed (never all in memory) in
    the caller's read session, which runs nothing else until the stream ends."""
    query = select(
        col(DecisionRow.verdict_id),
        col(DecisionRow.policy_revision),
        col(DecisionRow.input),
        col(DecisionRow.status),
        col(DecisionRow.result),
    ).order_by(col(DecisionRow.decided_at), col(DecisionRow.id))
    if since is not None:
        query = query.where(col(DecisionRow.decided_at) >= since)
    stream = await session.stream(query.execution_options(yield_per=chunk))
    try:
        async for partition in stream.partitions(chunk):
            yield [tuple(row) for row in partition]
    finally:
        # A replay stopped half-way leaves no cursor open in the session it was given.
        await stream.close()


async def count_decisions(session: AsyncSession, since: timedelta | None) -> int:
    """Stored decisions in the window (what an impact replay will go through)."""
    query = select(func.count()).select_from(DecisionRow)
    if since is not None:
        query = query.where(col(DecisionRow.decided_at) >= utcnow() - since)
    return int((await session.execute(query)).scalar_one())
