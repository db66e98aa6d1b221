"""Customer and sighting SQL. Both tables are queried here only: evaluate asks for the
records and sightings of a batch's subjects, plan for the keys a suspension covers.
What the decide thread runs is sync (a `Session`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, bindparam, delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from controlplane.store.bulk import insert_many
from controlplane.store.models import CustomerRow, SightingRow
from controlplane.store.prepared import Prepared

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


_sighting: Table = SightingRow.__table__  # type: ignore[attr-defined]
# (provider, scope, id) and (provider, kind, value) sets are asked as cross products
# of IN lists, answered by the primary key and the (provider, kind, value) index; rows
# of combinations not asked for are dropped.
_SIGHTINGS_OF = Prepared(
    select(
        _sighting.c.provider,
        _sighting.c.scope,
        _sighting.c.scope_id,
        _sighting.c.kind,
        _sighting.c.value,
        _sighting.c.last_seen,
    ).where(
        _sighting.c.provider.in_(bindparam("providers", expanding=True)),
        _sighting.c.scope.in_(bindparam("scopes", expanding=True)),
        _sighting.c.scope_id.in_(bindparam("ids", expanding=True)),
    )
)
# Read through the partial index of verified sightings alone (its WHERE is `verified`,
# written the same way here so SQLite's planner matches it).
_VERIFIED_SEEING = Prepared(
    select(_sighting.c.provider, _sighting.c.value, _sighting.c.scope_id).where(
        _sighting.c.provider.in_(bindparam("providers", expanding=True)),
        _sighting.c.kind == bindparam("kind"),
        _sighting.c.value.in_(bindparam("values", expanding=True)),
        text("verified"),
    )
)
_VERIFIED_AMONG = Prepared(
    select(_customer.c.account_id).where(
        _customer.c.account_id.in_(bindparam("ids", expanding=True)), text("verified")
    )
)
_SEEN_AGAIN = (
    update(_sighting)
    .where(
        _sighting.c.provider == bindparam("k_provider"),
        _sighting.c.scope == bindparam("k_scope"),
        _sighting.c.scope_id == bindparam("k_scope_id"),
        _sighting.c.kind == bindparam("k_kind"),
        _sighting.c.value == bindparam("k_value"),
    )
    .values(last_seen=bindparam("k_last_seen"))
)


def sightings_of(
    session: Session, scopes: Iterable[Scope]
) -> dict[Scope, list[tuple[str, str, datetime]]]:
    """(kind, value, last_seen) of everything seen for these accounts and orgs."""
    found: dict[Scope, list[tuple[str, str, datetime]]] = {}
    connection = session.connection()
    for chunk in _chunks(sorted(set(scopes))):
        wanted = set(chunk)
        params = {
            "providers": sorted({p for p, _, _ in chunk}),
            "scopes": sorted({s for _, s, _ in chunk}),
            "ids": sorted({i for _, _, i in chunk}),
        }
        for provider, scope, scope_id, kind, value, last_seen in _SIGHTINGS_OF.rows(
            connection, params
        ):
            if (provider, scope, scope_id) in wanted:
                found.setdefault((provider, scope, scope_id), []).append((kind, value, last_seen))
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


def record_sightings(
    session: Session,
    seen: dict[tuple[str, str, str, str, str], datetime],
    known: dict[Scope, list[tuple[str, str, datetime]]],
) -> None:
    """Insert new sightings, move `last_seen` of known ones forward. `seen` maps
    (provider, scope, scope_id, kind, value) to when: batch-sized, by primary key.
    `known` is what `sightings_of` read of these scopes in the caller's batch, its
    subjects locked since (only the decide path writes sightings)."""
    if not seen:
        return
    stale: list[dict[str, Any]] = []
    old: set[tuple[str, str, str, str, str]] = set()
    for (provider, scope, scope_id), items in known.items():
        for kind, value, last_seen in items:
            key = (provider, scope, scope_id, kind, value)
            if key in seen:
                old.add(key)
                if seen[key] - last_seen > REFRESH:
                    stale.append(
                        {
                            "k_provider": provider,
                            "k_scope": scope,
                            "k_scope_id": scope_id,
                            "k_kind": kind,
                            "k_value": value,
                            "k_last_seen": seen[key],
                        }
                    )
    connection = session.connection()
    fresh = [(k, at) for k, at in seen.items() if k not in old]
    if connection.dialect.name == "postgresql" and (stale or fresh):
        # Before any sighting row is written: a customer write holding the lock may be
        # setting `verified` on these very rows (taken after them, the two would wait
        # for each other).
        connection.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": _VERIFIED_LOCK})
    if stale:
        connection.execute(_SEEN_AGAIN, stale)
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
        }
        for k, at in fresh
    ]
    for chunk in _chunks(rows, 1000):
        insert_many(connection, _sighting, chunk)


def _verified_among(connection: Connection, account_ids: set[str]) -> set[str]:
    """Which of these accounts have a verified customer record, read in the caller's
    transaction once it holds the customers' lock (shared: see `_VERIFIED_LOCK`)."""
    if not account_ids:
        return set()
    found: set[str] = set()
    for chunk in _chunks(sorted(account_ids)):
        found.update(r.account_id for r in _VERIFIED_AMONG.rows(connection, {"ids": list(chunk)}))
    return found
