"""Customer records: imported whole or refused whole, audited, deleted by hand.

Also what the pipeline reads of them: the records of a batch's accounts, and the keys
a suspension of an account or org covers (from the records and from verdicts seen).
The service works in the session its caller (the request) holds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from controlplane.audit import service as audit
from controlplane.audit.chain import EventDraft
from controlplane.customers import repository
from controlplane.customers.schemas import CustomerIn
from controlplane.errors import NotFound
from controlplane.store.models import CustomerRow
from controlplane.store.types import utcnow

AUDITED_IDS = 100
"""Account ids listed in one import's audit event (the count covers the rest)."""


def customer_document(row: Any) -> dict[str, Any]:
    """A record (a `CustomerRow` or a row of its columns) as policies see it in
    `input.context.customer` (keys counted, not listed)."""
    return {
        "account_id": row.account_id,
        "org_id": row.org_id,
        "tier": row.tier,
        "verified": row.verified,
        "keys": len(row.keys),
        "contract": row.contract,
        "owner": row.owner,
    }


@dataclass(frozen=True)
class Imported:
    created: int
    updated: int


class CustomerService:
    async def import_(
        self, session: AsyncSession, customers: Sequence[CustomerIn], actor: str
    ) -> Imported:
        """Store every record (a known account's record is replaced), in one transaction."""
        now = utcnow()
        before = await repository.existing(session, [c.account_id for c in customers])
        rows = [
            {
                **c.model_dump(),
                "keys": sorted(set(c.keys)),
                "created_at": before.get(c.account_id, now),
                "updated_at": now,
            }
            for c in customers
        ]
        await repository.replace_customers(session, rows)
        await audit.record(
            session,
            [
                EventDraft(
                    type="customers.imported",
                    actor=actor,
                    at=now,
                    payload={
                        "count": len(rows),
                        "created": len(rows) - len(before),
                        "verified": sum(1 for c in customers if c.verified),
                        "accounts": [c.account_id for c in customers[:AUDITED_IDS]],
                    },
                )
            ],
        )
        return Imported(created=len(rows) - len(before), updated=len(before))

    async def delete(self, session: AsyncSession, account_id: str, actor: str) -> None:
        now = utcnow()
        if not await repository.delete_customer(session, account_id):
            raise NotFound(f"no customer record for account {account_id!r}")
        await audit.record(
            session,
            [
                EventDraft(
                    type="customers.deleted",
                    actor=actor,
                    at=now,
                    payload={"account_id": account_id},
                )
            ],
        )

    async def get(self, session: AsyncSession, account_id: str) -> CustomerRow:
        row = await repository.get_customer(session, account_id)
        if row is None:
            raise NotFound(f"no customer record for account {account_id!r}")
        return row

    async def page(
        self, session: AsyncSession, after: str | None, limit: int
    ) -> tuple[list[CustomerRow], str | None]:
        rows = await repository.list_customers(session, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].account_id if more and rows else None)


def keys_covered(
    session: Session, scopes: Iterable[tuple[str, str, str]]
) -> dict[tuple[str, str, str], set[str]]:
    """(provider, `account`|`org`, id) -> every key Tollgate knows for it: the customer
    records' keys (an org's: of its accounts) and the keys seen in verdicts about it.
    One set of lookups for every provider."""
    wanted = sorted(set(scopes))
    found: dict[tuple[str, str, str], set[str]] = {s: set() for s in wanted}
    for scope, keys in repository.keys_seen_by(session, wanted).items():
        found[scope].update(keys)
    records: dict[tuple[str, str], set[str]] = {}
    accounts = {v for _, k, v in wanted if k == "account"}
    for account_id, row in repository.customers_of(session, accounts).items():
        records.setdefault(("account", account_id), set()).update(row.keys)
    orgs = {v for _, k, v in wanted if k == "org"}
    for org_id, rows in repository.customers_of_orgs(session, orgs).items():
        for row in rows:
            records.setdefault(("org", org_id), set()).update(row.keys)
    for provider, kind, value in wanted:
        found[(provider, kind, value)].update(records.get((kind, value), ()))
    return found
