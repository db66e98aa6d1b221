"""Customer and sighting SQL. These tables (and the sightings' tallies) are queried here
only: evaluate asks for the records and sightings of a batch's subjects, plan for the
keys a suspension covers and flags the sightings of what it revokes or suspends.
What the decide thread runs is sync (a `Session`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, and_, bindparam, delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from controlplane.store.bulk import insert_many
from controlplane.store.models import CustomerRow, SightingRow, SightingTallyRow
from controlplane.store.prepared import Prepared, int_array, text_array
from controlplane.store.repository import keyed
from controlplane.store.types import json_text

CHUNK = 500
REFRESH = timedelta(hours=1)
"""A sighting's `last_seen` moves forward only by more than this: one write per key and
network per hour, not per verdict."""


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def existing(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, datetime]:
    """Account id -> created_at of the records that exist among these."""
    found: dict[str, datetime] = {}
    for chunk in _chunks(list(account_ids)):
        rows = await session.execute(
            select(col(CustomerRow.account_id), col(CustomerRow.created_at)).where(
                col(CustomerRow.account_id).in_(chunk)
            )
        )
        found.update({a: c for a, c in rows})
    return found


async def replace_customers(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Write these records whole (a record sent again replaces the stored one), and
    mark their accounts' sightings verified or not."""
    await _hold_verified(session)
    ids = [r["account_id"] for r in rows]
    for chunk in _chunks(ids):
        await session.execute(delete(CustomerRow).where(col(CustomerRow.account_id).in_(chunk)))
    for chunk in _chunks(list(rows), 1000):
        await session.execute(insert(CustomerRow.__table__), list(chunk))  # type: ignore[attr-defined]
    for verified in (True, False):
        marked = [r["account_id"] for r in rows if bool(r["verified"]) is verified]
        await _mark_sightings(session, marked, verified)


async def delete_customer(session: AsyncSession, account_id: str) -> bool:
    await _hold_verified(session)
    result = await session.execute(
        delete(CustomerRow).where(col(CustomerRow.account_id) == account_id)
    )
    await _mark_sightings(session, [account_id], False)
    return bool(getattr(result, "rowcount", 0))


_VERIFIED_LOCK = 0x7467_7665_7269_6679  # "tgverify"
"""PostgreSQL advisory lock between the writers of customer records (exclusive) and the
batches that record new account sightings (shared): a batch reads whether each account
is verified and inserts its sightings with that flag, a customer write marks the
account's stored sightings; without it, a record written while a batch records could
commit between the batch's read and its insert, and the batch's new sightings would
keep the old flag. Shared holders never wait for each other. (SQLite has one writer.)"""


async def _hold_verified(session: AsyncSession) -> None:
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _VERIFIED_LOCK})


async def _mark_sightings(
    session: AsyncSession, account_ids: Sequence[str], verified: bool
) -> None:
    """Set `verified` on these accounts' sightings (by the account index)."""
    for chunk in _chunks(list(account_ids)):
        await session.execute(
            update(_sighting)
            .where(
                _sighting.c.scope_id.in_(chunk),
                text("scope = 'account'"),  # as the partial index says it
                _sighting.c.verified.is_not(verified),
            )
            .values(verified=verified)
        )


async def get_customer(session: AsyncSession, account_id: str) -> CustomerRow | None:
    return await session.get(CustomerRow, account_id)


async def list_customers(session: AsyncSession, after: str | None, limit: int) -> list[CustomerRow]:
    query = select(CustomerRow).order_by(col(CustomerRow.account_id)).limit(limit)
    if after:
        query = query.where(col(CustomerRow.account_id) > after)
    return list((await session.execute(query)).scalars())


_customer: Table = CustomerRow.__table__  # type: ignore[attr-defined]
# Core rows (attribute access like a CustomerRow, without the ORM's per-row cost): the
# decide thread asks them for every group.
_CUSTOMERS_OF = Prepared(
    select(_customer).where(_customer.c.account_id.in_(bindparam("ids", expanding=True)))
)
_CUSTOMERS_OF_ORGS = select(_customer).where(
    _customer.c.org_id.in_(bindparam("ids", expanding=True))
)


