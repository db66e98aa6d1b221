"""Intel rules: entering indicators, publishing them (share policy, STIX, signature),
retracting them, and lifting what rested on a retracted indicator.

Identifiers are hashed here, at the boundary: a raw account, key, org or payment id
never reaches a row, an audit event, the share policy or a published object. Every
method works in the session its caller holds (a request's, or a job's: `jobs.py`).
"""

from __future__ import annotations

import ipaddress
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.audit import service as audit
from controlplane.audit.chain import EventDraft
from controlplane.enforce import repository as enforce_repo
from controlplane.enforce.targets import PrefixFloor, TargetError, canonical_cidr
from controlplane.engine.bundle import PolicyBundle
from controlplane.errors import Conflict, Forbidden, InvalidInput, NotFound
from controlplane.intel import repository
from controlplane.intel.config import IntelConfig, Peer
from controlplane.intel.hashing import HASHED_KINDS, is_keyed_hash
from controlplane.intel.markings import pap_definition
from controlplane.intel.share import SharePolicy
from controlplane.intel.signing import sign
from controlplane.intel.stix.objects import (
    extension_definition,
    identity,
    indicator_object,
    opinion_object,
)
from controlplane.plan import repository as actions_repo
from controlplane.policy.bundles import export_bundle
from controlplane.store.models import IndicatorRow, new_id
from controlplane.store.types import utcnow

log = logging.getLogger(__name__)

ACTION_KINDS = {
    "cidr": "cidr",
    "ip": "cidr",
    "api_key": "api_key",
    "account": "account",
    "org": "org",
}
"""Action target kind -> the indicator kind that stands behind it."""
HARD_ACTIONS = ("block", "revoke_key")
PUBLISHER_CURSOR = "intel-publisher"
AGE_OUT_AFTER = timedelta(days=30)
"""How long an ended pulled indicator is kept (for the record) before it is deleted."""


@dataclass
class Lifted:
    action_id: str
    target: str


Lifter = Callable[[AsyncSession, str, str, str], Awaitable[Any]]
"""`Remedy.lift(session, action_id, actor, reason)`: lifts one action, logging the change."""


