"""Action SQL: the one module that queries the `action` table. The other areas ask it
(enforcement through the `enforce.actions.Actions` interface it is handed, since a
later stage never imports an earlier one)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from controlplane.domain.vocabulary import ACTIVE_STATES, ActionState, SubjectKind
from controlplane.store.bulk import insert_many
from controlplane.store.models import ActionRow
from controlplane.store.prepared import Prepared
from controlplane.store.repository import keyed

ACTIVE = [s.value for s in ACTIVE_STATES]
_CHUNK = 500


def insert_actions(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        insert_many(session.connection(), ActionRow.__table__, rows)  # type: ignore[attr-defined]


async def actions_of_decisions(
    session: AsyncSession, decision_ids: Sequence[str]
) -> dict[str, list[ActionRow]]:
    found: dict[str, list[ActionRow]] = {d: [] for d in decision_ids}
    for i in range(0, len(decision_ids), 500):
        chunk = decision_ids[i : i + 500]
        rows = await session.execute(
            select(ActionRow)
            .where(col(ActionRow.decision_id).in_(chunk))
            .order_by(col(ActionRow.id))
        )
        for (row,) in rows:
            found[row.decision_id].append(row)
    return found


@dataclass(frozen=True)
class ActionFilter:
    state: str | None = None
    type: str | None = None
    target_kind: str | None = None
    target_value: str | None = None
    provider: str | None = None
    shadow: bool | None = None


async def list_actions(
    session: AsyncSession, where: ActionFilter, after: str | None, limit: int
) -> list[ActionRow]:
    """Actions newest first; `after` is the id of the last one of the previous page."""
    query = select(ActionRow)
    for column, value in (
        (col(ActionRow.state), where.state),
        (col(ActionRow.type), where.type),
        (col(ActionRow.target_kind), where.target_kind),
        (col(ActionRow.target_value), where.target_value),
        (col(ActionRow.provider), where.provider),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.shadow is not None:
        query = query.where(col(ActionRow.shadow) == where.shadow)
    if after:
        query = query.where(col(ActionRow.id) < after)
    query = query.order_by(col(ActionRow.id).desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def get_action(session: AsyncSession, action_id: str) -> ActionRow | None:
    return await session.get(ActionRow, action_id)


def _active() -> Any:
    return col(ActionRow.state).in_(ACTIVE) & ~col(ActionRow.shadow)


async def active_on_target(
    session: AsyncSession, provider: str, kind: str, value: str, *, for_update: bool = False
) -> list[ActionRow]:
    """Active, non-shadow actions of one provider aimed at exactly this target."""
    query = select(ActionRow).where(
        col(ActionRow.provider) == provider,
        col(ActionRow.target_kind) == kind,
        col(ActionRow.target_value) == value,
        _active(),
    )
    if for_update:
        query = query.with_for_update()
    return list((await session.execute(query)).scalars())


async def active_of_decisions(
    session: AsyncSession, decision_ids: Select[Any], *, for_update: bool = False
) -> list[ActionRow]:
    """Active, non-shadow actions planned by the decisions `decision_ids` selects (a
    subquery the decisions' owner builds: one statement, each step by index)."""
    query = select(ActionRow).where(col(ActionRow.decision_id).in_(decision_ids), _active())
    if for_update:
        query = query.with_for_update(of=ActionRow)
    return list((await session.execute(query)).scalars())


async def active_network_blocks(
    session: AsyncSession, provider: str, *, for_update: bool = False
) -> list[ActionRow]:
    """Active IP and CIDR actions of a provider (an exemption of a range is matched
    against them: exemptions are rare, deliberate changes, not the hot path)."""
    query = select(ActionRow).where(
        col(ActionRow.provider) == provider,
        col(ActionRow.target_kind).in_(["ip", "cidr"]),
        _active(),
    )
    if for_update:
        query = query.with_for_update()
    return list((await session.execute(query)).scalars())


async def actions_by_reference(
    session: AsyncSession, reference: str, provider: str | None = None
) -> list[ActionRow]:
    """Actions whose gateway entry a refusal quotes as `reference`, newest first."""
    query = select(ActionRow).where(col(ActionRow.reference) == reference)
    if provider is not None:
        query = query.where(col(ActionRow.provider) == provider)
    query = query.order_by(col(ActionRow.id).desc()).limit(500)
    return list((await session.execute(query)).scalars())


async def actions_by_id(session: AsyncSession, ids: Sequence[str]) -> list[ActionRow]:
    return await session.run_sync(actions_by_id_blocking, ids)


def actions_by_id_blocking(session: Session, ids: Sequence[str]) -> list[ActionRow]:
    found: list[ActionRow] = []
    for i in range(0, len(ids), _CHUNK):
        rows = session.execute(select(ActionRow).where(col(ActionRow.id).in_(ids[i : i + _CHUNK])))
        found.extend(rows.scalars())
    return found


# -- the desired state (what gateways must hold) --------------------------------------

_DESIRED_COLUMNS = (
    col(ActionRow.id),
    col(ActionRow.provider),
    col(ActionRow.type),
    col(ActionRow.target_kind),
    col(ActionRow.target_value),
    col(ActionRow.params),
    col(ActionRow.created_at),
)
DECISION_COLUMNS = (*_DESIRED_COLUMNS, col(ActionRow.expires_at), col(ActionRow.rule))
"""The desired columns plus what a CrowdSec decision shows (its end, its rule)."""


def _desired(
    providers: Sequence[str] | None,
    types: Sequence[str],
    now: datetime,
    kinds: Sequence[str] | None = None,
    columns: Sequence[Any] = _DESIRED_COLUMNS,
) -> Any:
    """Active, non-shadow, unexpired actions of these types (and target kinds, when
    given) of these providers (all when None): what a connector's scope admits."""
    query = select(*columns).where(
        col(ActionRow.state).in_(ACTIVE),
        ~col(ActionRow.shadow),
        col(ActionRow.type).in_(list(types)),
        _unexpired(now),
    )
    if providers is not None:
        query = query.where(col(ActionRow.provider).in_(list(providers)))
    if kinds is not None:
        query = query.where(col(ActionRow.target_kind).in_(list(kinds)))
    return query


def _unexpired(now: datetime) -> Any:
    return or_(col(ActionRow.expires_at).is_(None), col(ActionRow.expires_at) > now)


async def desired_for_targets(
    session: AsyncSession,
    providers: Sequence[str] | None,
    types: Sequence[str],
    targets: Sequence[tuple[str, str]],
    now: datetime,
    kinds: Sequence[str] | None = None,
    columns: Sequence[Any] = _DESIRED_COLUMNS,
) -> list[Any]:
    """Active, non-shadow, unexpired actions of these types on these (kind, value)
    targets: an indexed lookup, whatever else is active."""
    by_kind: dict[str, list[str]] = {}
    for kind, value in sorted(set(targets)):
        by_kind.setdefault(kind, []).append(value)
    found: list[Any] = []
    for kind, values in by_kind.items():
        for i in range(0, len(values), _CHUNK):
            query = _desired(providers, types, now, kinds, columns).where(
                col(ActionRow.target_kind) == kind,
                col(ActionRow.target_value).in_(values[i : i + _CHUNK]),
            )
            found.extend((await session.execute(query)).all())
    return found


async def desired_page(
    session: AsyncSession,
    providers: Sequence[str] | None,
    types: Sequence[str],
    after: tuple[str, str] | None,
    limit: int,
    now: datetime,
    kinds: Sequence[str] | None = None,
    columns: Sequence[Any] = _DESIRED_COLUMNS,
) -> tuple[list[Any], tuple[str, str] | None]:
    """One page of the desired state in (target kind, value) order, every action of a
    target in the same page; and where the next page starts (None: this was the last).
    One target kind at a time, by keyset on `ix_action_target` (equality on the kind,
    a range on the value), so a page costs its own rows whatever the table holds."""
    order = [k.value for k in SubjectKind if kinds is None or k.value in kinds]
    if not order:
        return [], None
    kind, value = after if after is not None else (order[0], "")
    for current in order[order.index(kind) :]:
        start = value if current == kind else ""
        query = (
            _desired(providers, types, now, kinds, columns)
            .where(col(ActionRow.target_kind) == current, col(ActionRow.target_value) > start)
            .order_by(col(ActionRow.target_value))
            .limit(limit)
        )
        rows = list((await session.execute(query)).all())
        if not rows:
            continue
        if len(rows) < limit:
            following = order.index(current) + 1
            return rows, (order[following], "") if following < len(order) else None
        last = (current, rows[-1].target_value)
        # The page may end inside one target's actions: take that target's others too.
        rest = await desired_for_targets(session, providers, types, [last], now, kinds, columns)
        seen = {r.id for r in rows}
        rows.extend(r for r in rest if r.id not in seen)
        return rows, last
    return [], None


def action_states(
    session: Session, action_ids: Sequence[str]
) -> list[tuple[str, str, str, str, str]]:
    """(id, state, provider, type, target kind) of these actions, locked until the
    caller's transaction ends (on PostgreSQL; SQLite's writers take turns anyway), in id
    order: a lift or an expiry that commits meanwhile is seen, never overwritten."""
    found: list[tuple[str, str, str, str, str]] = []
    ids = sorted(set(action_ids))
    for i in range(0, len(ids), _CHUNK):
        rows = session.execute(
            select(
                col(ActionRow.id),
                col(ActionRow.state),
                col(ActionRow.provider),
                col(ActionRow.type),
                col(ActionRow.target_kind),
            )
            .where(col(ActionRow.id).in_(ids[i : i + _CHUNK]))
            .order_by(col(ActionRow.id))
            .with_for_update()
        )
        found.extend((a, s, p, t, k) for a, s, p, t, k in rows)
    return found


def active_among(session: Session, action_ids: Sequence[str]) -> set[str]:
    """Those of these actions still active (pending, applied or failed)."""
    found: set[str] = set()
    ids = list(dict.fromkeys(action_ids))
    for i in range(0, len(ids), _CHUNK):
        rows = session.execute(
            select(col(ActionRow.id)).where(
                col(ActionRow.id).in_(ids[i : i + _CHUNK]), col(ActionRow.state).in_(ACTIVE)
            )
        )
        found.update(rows.scalars())
    return found


async def set_action_states(session: AsyncSession, changes: dict[str, str], now: datetime) -> None:
    await session.run_sync(set_action_states_blocking, changes, now)


def set_action_states_blocking(session: Session, changes: dict[str, str], now: datetime) -> None:
    by_state: dict[str, list[str]] = {}
    for action_id, state in changes.items():
        by_state.setdefault(state, []).append(action_id)
    for state, ids in by_state.items():
        for i in range(0, len(ids), _CHUNK):
            session.execute(
                update(ActionRow)
                .where(col(ActionRow.id).in_(ids[i : i + _CHUNK]))
                .values(state=state, updated_at=now)
            )


async def due_to_expire(session: AsyncSession, now: datetime, limit: int) -> list[ActionRow]:
    """Up to `limit` active actions past their expiry, claimed for the caller's
    transaction. On PostgreSQL `FOR UPDATE SKIP LOCKED`: rows another replica is expiring
    (or lifting) right now are skipped, not waited for, and one it has just expired no
    longer matches, so replicas expiring at once never take the same action twice. SQLite
    ignores the clause: its writers take turns (BEGIN IMMEDIATE)."""
    query = (
        select(ActionRow)
        .where(
            col(ActionRow.state).in_(ACTIVE),
            col(ActionRow.expires_at).is_not(None),
            col(ActionRow.expires_at) <= now,
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(query)).scalars())


async def lift(
    session: AsyncSession, action_id: str, now: datetime
) -> tuple[ActionRow | None, bool]:
    """Mark an active action lifted: (the action or None, whether it was lifted now)."""
    row = await session.get(ActionRow, action_id, with_for_update=True)
    if row is None or row.state not in ACTIVE:
        return row, False
    row.state = ActionState.LIFTED.value
    row.updated_at = now
    return row, True


async def lift_children(session: AsyncSession, parent_id: str, now: datetime) -> list[ActionRow]:
    """Mark lifted the active actions planned because of `parent_id` (the keys revoked
    with a suspension); returns them."""
    rows = list(
        (
            await session.execute(
                select(ActionRow).where(
                    col(ActionRow.parent_id) == parent_id, col(ActionRow.state).in_(ACTIVE)
                )
            )
        ).scalars()
    )
    for row in rows:
        row.state = ActionState.LIFTED.value
        row.updated_at = now
    return rows


async def intel_actions(
    session: AsyncSession, target_kinds: Sequence[str], now: datetime
) -> list[ActionRow]:
    """Active, unexpired actions of these target kinds that a shared-intel rule
    (`intel.*`) asked for: what a retracted indicator may have been the basis of."""
    if not target_kinds:
        return []
    query = select(ActionRow).where(
        col(ActionRow.state).in_(ACTIVE),
        col(ActionRow.target_kind).in_(list(target_kinds)),
        col(ActionRow.rule).startswith("intel."),
        _unexpired(now),
    )
    return list((await session.execute(query)).scalars())


# -- a verdict's history (evaluate builds `history.active_actions` from these) -----------

_HISTORY_COLUMNS = (
    col(ActionRow.id),
    col(ActionRow.provider),
    col(ActionRow.type),
    col(ActionRow.target_kind),
    col(ActionRow.target_value),
    col(ActionRow.params),
    col(ActionRow.rule),
    col(ActionRow.state),
    col(ActionRow.created_at),
    col(ActionRow.expires_at),
)


_action: Table = ActionRow.__table__  # type: ignore[attr-defined]
_ACTIVE_NOW = and_(
    _action.c.state.in_([s.value for s in ACTIVE_STATES]),
    ~_action.c.shadow,
    or_(_action.c.expires_at.is_(None), _action.c.expires_at > bindparam("now")),
)
_ACTIVE_ON_KEYS = Prepared(
    select(
        _action.c.id,
        _action.c.provider,
        _action.c.type,
        _action.c.target_kind,
        _action.c.target_value,
        _action.c.params,
        _action.c.rule,
        _action.c.state,
        _action.c.created_at,
        _action.c.expires_at,
    ).where(
        _action.c.provider.in_(bindparam("providers", expanding=True)),
        _action.c.target_kind.in_(bindparam("kinds", expanding=True)),
        _action.c.target_value.in_(bindparam("values", expanding=True)),
        _ACTIVE_NOW,
    )
)
_ACTIVE_TYPES_ON_KEYS = Prepared(
    select(_action.c.provider, _action.c.type, _action.c.target_kind, _action.c.target_value).where(
        _action.c.provider.in_(bindparam("providers", expanding=True)),
        _action.c.target_kind.in_(bindparam("kinds", expanding=True)),
        _action.c.target_value.in_(bindparam("values", expanding=True)),
        _ACTIVE_NOW,
    )
)
_ACTIVE_CIDRS = select(_action.c.provider, _action.c.target_value).where(
    _action.c.target_kind == "cidr", _ACTIVE_NOW
)


def active_on_keys(
    session: Session, keys: Sequence[tuple[str, str, str]], now: datetime
) -> list[Any]:
    """(decide thread) Active, non-shadow, unexpired actions on these (provider, kind,
    value) targets, as row mappings: one statement built once, by index."""
    wanted = set(keys)
    rows = _ACTIVE_ON_KEYS.rows(session.connection(), {**keyed(keys), "now": now})
    return [
        row._asdict() for row in rows if (row.provider, row.target_kind, row.target_value) in wanted
    ]


def active_types_on_keys(
    session: Session, keys: Sequence[tuple[str, str, str]], now: datetime
) -> set[tuple[str, str, str, str]]:
    """(provider, type, kind, value) of the active, non-shadow, unexpired actions on
    these (provider, kind, value) targets, in the caller's transaction."""
    wanted = set(keys)
    return {
        (r.provider, r.type, r.target_kind, r.target_value)
        for r in _ACTIVE_TYPES_ON_KEYS.rows(session.connection(), {**keyed(keys), "now": now})
        if (r.provider, r.target_kind, r.target_value) in wanted
    }


def active_cidr_targets(session: Session, now: datetime) -> list[tuple[str, str]]:
    """(decide thread) (provider, network) of every active, non-shadow, unexpired CIDR
    action."""
    return [(p, v) for p, v in session.connection().execute(_ACTIVE_CIDRS, {"now": now})]


# -- what the audit trail, the console and the figures ask ------------------------------


def ids_where(action_type: str | None, rule: str | None) -> Select[Any]:
    """A subquery of the ids of actions of this type and rule (either may be None)."""
    query = select(col(ActionRow.id))
    if action_type is not None:
        query = query.where(col(ActionRow.type) == action_type)
    if rule is not None:
        query = query.where(col(ActionRow.rule) == rule)
    return query


def action_targets_blocking(
    session: Session, action_ids: Sequence[str]
) -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for i in range(0, len(action_ids), _CHUNK):
        query = select(
            col(ActionRow.id), col(ActionRow.target_kind), col(ActionRow.target_value)
        ).where(col(ActionRow.id).in_(action_ids[i : i + _CHUNK]))
        for action_id, kind, value in session.execute(query).all():
            found[action_id] = (kind, value)
    return found


async def action_counts(session: AsyncSession) -> list[tuple[str, str, int]]:
    """(type, state, count) of all actions (ix_action_type_state covers it)."""
    query = select(col(ActionRow.type), col(ActionRow.state), func.count()).group_by(
        col(ActionRow.type), col(ActionRow.state)
    )
    return [(t, s, int(n)) for t, s, n in (await session.execute(query)).all()]


async def target_values(session: AsyncSession, kind: str) -> list[str]:
    """Every value actions have targeted of this kind."""
    query = select(col(ActionRow.target_value)).where(col(ActionRow.target_kind) == kind)
    return [str(v) for v in (await session.execute(query.distinct())).scalars()]


async def actions_taken(
    session: AsyncSession,
    since: datetime,
    until: datetime,
    detector_of: Callable[[Any], Any],
) -> list[tuple[str, str, int]]:
    """(rule, detector, actions) of the non-shadow actions planned in [since, until);
    `detector_of` is the verdicts' owner's subquery of a verdict id's detector."""
    taken = (
        select(
            col(ActionRow.rule).label("rule"),
            detector_of(col(ActionRow.verdict_id)).label("detector"),
        )
        .where(
            col(ActionRow.created_at) >= since,
            col(ActionRow.created_at) < until,
            ~col(ActionRow.shadow),
        )
        .subquery()
    )
    rows = await session.execute(
        select(taken.c.rule, taken.c.detector, func.count()).group_by(
            taken.c.rule, taken.c.detector
        )
    )
    return [(rule, name, int(n)) for rule, name, n in rows]