def customers_of(session: Session, account_ids: Iterable[str]) -> dict[str, Any]:
    """The records of these accounts (one indexed IN per chunk), as rows with the
    columns of `CustomerRow`."""
    found: dict[str, Any] = {}
    connection = session.connection()
    for chunk in _chunks(sorted(set(account_ids))):
        rows = _CUSTOMERS_OF.rows(connection, {"ids": list(chunk)})
        found.update({r.account_id: r for r in rows})
    return found


def customers_of_orgs(session: Session, org_ids: Iterable[str]) -> dict[str, list[Any]]:
    """The records of these orgs' accounts, by org."""
    found: dict[str, list[Any]] = {}
    connection = session.connection()
    for chunk in _chunks(sorted(set(org_ids))):
        for r in connection.execute(_CUSTOMERS_OF_ORGS, {"ids": list(chunk)}):
            found.setdefault(r.org_id or "", []).append(r)
    return found


# -- sightings ------------------------------------------------------------------------------

Scope = tuple[str, str, str]
"""(provider, `account`|`org`, id)."""
Sighted = tuple[str, str, str, str, str]
"""(provider, scope, scope id, kind, value): one sighting's primary key."""
Target = tuple[str, str, str]
"""(provider, kind, value): what a sighting saw."""

FIRST_NETWORKS = 64
"""Networks a tally keeps (the lowest in string order): what `history.*.networks` lists."""
ACTED_GRACE = timedelta(minutes=10)
"""A flag is cleared only when set longer ago than this: a transaction that revokes the
key sets it again, with its own time, whether it commits before or after the clearing
one (PostgreSQL re-checks the time on the row it finds locked)."""


@dataclass
class Tally:
    """A scope's counts (`sighting_tally`)."""

    keys: int = 0
    networks: int = 0
    accounts: int = 0
    first_networks: list[str] = field(default_factory=list)


@dataclass
class ScopesRead:
    """What a batch read of its accounts' and orgs' sightings (`read_sightings`), under
    its subjects' locks: enough to count for each of its verdicts and then to record
    what is new (`record_sightings`) without reading again. Its size is the batch's,
    whatever the scopes were seen with before."""

    tallies: dict[Scope, Tally] = field(default_factory=dict)
    known: dict[Sighted, datetime] = field(default_factory=dict)
    """The stored ones among those the batch shows (and every scope that saw one of its
    keys or accounts), with `last_seen`."""
    acted: dict[Sighted, datetime] = field(default_factory=dict)
    """The flagged sightings of the batch's scopes, with `acted_at`."""

    def to_check(self, seen: Iterable[Sighted]) -> set[Target]:
        """The keys and accounts `record_sightings` needs to know are acted on now:
        those new to a scope (flagged as they are inserted) and the flagged ones (kept
        or cleared)."""
        found = {(k[0], k[3], k[4]) for k in seen if k[3] != "network" and k not in self.known}
        found.update((k[0], k[3], k[4]) for k in self.acted)
        return found


_sighting: Table = SightingRow.__table__  # type: ignore[attr-defined]
_tally: Table = SightingTallyRow.__table__  # type: ignore[attr-defined]
# Sets of (provider, scope, id) are asked as cross products of IN lists, answered by the
# primary key (or the partial index of flagged sightings); rows of combinations not
# asked for are dropped.


def _in_scopes(table: Table) -> tuple[Any, ...]:
    """(provider, scope, scope_id) IN lists, given by `_scoped`."""
    return (
        table.c.provider.in_(bindparam("providers", expanding=True)),
        table.c.scope.in_(bindparam("scopes", expanding=True)),
        table.c.scope_id.in_(bindparam("ids", expanding=True)),
    )