class IntelService:
    def __init__(
        self,
        config: IntelConfig,
        bundle: Callable[[], PolicyBundle],
        lift: Lifter,
        floor: Callable[[], PrefixFloor],
    ) -> None:
        self.config = config
        self._bundle = bundle
        self._lift = lift
        self.floor = floor
        self._share = SharePolicy()

    def close(self) -> None:
        self._share.close()

    def signed_bundle(self, packages: Sequence[str], peer: str | None) -> bytes:
        """The active revision's `packages` as a signed OPA bundle (`.tar.gz`). A peer
        gets only the packages `intel.bundle` shares, and only if it is a reader."""
        shared = self.config.bundle
        if self.config.signer is None:
            raise Conflict("this lab has no intel.signing_key_file: it cannot sign a bundle")
        if peer is not None:
            if peer not in shared.readers:
                raise Forbidden(f"token {peer!r} is not among intel.bundle.readers of this lab")
            outside = [p for p in packages if not any(_under(p, s) for s in shared.packages)]
            if outside:
                raise Forbidden(f"not shared with peers: {', '.join(outside)}")
            packages = packages or shared.packages
        return export_bundle(
            self._bundle(), packages, self.config.signer, self.config.lab
        ).archive()

    # -- entering indicators --------------------------------------------------------

    def normalise(self, i: int, item: dict[str, Any], now: datetime) -> dict[str, Any]:
        """An indicator row from API input: canonical value, identifiers hashed."""
        kind, value = item["kind"], str(item["value"])
        where = f"indicators[{i}].value"
        detail = None
        try:
            if kind == "cidr":
                value = canonical_cidr(value, self.floor())
            elif kind == "asn":
                number = int(value.strip().upper().removeprefix("AS"))
                if not 0 < number < 2**32:
                    raise ValueError
                value = str(number)
            elif kind in HASHED_KINDS:
                if is_keyed_hash(value):
                    if value.partition(":")[0] not in {k.key_id for k in self.config.keyring.keys}:
                        raise InvalidInput(
                            f"{where}: hashed under key {value.partition(':')[0]!r}, which "
                            "this lab does not hold",
                            details=[{"field": where, "message": "unknown consortium key id"}],
                        )
                else:
                    value = self.config.keyring.hash_for_publishing(kind, value, now)
            elif kind == "signature":
                if item.get("threshold") is None:
                    raise InvalidInput(
                        f"indicators[{i}].threshold: a detection signature needs a threshold",
                        details=[{"field": f"indicators[{i}].threshold", "message": "required"}],
                    )
                detail = {
                    "signal": value,
                    "op": item.get("op") or "gte",
                    "threshold": str(item["threshold"]),
                }
        except TargetError as exc:
            raise InvalidInput(
                f"{where}: {exc}; nothing was stored",
                details=[{"field": where, "message": str(exc)}],
            ) from None
        except ValueError:
            raise InvalidInput(
                f"{where}: {value!r} is not an AS number; nothing was stored",
                details=[{"field": where, "message": "not an AS number"}],
            ) from None
        return {
            "id": new_id("ind"),
            "kind": kind,
            "value": value,
            "source": item.get("source") or self.config.lab,
            "confidence": float(item["confidence"]),
            "tlp": item.get("tlp") or "green",
            "pap": item.get("pap") or "green",
            "expires_at": item.get("expires_at"),
            "first_seen": item.get("first_seen"),
            "last_seen": item.get("last_seen"),
            "decay_days": item.get("decay_days"),
            "detail": detail,
            "origin": "local",
            "stix_id": f"indicator--{uuid.uuid4()}",
            "modified": now,
            "revoked": False,
            "created_at": now,
        }

    async def add(
        self, session: AsyncSession, actor: str, items: Sequence[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], int]:
        """Store indicators entered here and publish what the share policy allows, in
        one transaction; returns the rows and how many objects were published."""
        now = utcnow()
        rows = [self.normalise(i, dict(item), now) for i, item in enumerate(items)]
        await repository.insert_indicators(session, rows)
        await audit.record(session, [_added_event(r, actor, now) for r in rows])
        published = await self.publish(session, rows, [None] * len(rows), now)
        return rows, published

    # -- publishing ----------------------------------------------------------------------

    async def publish(
        self,
        session: AsyncSession,
        rows: Sequence[dict[str, Any]],
        actions: Sequence[dict[str, Any] | None],
        now: datetime,
    ) -> int:
        """Ask the share policy about each row; sign and add what it allows to every
        collection carrying its TLP. Without a signing key nothing is published."""
        signer = self.config.signer
        if signer is None or not rows:
            return 0
        inputs = [
            {"indicator": _policy_view(row), "lab": self.config.lab}
            | ({"action": action} if action is not None else {})
            for row, action in zip(rows, actions, strict=True)
        ]
        decisions = await self._share.decide(self._bundle(), inputs)
        objects: list[dict[str, Any]] = []
        for row, decision in zip(rows, decisions, strict=True):
            if decision.publish:
                marked = {**row, "tlp": decision.tlp, "pap": decision.pap}
                objects.append(sign(indicator_object(marked, self.config.lab), signer))
        await self._append(session, objects, now)
        return len(objects)

    async def _append(
        self, session: AsyncSession, objects: list[dict[str, Any]], now: datetime
    ) -> None:
        signer = self.config.signer
        assert signer is not None
        for collection in self.config.collections:
            if collection.writers:
                continue  # an inbox: it holds what peers posted, not what this lab says
            chosen = [o for o in objects if _tlp_of(o) in collection.tlp]
            if not chosen:
                continue
            preamble = []
            if not await repository.collection_has(
                session, collection.id, identity_id_of(self.config.lab)
            ):
                preamble = [
                    sign(identity(self.config.lab), signer),
                    sign(extension_definition(self.config.lab), signer),
                    *(sign(pap_definition(p), signer) for p in ("clear", "green", "amber", "red")),
                ]
            await repository.append_objects(session, collection.id, [*preamble, *chosen], now)

    async def publish_from_actions(self, session: AsyncSession, limit: int = 2000) -> int:
        """Follow the change log: what stands behind each new hard action of this lab
        (a range, a hashed key id) goes to the share policy. Leader-only job."""
        if self.config.signer is None:
            return 0
        now = utcnow()
        cursor = (await enforce_repo.cursors(session)).get(PUBLISHER_CURSOR, 0)
        changes = await enforce_repo.changes_after(session, cursor, limit)
        if not changes:
            return 0
        wanted = [
            c.action_id
            for c in changes
            if c.cause == "planned" and c.type in HARD_ACTIONS and c.action_id
        ]
        # One query for the run's actions (not one per change), in the log's order.
        by_id = {a.id: a for a in await actions_repo.actions_by_id(session, wanted)}
        rows, actions = [], []
        for action_id in wanted:
            action = by_id.get(action_id)
            if action is None:
                continue
            item = self._from_action(action, now)
            if item is not None:
                rows.append(item)
                actions.append(
                    {"type": action.type, "rule": action.rule, "provider": action.provider}
                )
        await repository.insert_indicators(session, rows)
        published = await self.publish(session, rows, actions, now)
        await enforce_repo.save_cursor(session, PUBLISHER_CURSOR, changes[-1].seq, now)
        return published

    def _from_action(self, action: Any, now: datetime) -> dict[str, Any] | None:
        kind = ACTION_KINDS.get(action.target_kind)
        if kind is None:
            return None
        value = action.target_value
        if action.target_kind == "ip":
            value = str(ipaddress.ip_network(value))
        elif kind in HASHED_KINDS:
            if not self.config.keyring.in_force(now):
                return None
            value = self.config.keyring.hash_for_publishing(kind, value, now)
        return {
            "id": new_id("ind"),
            "kind": kind,
            "value": value,
            "source": self.config.lab,
            "confidence": 0.9,
            "tlp": "green",
            "pap": "green",
            "expires_at": action.expires_at,
            "first_seen": action.created_at,
            "last_seen": action.created_at,
            "decay_days": None,
            "detail": None,
            "origin": "local",
            "stix_id": f"indicator--{uuid.uuid4()}",
            "modified": now,
            "revoked": False,
            "created_at": now,
        }

    # -- retractions -----------------------------------------------------------------------

    async def mark_false_positive(
        self, session: AsyncSession, indicator_id: str, actor: str, reason: str
    ) -> dict[str, Any]:
        """An indicator caused a false positive (marked by hand, or an upheld appeal):
        revoke it here, tell peers (a signed revoked version if this lab made it, and a
        signed `opinion` strongly disagreeing either way), and lift the actions whose only
        basis it was. The appeals area calls this when an appeal is upheld."""
        now = utcnow()
        row = await repository.get_indicator(session, indicator_id)
        if row is None:
            raise NotFound(f"no indicator {indicator_id!r}; list them with `tollgate intel list`")
        if row.revoked:
            raise Conflict(f"indicator {indicator_id} was already retracted: {row.revoked_reason}")
        await repository.revoke_indicator(session, indicator_id, reason, now)
        await audit.record(
            session,
            [
                EventDraft(
                    type="indicator.retracted",
                    actor=actor,
                    at=now,
                    payload={
                        "id": row.id,
                        "kind": row.kind,
                        "value": row.value,
                        "source": row.source,
                        "reason": reason,
                    },
                )
            ],
        )
        published = 0
        if self.config.signer is not None and row.stix_id:
            objects = []
            if row.origin == "local":
                revoked = {
                    **row.model_dump(),
                    "revoked": True,
                    "modified": now,
                    "expires_at": now,
                }
                objects.append(sign(indicator_object(revoked, self.config.lab), self.config.signer))
            objects.append(
                sign(
                    opinion_object(row.stix_id, self.config.lab, reason, row.tlp, row.pap, now),
                    self.config.signer,
                )
            )
            await self._append(session, objects, now)
            published = len(objects)
        lifted = await self.lift_resting_on(
            session, [row], f"indicator {row.id} retracted by {actor}: {reason}", actor
        )
        return {"id": row.id, "published": published, "lifted": [x.action_id for x in lifted]}

    async def lift_resting_on(
        self, session: AsyncSession, rows: Sequence[IndicatorRow], why: str, actor: str
    ) -> list[Lifted]:
        """Lift active intel-based actions whose target one of `rows` named and that no
        other indicator in force still supports."""
        now = utcnow()
        lifted: list[Lifted] = []
        candidates = []
        for row in rows:
            for action in await actions_repo.intel_actions(session, _action_kinds(row.kind), now):
                if self._names(row, action.target_kind, action.target_value, now):
                    still = [
                        other
                        for other in await repository.active_indicators_for(
                            session, row.kind, row.value, now
                        )
                        if other.id != row.id
                    ]
                    if not still:
                        candidates.append(action)
        for action in candidates:
            if action in session:
                # The lift reads the action again under its row lock: let it see the
                # action as it is then, not this session's earlier copy of it.
                session.expunge(action)
            try:
                await self._lift(session, action.id, actor, why)
            except Conflict:
                continue
            lifted.append(Lifted(action.id, f"{action.target_kind}:{action.target_value}"))
        return lifted

    def _names(self, row: IndicatorRow, target_kind: str, target_value: str, now: datetime) -> bool:
        if row.kind == "cidr":
            if target_kind == "cidr":
                return target_value == row.value
            network = ipaddress.ip_network(row.value)
            return network.num_addresses == 1 and target_value == str(network.network_address)
        if row.kind in HASHED_KINDS:
            kind = "api_key" if target_kind == "api_key" else target_kind
            if kind != row.kind:
                return False
            return row.value in self.config.keyring.hashes_for_matching(kind, target_value, now)
        return False

    async def age_out(self, session: AsyncSession) -> int:
        """Forget pulled indicators that ended (expired or revoked) long ago."""
        return await repository.age_out(session, utcnow(), AGE_OUT_AFTER)

    def peer(self, name: str) -> Peer:
        peer = self.config.peer(name)
        if peer is None:
            names = ", ".join(p.name for p in self.config.peers) or "none"
            raise NotFound(f"no peer {name!r}; configured under intel.peers: {names}")
        return peer

    async def peers(self, session: AsyncSession) -> list[dict[str, Any]]:
        now = utcnow()
        states = await repository.peer_states(session)
        counts = await repository.count_by_origin(session, now)
        found = []
        for p in self.config.peers:
            state = states.get(p.name)
            live, held = counts.get(p.name, (0, 0))
            found.append(
                {
                    "name": p.name,
                    "url": p.url,
                    "collection": p.collection,
                    "key_id": p.key_id,
                    "trust": p.trust,
                    "accept_tlp": list(p.accept_tlp),
                    "accept_pap": list(p.accept_pap),
                    "healthy": state is not None
                    and state.last_error is None
                    and state.last_success_at is not None,
                    "last_pull_at": state.last_pull_at if state else None,
                    "last_success_at": state.last_success_at if state else None,
                    "last_error": state.last_error if state else None,
                    "accepted": state.accepted if state else 0,
                    "rejected": state.rejected if state else 0,
                    "duplicates": state.duplicates if state else 0,
                    "retractions": state.retractions if state else 0,
                    "lifted": state.lifted if state else 0,
                    "indicators_in_force": live,
                    "indicators_held": held,
                }
            )
        return found

    # -- reads ---------------------------------------------------------------------------

    async def list(
        self, session: AsyncSession, limit: int, kind: str | None = None, source: str | None = None
    ) -> list[IndicatorRow]:
        return await repository.list_indicators(session, limit, kind, source)


def identity_id_of(lab: str) -> str:
    from controlplane.intel.stix.objects import identity_id

    return identity_id(lab)


def _action_kinds(kind: str) -> tuple[str, ...]:
    return {
        "cidr": ("cidr", "ip"),
        "account": ("account",),
        "api_key": ("api_key",),
        "org": ("org",),
    }.get(kind, ())


def _under(package: str, root: str) -> bool:
    return package == root or package.startswith(root + ".")


def _tlp_of(obj: dict[str, Any]) -> str:
    from controlplane.intel.markings import markings_of

    tlp, _ = markings_of(list(obj.get("object_marking_refs") or []))
    return tlp or "amber"


def _policy_view(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("kind", "value", "source", "confidence", "tlp", "pap", "origin")}


def _added_event(row: dict[str, Any], actor: str, at: datetime) -> EventDraft:
    return EventDraft(
        type="indicator.added",
        actor=actor,
        at=at,
        payload={
            k: row[k]
            for k in ("id", "kind", "value", "source", "confidence", "tlp", "pap", "stix_id")
        },
    )
