"""Customer and sighting SQL. Both tables are queried here only: evaluate asks for the
records and sightings of a batch's subjects, plan for the keys a suspension covers.
What the decide thread runs is sync (a `Session`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, delete, insert, select, update
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
    """Write these records whole (a record sent again replaces the stored one)."""
    ids = [r["account_id"] for r in rows]
    for chunk in _chunks(ids):
        await session.execute(delete(CustomerRow).where(col(CustomerRow.account_id).in_(chunk)))
    for chunk in _chunks(list(rows), 1000):
        await session.execute(insert(CustomerRow.__table__), list(chunk))  # type: ignore[attr-defined]


async def delete_customer(session: AsyncSession, account_id: str) -> bool:
    result = await session.execute(
        delete(CustomerRow).where(col(CustomerRow.account_id) == account_id)
    )
    return bool(getattr(result, "rowcount", 0))


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
_SEEING = Prepared(
    select(_sighting.c.provider, _sighting.c.value, _sighting.c.scope, _sighting.c.scope_id).where(
        _sighting.c.provider.in_(bindparam("providers", expanding=True)),
        _sighting.c.kind == bindparam("kind"),
        _sighting.c.value.in_(bindparam("values", expanding=True)),
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


def scopes_seeing(
    session: Session, kind: str, values: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], set[tuple[str, str]]]:
    """(provider, value) -> the (scope, id) that were seen with it (e.g. the accounts
    using a network)."""
    found: dict[tuple[str, str], set[tuple[str, str]]] = {}
    connection = session.connection()
    for chunk in _chunks(sorted(set(values))):
        wanted = set(chunk)
        params = {
            "providers": sorted({p for p, _ in chunk}),
            "kind": kind,
            "values": sorted({v for _, v in chunk}),
        }
        for provider, value, scope, scope_id in _SEEING.rows(connection, params):
            if (provider, value) in wanted:
                found.setdefault((provider, value), set()).add((scope, scope_id))
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
    if stale:
        connection.execute(_SEEN_AGAIN, stale)
    fresh = [
        {
            "provider": k[0],
            "scope": k[1],
            "scope_id": k[2],
            "kind": k[3],
            "value": k[4],
            "first_seen": at,
            "last_seen": at,
        }
        for k, at in seen.items()
        if k not in old
    ]
    for chunk in _chunks(fresh, 1000):
        insert_many(connection, _sighting, chunk)