_SIGHTED = tuple(_sighting.c[name] for name in ("provider", "scope", "scope_id", "kind", "value"))
"""A sighting's primary key columns (a `Sighted`)."""
_TALLIES = Prepared(select(_tally).where(*_in_scopes(_tally)))
_ACTED = Prepared(
    select(*_SIGHTED, _sighting.c.acted_at).where(
        *_in_scopes(_sighting),
        text("acted_at IS NOT NULL"),  # as the partial index says it
    )
)
# Who saw these keys and accounts, by the target index (networks are never asked so:
# thousands of scopes may share one).
_SEEN_TARGETS = Prepared(
    select(*_SIGHTED, _sighting.c.last_seen).where(
        _sighting.c.provider.in_(bindparam("providers", expanding=True)),
        _sighting.c.kind.in_(bindparam("kinds", expanding=True)),
        _sighting.c.value.in_(bindparam("values", expanding=True)),
        text("kind <> 'network'"),  # as the partial index says it
    )
)
_KEYS_SEEN_BY = Prepared(
    select(_sighting.c.provider, _sighting.c.scope, _sighting.c.scope_id, _sighting.c.value).where(
        *_in_scopes(_sighting), _sighting.c.kind == "api_key"
    )
)
# Exactly these (provider, scope, id, network) sightings, one primary-key probe each: the
# wanted rows are one parameter (a JSON array on SQLite, arrays on PostgreSQL), so the
# statement has one text whatever their number.
_NETWORKS_AMONG = {
    "sqlite": text(
        "SELECT s.provider, s.scope, s.scope_id, s.value, s.last_seen "
        "FROM json_each(:wanted) AS w CROSS JOIN sighting AS s "
        "ON s.provider = w.value ->> 0 AND s.scope = w.value ->> 1 "
        "AND s.scope_id = w.value ->> 2 AND s.kind = 'network' AND s.value = w.value ->> 3"
    ),
    "postgresql": text(
        "SELECT s.provider, s.scope, s.scope_id, s.value, s.last_seen "
        "FROM unnest(CAST(:providers AS text[]), CAST(:scopes AS text[]), "
        "CAST(:ids AS text[]), CAST(:values AS text[])) AS w(provider, scope, scope_id, value) "
        "JOIN sighting AS s ON s.provider = w.provider AND s.scope = w.scope "
        "AND s.scope_id = w.scope_id AND s.kind = 'network' AND s.value = w.value"
    ),
}
_VERIFIED_SEEING = Prepared(
    select(_sighting.c.provider, _sighting.c.value, _sighting.c.scope_id).where(
        _sighting.c.provider.in_(bindparam("providers", expanding=True)),
        _sighting.c.kind == bindparam("kind"),
        _sighting.c.value.in_(bindparam("values", expanding=True)),
        text("verified"),  # as the partial index says it
    )
)
_VERIFIED_AMONG = Prepared(
    select(_customer.c.account_id).where(
        _customer.c.account_id.in_(bindparam("ids", expanding=True)), text("verified")
    )
)


def _pk(prefix: str) -> Any:
    return and_(
        _sighting.c.provider == bindparam(f"{prefix}provider"),
        _sighting.c.scope == bindparam(f"{prefix}scope"),
        _sighting.c.scope_id == bindparam(f"{prefix}scope_id"),
        _sighting.c.kind == bindparam(f"{prefix}kind"),
        _sighting.c.value == bindparam(f"{prefix}value"),
    )


