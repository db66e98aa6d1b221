"""Taking peers' objects: verify every signature, refuse (with an audit event) what does
not verify or is not accepted, de-duplicate by STIX id and version, keep provenance,
act on retractions. For a pull (`jobs.Puller`, which pages a peer's collection) and for
objects a peer posts to an inbox collection (TAXII), in the session the caller holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.audit import service as audit
from controlplane.audit.chain import EventDraft
from controlplane.enforce.targets import TargetError, canonical_cidr
from controlplane.errors import TollgateError
from controlplane.intel import repository
from controlplane.intel.config import Peer
from controlplane.intel.hashing import HASHED_KINDS, is_keyed_hash
from controlplane.intel.service import IntelService
from controlplane.intel.signing import SignatureRefused, TrustedKey, verify
from controlplane.intel.stix.objects import Unusable, parse_indicator
from controlplane.store.models import IndicatorRow, new_id
from controlplane.store.types import utcnow

log = logging.getLogger(__name__)


@dataclass
class PullReport:
    peer: str
    pages: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    retractions: int = 0
    lifted: int = 0
    error: str | None = None
    reasons: list[str] = field(default_factory=list)
    outcomes: list[Outcome] | None = None
    """Per object (when asked for: objects posted to a collection get a TAXII status)."""

    def outcome(self, obj: Any, ok: bool, message: str) -> None:
        if self.outcomes is not None:
            self.outcomes.append(Outcome(obj, ok, message))


@dataclass(frozen=True)
class Outcome:
    obj: Any
    ok: bool
    message: str

    def detail(self) -> dict[str, str]:
        """A TAXII status detail: `id`, `version`, `message`."""
        obj = self.obj if isinstance(self.obj, dict) else {}
        version = obj.get("modified") or obj.get("created") or ""
        return {
            "id": str(obj.get("id") or "")[:100],
            "version": str(version)[:40],
            "message": self.message[:400],
        }


class Intake:
    """What a peer sends, taken into this lab's intel in the caller's session."""

    def __init__(self, service: IntelService) -> None:
        self._service = service

    @property
    def peers(self) -> list[Peer]:
        return list(self._service.config.peers)

    async def cursor(self, session: AsyncSession, peer: Peer) -> str | None:
        """Where the last pull of `peer` stopped (its last page's `Date-Added-Last`)."""
        state = await repository.peer_state(session, peer.name)
        return state.cursor if state else None

    async def take_page(
        self,
        session: AsyncSession,
        peer: Peer,
        objects: list[Any],
        report: PullReport,
        cursor: str | None,
    ) -> list[IndicatorRow]:
        """One pulled page, and the peer's cursor after it; returns the indicators it
        retracted."""
        retracted = await self._take(session, peer, objects, report)
        await repository.save_peer_state(session, peer.name, {"cursor": cursor})
        return retracted

    async def receive(
        self,
        session: AsyncSession,
        peer: Peer,
        objects: list[Any],
        store: Callable[[AsyncSession, list[Any]], Any],
    ) -> PullReport:
        """Objects a peer posted: taken as a pulled page is (verified, accepted or
        refused, de-duplicated, retractions obeyed), with each object's outcome; `store`
        keeps the verified ones."""
        report = PullReport(peer.name, pages=1, outcomes=[])
        retracted = await self._take(session, peer, objects, report)
        assert report.outcomes is not None
        await store(session, [o.obj for o in report.outcomes if o.ok])
        await self.settle(session, peer, report, retracted, f"posted by {peer.name}", {})
        return report

    async def settle(
        self,
        session: AsyncSession,
        peer: Peer,
        report: PullReport,
        retracted: list[IndicatorRow],
        how: str,
        state: dict[str, Any],
    ) -> None:
        """Lift what rested only on the indicators the peer retracted, and add the
        report's counts (and `state`) to the peer's record."""
        if retracted:
            lifted = await self._service.lift_resting_on(
                session, retracted, f"retracted by its source ({how})", f"intel:{peer.name}"
            )
            report.lifted = len(lifted)
        await repository.save_peer_state(
            session,
            peer.name,
            {
                **state,
                "+accepted": report.accepted,
                "+rejected": report.rejected,
                "+duplicates": report.duplicates,
                "+retractions": report.retractions,
                "+lifted": report.lifted,
            },
        )

    async def _take(
        self, session: AsyncSession, peer: Peer, objects: list[Any], report: PullReport
    ) -> list[IndicatorRow]:
        """Store one page; returns the indicators it retracted."""
        keys = self._service.config.trusted_keys()
        now = utcnow()
        refused: list[EventDraft] = []
        fresh: dict[str, tuple[dict[str, Any], TrustedKey]] = {}
        opinions: list[tuple[dict[str, Any], TrustedKey]] = []
        for obj in objects:
            if not isinstance(obj, dict):
                report.rejected += 1
                report.outcome(obj, False, "not a STIX object")
                continue
            try:
                key = verify(obj, keys)
            except SignatureRefused as exc:
                refused.append(_refusal(peer, obj, str(exc), now))
                report.rejected += 1
                report.outcome(obj, False, str(exc))
                continue
            kind = obj.get("type")
            if kind == "indicator":
                fresh[str(obj.get("id"))] = (obj, key)
            elif kind == "opinion":
                opinions.append((obj, key))
            else:
                report.outcome(obj, True, f"signed by {key.lab}")
        held = await repository.indicators_by_stix_id(session, list(fresh))
        new_rows: list[dict[str, Any]] = []
        retracted: list[IndicatorRow] = []
        for stix_id, (obj, key) in fresh.items():
            if key.lab == self._service.config.lab:
                report.duplicates += 1  # our own object, relayed back
                report.outcome(obj, True, "this lab's own object: nothing to take")
                continue
            try:
                fields = self._accept(peer, obj)
            except Unusable as exc:
                refused.append(_refusal(peer, obj, str(exc), now))
                report.rejected += 1
                report.outcome(obj, False, str(exc))
                continue
            fields["source"] = key.lab
            fields["origin"] = peer.name
            existing = held.get(stix_id)
            if existing is not None:
                if existing.modified is not None and existing.modified >= fields["modified"]:
                    report.duplicates += 1
                    report.outcome(obj, True, "already held (this version or a newer one)")
                    continue
                values = {k: v for k, v in fields.items() if k not in ("created_at", "stix_id")}
                if fields["revoked"] and not existing.revoked:
                    values["revoked_reason"] = f"revoked by {key.lab}"
                    values["expires_at"] = fields["modified"]
                    retracted.append(existing)
                    report.retractions += 1
                await repository.replace_indicator(session, existing.id, values)
                report.accepted += 1
                report.outcome(obj, True, "a newer version: taken")
                continue
            if fields["revoked"]:
                report.duplicates += 1  # revoked before we ever held it: nothing to do
                report.outcome(obj, True, "revoked, and never held here")
                continue
            new_rows.append({"id": new_id("ind"), **fields})
            report.accepted += 1
            report.outcome(obj, True, "taken")
        await repository.insert_indicators(session, new_rows)
        for obj, key in opinions:
            report.outcome(obj, True, f"an opinion of {key.lab}")
            if obj.get("opinion") not in ("strongly-disagree", "disagree"):
                continue
            refs = [
                str(r) for r in obj.get("object_refs") or [] if str(r).startswith("indicator--")
            ]
            for stix_id, row in (await repository.indicators_by_stix_id(session, refs)).items():
                # Only the lab that said it can retract it; other labs' opinions are
                # recorded, not obeyed.
                if row.source != key.lab or row.revoked:
                    continue
                reason = str(obj.get("explanation") or "false positive")[:400]
                await repository.revoke_indicator(session, row.id, f"{key.lab}: {reason}", now)
                retracted.append(row)
                report.retractions += 1
                refused.append(
                    EventDraft(
                        type="indicator.retracted",
                        actor=f"intel:{peer.name}",
                        at=now,
                        payload={
                            "id": row.id,
                            "stix_id": stix_id,
                            "source": key.lab,
                            "reason": reason,
                        },
                    )
                )
        if new_rows:
            refused.append(
                EventDraft(
                    type="intel.pulled",
                    actor=f"intel:{peer.name}",
                    at=now,
                    payload={"peer": peer.name, "indicators": len(new_rows)},
                )
            )
        await audit.record(session, refused)
        return retracted

    def _accept(self, peer: Peer, obj: dict[str, Any]) -> dict[str, Any]:
        fields = parse_indicator(obj)
        if fields["tlp"] not in peer.accept_tlp:
            raise Unusable(f"TLP:{fields['tlp'].upper()} is not accepted from {peer.name}")
        if fields["pap"] not in peer.accept_pap:
            raise Unusable(f"PAP:{fields['pap'].upper()} is not accepted from {peer.name}")
        kind, value = fields["kind"], fields["value"]
        if kind == "cidr":
            try:
                fields["value"] = canonical_cidr(value, self._service.floor())
            except TargetError as exc:
                raise Unusable(str(exc)) from None
        elif kind in HASHED_KINDS:
            known = {k.key_id for k in self._service.config.keyring.keys}
            if not is_keyed_hash(value):
                raise Unusable(f"a {kind} indicator must be a keyed hash, never a raw id")
            if value.partition(":")[0] not in known:
                raise Unusable(
                    f"hashed under consortium key {value.partition(':')[0]!r}, not held here"
                )
        elif kind == "asn" and not value.isdigit():
            raise Unusable(f"{value!r} is not an AS number")
        fields["confidence"] = round(fields["confidence"] * peer.trust, 4)
        return fields


class PullFailed(TollgateError):
    status_code = 502
    code = "peer_failed"


def _refusal(peer: Peer, obj: dict[str, Any], reason: str, at: Any) -> EventDraft:
    return EventDraft(
        type="intel.object_refused",
        actor=f"intel:{peer.name}",
        at=at,
        payload={
            "peer": peer.name,
            "stix_id": str(obj.get("id"))[:100],
            "type": str(obj.get("type"))[:40],
            "reason": reason[:400],
        },
    )