_SEEN_AGAIN = update(_sighting).where(_pk("k_")).values(last_seen=bindparam("k_last_seen"))
_UNFLAG = (
    update(_sighting)
    .where(_pk("k_"), _sighting.c.acted_at < bindparam("k_before"))
    .values(acted_at=None)
)
_FLAG = (
    update(_sighting)
    .where(
        _sighting.c.provider == bindparam("k_provider"),
        _sighting.c.kind == bindparam("k_kind"),
        _sighting.c.value == bindparam("k_value"),
        text("kind <> 'network'"),  # as the target index says it
    )
    .values(acted_at=bindparam("k_at"))
)
_PK_ROWS = (
    "unnest(CAST(:providers AS text[]), CAST(:scopes AS text[]), CAST(:ids AS text[]), "
    "CAST(:kinds AS text[]), CAST(:values AS text[])"
)
"""Sighting keys, each part one array: the rows (provider, scope, scope_id, kind, value)."""
_PK_MATCH = (
    "s.provider = w.provider AND s.scope = w.scope AND s.scope_id = w.scope_id "
    "AND s.kind = w.kind AND s.value = w.value"
)
_SEEN_AGAIN_PG = text(
    f"UPDATE sighting AS s SET last_seen = w.seen FROM {_PK_ROWS}, "
    "CAST(:seen AS timestamptz[])) AS w(provider, scope, scope_id, kind, value, seen) "
    f"WHERE {_PK_MATCH}"
)
_UNFLAG_PG = text(
    f"UPDATE sighting AS s SET acted_at = NULL FROM {_PK_ROWS}) "
    "AS w(provider, scope, scope_id, kind, value) "
    f"WHERE {_PK_MATCH} AND s.acted_at < :before"
).bindparams(bindparam("before", type_=_sighting.c.acted_at.type))
_FLAG_PG = text(
    "UPDATE sighting AS s SET acted_at = :at "
    "FROM unnest(CAST(:providers AS text[]), CAST(:kinds AS text[]), CAST(:values AS text[])) "
    "AS w(provider, kind, value) "
    "WHERE s.provider = w.provider AND s.kind = w.kind AND s.value = w.value "
    "AND s.kind <> 'network'"  # as the target index says it
).bindparams(bindparam("at", type_=_sighting.c.acted_at.type))
_TALLY_AGAIN = (
    update(_tally)
    .where(
        _tally.c.provider == bindparam("k_provider"),
        _tally.c.scope == bindparam("k_scope"),
        _tally.c.scope_id == bindparam("k_scope_id"),
    )
    .values(
        keys=bindparam("k_keys"),
        networks=bindparam("k_networks"),
        accounts=bindparam("k_accounts"),
        first_networks=bindparam("k_first_networks", type_=_tally.c.first_networks.type),
    )
)


def _scoped(chunk: Sequence[tuple[str, str, str]]) -> dict[str, list[str]]:
    return {
        "providers": sorted({p for p, _, _ in chunk}),
        "scopes": sorted({s for _, s, _ in chunk}),
        "ids": sorted({i for _, _, i in chunk}),
    }


def read_sightings(session: Session, shown: Iterable[Sighted]) -> ScopesRead:
    """What is stored of the sightings a batch shows (`shown`) and of their scopes:
    tallies, the stored ones among them (with every scope that saw one of their keys or
    accounts: a key revoked in the batch counts for each), the scopes' flagged ones.
    Read by primary key and partial indexes; never a scope's other sightings."""
    shown = set(shown)
    scopes = sorted({k[:3] for k in shown})
    connection = session.connection()
    tallies: dict[Scope, Tally] = {}
    acted: dict[Sighted, datetime] = {}
    for chunk in _chunks(scopes):
        wanted = set(chunk)
        params = _scoped(chunk)
        for row in _TALLIES.rows(connection, params):
            if (row.provider, row.scope, row.scope_id) in wanted:
                tallies[(row.provider, row.scope, row.scope_id)] = Tally(
                    row.keys, row.networks, row.accounts, list(row.first_networks)
                )
        for provider, scope, scope_id, kind, value, at in _ACTED.rows(connection, params):
            if (provider, scope, scope_id) in wanted:
                acted[(provider, scope, scope_id, kind, value)] = at
    known: dict[Sighted, datetime] = {}
    targets = sorted({(k[0], k[3], k[4]) for k in shown if k[3] != "network"})
    for part in _chunks(targets):
        asked = set(part)
        for provider, scope, scope_id, kind, value, last_seen in _SEEN_TARGETS.rows(
            connection, keyed(part)
        ):
            if (provider, kind, value) in asked:
                known[(provider, scope, scope_id, kind, value)] = last_seen
    networks = sorted(k for k in shown if k[3] == "network")
    for slice_ in _chunks(networks, 5000):
        known.update(_networks_among(connection, slice_))
    return ScopesRead(tallies, known, acted)


def _networks_among(connection: Connection, wanted: Sequence[Sighted]) -> dict[Sighted, datetime]:
    statement = _NETWORKS_AMONG[connection.dialect.name].columns(
        _sighting.c.provider,
        _sighting.c.scope,
        _sighting.c.scope_id,
        _sighting.c.value,
        _sighting.c.last_seen,
    )
    if connection.dialect.name == "postgresql":
        params: dict[str, Any] = {
            "providers": text_array([k[0] for k in wanted]),
            "scopes": text_array([k[1] for k in wanted]),
            "ids": text_array([k[2] for k in wanted]),
            "values": text_array([k[4] for k in wanted]),
        }
    else:
        params = {"wanted": json.dumps([[k[0], k[1], k[2], k[4]] for k in wanted])}
    return {
        (provider, scope, scope_id, "network", value): last_seen
        for provider, scope, scope_id, value, last_seen in connection.execute(statement, params)
    }


def keys_seen_by(session: Session, scopes: Iterable[Scope]) -> dict[Scope, set[str]]:
    """The keys seen in verdicts about these accounts and orgs (what a suspension of
    them revokes)."""
    found: dict[Scope, set[str]] = {}
    connection = session.connection()
    for chunk in _chunks(sorted(set(scopes))):
        wanted = set(chunk)
        for provider, scope, scope_id, value in _KEYS_SEEN_BY.rows(connection, _scoped(chunk)):
            if (provider, scope, scope_id) in wanted:
                found.setdefault((provider, scope, scope_id), set()).add(value)
    return found


def verified_seeing(
    session: Session, kind: str, values: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], set[str]]:
    """(provider, value) -> the verified customers' accounts seen with it (e.g. using a
    network). Reads their sightings alone, however many others used the value."""
    found: dict[tuple[str, str], set[str]] = {}
    connection = session.connection()
    for chunk in _chunks(sorted(set(values))):
        wanted = set(chunk)
        params = {
            "providers": sorted({p for p, _ in chunk}),
            "kind": kind,
            "values": sorted({v for _, v in chunk}),
        }
        for provider, value, account in _VERIFIED_SEEING.rows(connection, params):
            if (provider, value) in wanted:
                found.setdefault((provider, value), set()).add(account)
    return found


def mark_acted(session: Session, targets: Iterable[Target], now: datetime) -> None:
    """Flag every sighting of these keys and accounts (just revoked or suspended outside
    the decide path, e.g. on a reviewer's word), in the caller's transaction."""
    targets = {t for t in targets if t[1] != "network"}
    if targets:
        connection = session.connection()
        _hold(connection, targets)
        _flag(connection, targets, now)


def _flag(connection: Connection, targets: set[Target], now: datetime) -> None:
    """Set the time even on those already flagged (see `ACTED_GRACE`)."""
    ordered = sorted(targets)
    if ordered and connection.dialect.name == "postgresql":
        # One statement for them all, not an UPDATE per target through the driver.
        connection.execute(
            _FLAG_PG,
            {
                "providers": text_array([t[0] for t in ordered]),
                "kinds": text_array([t[1] for t in ordered]),
                "values": text_array([t[2] for t in ordered]),
                "at": now,
            },
        )
    elif ordered:
        rows = [
            {"k_provider": provider, "k_kind": kind, "k_value": value, "k_at": now}
            for provider, kind, value in ordered
        ]
        connection.execute(_FLAG, rows)


def _hold(connection: Connection, targets: set[Target]) -> None:
    """PostgreSQL, before any sighting row is written: the advisory locks of these keys
    and accounts (a transaction flagging a key's sightings and one inserting a new
    sighting of it take turns, so the second sees the first's rows: never a new
    sighting left unflagged while the key is revoked), in one ascending sweep (never a
    deadlock between two writers), then the customers' lock, shared (a customer write
    holding it may be setting `verified` on these very rows; taken after them, the two
    would wait for each other)."""
    if connection.dialect.name != "postgresql":
        return
    keys = sorted({_acted_lock(t) for t in targets})
    if keys:
        connection.execute(
            text(
                "SELECT pg_advisory_xact_lock(k) FROM "
                "(SELECT DISTINCT unnest(CAST(:keys AS bigint[])) AS k ORDER BY k) AS ordered"
            ),
            {"keys": int_array(keys)},
        )
    connection.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": _VERIFIED_LOCK})


def _acted_lock(target: Target) -> int:
    digest = hashlib.blake2b("\0".join(target).encode(), digest_size=8, person=b"tg-acted")
    return int.from_bytes(digest.digest(), "big", signed=True)


def record_sightings(
    session: Session,
    seen: dict[Sighted, datetime],
    read: ScopesRead,
    acted: Callable[[set[Target]], set[Target]],
    revoked: set[Target],
    now: datetime,
) -> None:
    """Record a batch's sightings, in the caller's transaction: flag every sighting of
    the keys and accounts it revoked or suspended (`revoked`); insert new sightings
    (flagged if acted on now) and add them to their scopes' tallies; move `last_seen`
    of known ones forward; clear the flags of the scopes' sightings nothing is acted on
    any more. `seen` maps what the batch's decided verdicts showed to when: batch-sized,
    by primary key. `read` is what `read_sightings` read in the caller's batch, its
    subjects locked since (only the decide path writes sightings); `acted` tells which
    of some keys and accounts have an active revocation or suspension now, read in the
    caller's transaction (asked once the locks are held)."""
    fresh = [(k, at) for k, at in seen.items() if k not in read.known]
    stale = [
        (key, at)
        for key, at in seen.items()
        if key in read.known and at - read.known[key] > REFRESH
    ]
    if not (fresh or stale or revoked or read.acted):
        return
    connection = session.connection()
    _hold(connection, {(k[0], k[3], k[4]) for k, _ in fresh if k[3] != "network"} | revoked)
    _flag(connection, revoked, now)
    active = acted(read.to_check(seen))
    ended = [
        key
        for key, at in read.acted.items()
        if (key[0], key[3], key[4]) not in active and now - at > ACTED_GRACE
    ]
    if stale:
        _seen_again(connection, stale)
    if ended:
        _unflag(connection, ended, now - ACTED_GRACE)
    verified = _verified_among(connection, {k[2] for k, _ in fresh if k[1] == "account"})
    rows = [
        {
            "provider": k[0],
            "scope": k[1],
            "scope_id": k[2],
            "kind": k[3],
            "value": k[4],
            "first_seen": at,
            "last_seen": at,
            "verified": k[1] == "account" and k[2] in verified,
            "acted_at": now if (k[0], k[3], k[4]) in active else None,
        }
        for k, at in fresh
    ]
    for chunk in _chunks(rows, 1000):
        insert_many(connection, _sighting, chunk)
    _count(connection, read.tallies, [k for k, _ in fresh])


def _keyed(key: Sighted) -> dict[str, str]:
    return dict(zip(("k_provider", "k_scope", "k_scope_id", "k_kind", "k_value"), key, strict=True))


def _seen_again(connection: Connection, stale: Sequence[tuple[Sighted, datetime]]) -> None:
    """Move these sightings' `last_seen` forward (PostgreSQL: in one statement)."""
    if connection.dialect.name == "postgresql":
        params = _pk_arrays([key for key, _ in stale])
        params["seen"] = text_array([at.isoformat() for _, at in stale])
        connection.execute(_SEEN_AGAIN_PG, params)
    else:
        connection.execute(_SEEN_AGAIN, [{**_keyed(key), "k_last_seen": at} for key, at in stale])


def _unflag(connection: Connection, ended: Sequence[Sighted], before: datetime) -> None:
    """Clear the flags of these sightings set before `before` (PostgreSQL: in one
    statement)."""
    if connection.dialect.name == "postgresql":
        connection.execute(_UNFLAG_PG, {**_pk_arrays(ended), "before": before})
    else:
        connection.execute(_UNFLAG, [{**_keyed(key), "k_before": before} for key in ended])


def _pk_arrays(keys: Sequence[Sighted]) -> dict[str, Any]:
    """The parameters of `_PK_ROWS`: each part of the keys as one array."""
    return {
        name: text_array([key[i] for key in keys])
        for i, name in enumerate(("providers", "scopes", "ids", "kinds", "values"))
    }


def _count(connection: Connection, tallies: dict[Scope, Tally], fresh: Sequence[Sighted]) -> None:
    """Add new sightings (each new to its scope) to their scopes' tallies, read with them
    by `read_sightings`."""
    added: dict[Scope, tuple[list[int], list[str]]] = {}
    for provider, scope_name, scope_id, kind, value in fresh:
        entry = added.get((provider, scope_name, scope_id))
        if entry is None:
            entry = added[(provider, scope_name, scope_id)] = ([0, 0, 0], [])
        if kind == "network":
            entry[1].append(value)
        else:
            entry[0][0 if kind == "api_key" else 2] += 1
    again: list[dict[str, Any]] = []
    first: list[dict[str, Any]] = []
    for key, (counts, networks) in added.items():
        stored = tallies.get(key) or _EMPTY
        lowest = stored.first_networks
        if networks and (len(lowest) < FIRST_NETWORKS or min(networks) < lowest[-1]):
            lowest = sorted([*lowest, *networks])[:FIRST_NETWORKS]
        values = (
            stored.keys + counts[0],
            stored.networks + len(networks),
            stored.accounts + counts[2],
            lowest,
        )
        if key in tallies:
            again.append(dict(zip(_TALLY_PARAMS, (*key, *values), strict=True)))
        else:
            first.append(dict(zip(_TALLY_COLUMNS, (*key, *values), strict=True)))
    if again and connection.dialect.name == "postgresql":
        # One statement for them all (an UPDATE per scope was a round of the driver's
        # Python and a statement of the server's each).
        connection.execute(_TALLIES_AGAIN_PG, {"rows": json_text(again)})
    elif again:
        connection.execute(_TALLY_AGAIN, again)
    for chunk in _chunks(first, 1000):
        insert_many(connection, _tally, chunk)


_TALLIES_AGAIN_PG = text(
    "UPDATE sighting_tally AS t SET keys = w.k_keys, networks = w.k_networks, "
    "accounts = w.k_accounts, first_networks = w.k_first_networks "
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS w(k_provider text, k_scope text, "
    "k_scope_id text, k_keys integer, k_networks integer, k_accounts integer, "
    "k_first_networks jsonb) "
    "WHERE t.provider = w.k_provider AND t.scope = w.k_scope AND t.scope_id = w.k_scope_id"
)
_EMPTY = Tally()
_TALLY_COLUMNS = ("provider", "scope", "scope_id", "keys", "networks", "accounts", "first_networks")
_TALLY_PARAMS = tuple(f"k_{name}" for name in _TALLY_COLUMNS)


def _verified_among(connection: Connection, account_ids: set[str]) -> set[str]:
    """Which of these accounts have a verified customer record, read in the caller's
    transaction once it holds the customers' lock (shared: see `_VERIFIED_LOCK`)."""
    if not account_ids:
        return set()
    found: set[str] = set()
    for chunk in _chunks(sorted(account_ids)):
        found.update(r.account_id for r in _VERIFIED_AMONG.rows(connection, {"ids": list(chunk)}))
    return found
