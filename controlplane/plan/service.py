"""The plan step: a checked decision becomes action rows (the desired state), each
recorded with its `action.planned` event and its change in the enforcement log;
suspensions bring the revocation of every key their account or org is known to
use; withheld hard actions become reviews."""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from opentelemetry import trace
from sqlalchemy.orm import Session

from controlplane.audit.chain import EventDraft
from controlplane.customers import repository as customers_repo
from controlplane.customers.service import keys_covered
from controlplane.domain.action import ActionSpec, DecisionResult
from controlplane.domain.vocabulary import ACTED_ON, ActionState, ActionType, SubjectKind
from controlplane.enforce.sdk import EntryType, reference_of
from controlplane.enforce.service import record_changes_blocking
from controlplane.plan import repository
from controlplane.remedy import reviews_repository as reviews_repo
from controlplane.store.models import new_id
from controlplane.telemetry.tracing import SPAN_PLAN, pipeline_span

PIPELINE_ACTOR = "tollgate"

SUSPENSION_RULE = "tollgate.suspension"
"""The rule named on a key revoked because its account or org is suspended."""
FALLBACK_RULE = "tollgate.fallback"
"""The rule named on what a provider's fallback plans when a decision errors."""
REASON_LIMIT = 500
"""Characters of the error quoted in a fallback's reason (the decision keeps all of it)."""


def plan_actions(
    result: DecisionResult,
    *,
    decision_id: str,
    verdict_id: str,
    provider: str,
    policy_revision: str,
    trace_id: str | None,
    now: datetime,
    shadow_rules: Container[str] = (),
) -> list[dict[str, Any]]:
    """Action rows (state `pending`) for every action the decision asked for; an action
    of a shadow decision or of a shadow-mode rule is recorded with `shadow` set."""
    rows = []
    for spec in result.actions:
        rows.append(
            {
                "id": new_id("act"),
                "decision_id": decision_id,
                "verdict_id": verdict_id,
                "provider": provider,
                "type": spec.type.value,
                "target_kind": spec.target_kind.value,
                "target_value": spec.target_value,
                "params": spec.params,
                "ttl_seconds": spec.ttl.total_seconds() if spec.ttl else None,
                "expires_at": now + spec.ttl if spec.ttl else None,
                "rule": spec.rule,
                "reason": spec.reason,
                "state": ActionState.PENDING.value,
                "shadow": result.shadow or spec.rule in shadow_rules,
                "policy_revision": policy_revision,
                "trace_id": trace_id,
                "created_at": now,
                "updated_at": now,
                "reference": _reference(spec.type.value, spec),
                "parent_id": None,
            }
        )
    return rows


def _child(parent: dict[str, Any], key: str, reason: str, now: datetime) -> dict[str, Any]:
    """A key revocation that lives and ends with its suspension."""
    expires = parent["expires_at"]
    return {
        **parent,
        "id": new_id("act"),
        "type": ActionType.REVOKE_KEY.value,
        "target_kind": SubjectKind.API_KEY.value,
        "target_value": key,
        "params": {},
        "ttl_seconds": (expires - now).total_seconds() if expires else None,
        "rule": SUSPENSION_RULE,
        "reason": reason,
        "reference": reference_of(ActionType.REVOKE_KEY.value, SubjectKind.API_KEY.value, key),
        "created_at": now,
        "updated_at": now,
        "parent_id": parent["id"],
    }


def expand_suspensions(
    session: Session,
    rows: Sequence[dict[str, Any]],
    now: datetime,
    also_seen: dict[tuple[str, str], set[str]] | None = None,
) -> list[dict[str, Any]]:
    """For each suspension among `rows`: a revocation of every key Tollgate knows for the
    account or org (customer records, keys seen in verdicts, `also_seen`: keys named by
    verdicts not stored yet), so a gateway that sees only keys refuses the operation too.
    Keys another row of `rows` already revokes are skipped."""
    return suspension_children(rows, now, covered_keys(session, [rows]), also_seen)


def covered_keys(
    session: Session, rows: Iterable[Sequence[dict[str, Any]]]
) -> dict[str, dict[tuple[str, str], set[str]]]:
    """Provider -> (`account`|`org`, id) -> the keys Tollgate knows for each account and
    org these action rows suspend: one set of lookups however many rows suspend."""
    scopes = {
        (r["provider"], r["target_kind"], r["target_value"])
        for part in rows
        for r in part
        if r["type"] == ActionType.SUSPEND.value
    }
    covered: dict[str, dict[tuple[str, str], set[str]]] = {}
    if scopes:
        for (provider, kind, value), keys in keys_covered(session, scopes).items():
            covered.setdefault(provider, {})[(kind, value)] = keys
    return covered


def suspension_children(
    rows: Sequence[dict[str, Any]],
    now: datetime,
    covered: dict[str, dict[tuple[str, str], set[str]]],
    also_seen: dict[tuple[str, str], set[str]] | None = None,
) -> list[dict[str, Any]]:
    """`expand_suspensions` with the keys of the suspended accounts and orgs given
    (`covered_keys`)."""
    revoked = {
        (r["provider"], r["target_value"]) for r in rows if r["type"] == ActionType.REVOKE_KEY.value
    }
    children: list[dict[str, Any]] = []
    for row in rows:
        if row["type"] != ActionType.SUSPEND.value:
            continue
        provider = row["provider"]
        scope = (row["target_kind"], row["target_value"])
        known = covered.get(provider, {}).get(scope, set())
        for key in sorted(known | (also_seen or {}).get(scope, set())):
            if (provider, key) in revoked:
                continue
            revoked.add((provider, key))
            children.append(
                _child(
                    row,
                    key,
                    f"{row['target_kind']} {row['target_value']} suspended "
                    f"({row['rule']}): every key it is known to use is revoked with it",
                    now,
                )
            )
    return children


def followup_revocations(
    targets: Iterable[tuple[str, str]],
    active: Iterable[dict[str, Any]],
    planned: Sequence[dict[str, Any]],
    now: datetime,
    **context: Any,
) -> list[dict[str, Any]]:
    """A verdict naming a key of a suspended account or org: that key is revoked too (an
    operation's new keys are refused as they appear). `active` are the actions in force
    on the verdict's subjects, as its input lists them; `planned` what its decision
    planned; `context` the decision's fields (decision_id, verdict_id, provider,
    policy_revision, trace_id)."""
    named = dict(targets)
    key = named.get(SubjectKind.API_KEY.value)
    if not key:
        return []
    actions = list(active)
    already = any(
        a["type"] == ActionType.REVOKE_KEY.value and a["target"]["value"] == key for a in actions
    ) or any(
        r["type"] == ActionType.REVOKE_KEY.value and r["target_value"] == key and not r["shadow"]
        for r in planned
    )
    if already:
        return []
    for action in actions:
        kind, value = action["target"]["kind"], action["target"]["value"]
        if action["type"] != ActionType.SUSPEND.value or named.get(kind) != value:
            continue
        expires = datetime.fromisoformat(action["expires_at"]) if action["expires_at"] else None
        if expires is not None and expires <= now:
            continue
        parent = {
            **context,
            "params": {},
            "state": ActionState.PENDING.value,
            "id": action["id"],
            "expires_at": expires,
            "rule": action["rule"],
            "shadow": False,
        }
        child = _child(
            parent,
            key,
            f"a new key of {kind} {value}, which is suspended ({action['rule']}): revoked "
            "as it appeared",
            now,
        )
        return [child]
    return []


def review_rows(rows: Sequence[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """A review for each live `flag_review` that carries withheld actions."""
    return [
        {
            "id": new_id("rev"),
            "provider": r["provider"],
            "verdict_id": r["verdict_id"],
            "decision_id": r["decision_id"],
            "action_id": r["id"],
            "subject_kind": r["target_kind"],
            "subject_value": r["target_value"],
            "rule": r["rule"],
            "reason": r["reason"],
            "withheld": list(r["params"]["withheld"]),
            "policy_revision": r["policy_revision"],
            "trace_id": r["trace_id"],
            "state": "open",
            "created_at": now,
            "resolved_at": None,
            "resolved_by": None,
            "resolution": None,
            "applied": [],
        }
        for r in rows
        if r["type"] == ActionType.FLAG_REVIEW.value
        and not r["shadow"]
        and r["params"].get("withheld")
    ]


def confirmed_actions(
    review: dict[str, Any], actor: str, note: str, now: datetime
) -> list[dict[str, Any]]:
    """The withheld actions of a review, planned now on a reviewer's word: each keeps its
    rule, and its reason says who confirmed it. TTLs run from the confirmation."""
    rows = []
    for w in review["withheld"]:
        ttl = w.get("ttl_seconds")
        said = f"; {note}" if note else ""
        rows.append(
            {
                "id": new_id("act"),
                "decision_id": review["decision_id"],
                "verdict_id": review["verdict_id"],
                "provider": review["provider"],
                "type": w["type"],
                "target_kind": w["target"]["kind"],
                "target_value": w["target"]["value"],
                "params": w.get("params") or {},
                "ttl_seconds": ttl,
                "expires_at": now + timedelta(seconds=ttl) if ttl else None,
                "rule": w["rule"],
                "reason": f"{w.get('reason', '')} (withheld for review {review['id']}, "
                f"confirmed by {actor}{said})",
                "state": ActionState.PENDING.value,
                "shadow": False,
                "policy_revision": review["policy_revision"],
                "trace_id": review["trace_id"],
                "created_at": now,
                "updated_at": now,
                "parent_id": None,
                "reference": reference_of(w["type"], w["target"]["kind"], w["target"]["value"])
                if w["type"] in _GATEWAY_TYPES
                else None,
            }
        )
    return rows


_GATEWAY_TYPES = {t.value for t in EntryType}


def _reference(action_type: str, spec: ActionSpec) -> str | None:
    """What a gateway's refusal will quote for this action (none for a review)."""
    if action_type not in _GATEWAY_TYPES:
        return None
    return reference_of(action_type, spec.target_kind.value, spec.target_value)


def fallback_actions(
    fallback: str,
    targets: Sequence[tuple[str, str]],
    error: str,
    **context: Any,
) -> list[dict[str, Any]]:
    """What a decision that errored plans under the provider's `fallback`: with
    `flag_review`, a review of the subject's first target (account, then key, org, IP:
    the order exemptions use), so a human sees what the policy could not decide; with
    `none`, nothing (the error is still counted and shown)."""
    if fallback != ActionType.FLAG_REVIEW.value or not targets:
        return []
    kind, value = targets[0]
    quoted = error if len(error) <= REASON_LIMIT else error[:REASON_LIMIT] + "…"
    spec = ActionSpec(
        type=ActionType.FLAG_REVIEW,
        target_kind=SubjectKind(kind),
        target_value=value,
        params={},
        ttl=None,
        rule=FALLBACK_RULE,
        reason=f"the decision failed, so no policy acted; review by hand: {quoted}",
    )
    return plan_actions(DecisionResult(actions=(spec,), shadow=False), **context)


@dataclass
class Planned:
    """One decision's actions, and the `action.plan` span that planned them (the
    gateway apply that follows continues from it)."""

    actions: list[dict[str, Any]]
    span_id: str | None = None


def plan(result: DecisionResult, parent: trace.Span | None, **context: Any) -> Planned:
    """`plan_actions` inside its own `action.plan` span, a child of `parent`."""
    span = pipeline_span(SPAN_PLAN, parent, {"tollgate.verdict_id": context["verdict_id"]})
    actions = plan_actions(result, **context)
    span.set_attribute("tollgate.actions", len(actions))
    span.set_attribute("tollgate.rules", sorted({a["rule"] for a in actions}))
    span.end()
    return Planned(actions, format(span.get_span_context().span_id, "016x"))


def insert(session: Session, planned: Sequence[Planned], now: datetime) -> None:
    """Insert the actions, and the reviews of those withheld, in the caller's
    transaction (their `action.planned` events: `planned_events`; the caller chains
    them, then calls `log_changes`, and flags the sightings of `acted_targets` as it
    records the batch's sightings)."""
    actions = [a for p in planned for a in p.actions]
    repository.insert_actions(session, actions)
    reviews_repo.insert_reviews(session, review_rows(actions, now))


def acted_targets(rows: Iterable[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(provider, kind, value) of the keys these action rows revoke and the accounts
    they suspend (not in shadow): their sightings are flagged (`history.*_acted_on`)."""
    return {
        (a["provider"], a["target_kind"], a["target_value"])
        for a in rows
        if not a["shadow"] and ACTED_ON.get(a["target_kind"]) == a["type"]
    }


def acted_on(
    session: Session, targets: Iterable[tuple[str, str, str]], now: datetime
) -> set[tuple[str, str, str]]:
    """Which of these (provider, kind, value) keys and accounts are revoked or suspended
    now (`ACTED_ON`), in the caller's transaction (its own inserts included)."""
    found: set[tuple[str, str, str]] = set()
    wanted = sorted({t for t in targets if t[1] in ACTED_ON})
    for i in range(0, len(wanted), 500):
        for provider, kind_type, kind, value in repository.active_types_on_keys(
            session, wanted[i : i + 500], now
        ):
            if ACTED_ON[kind] == kind_type:
                found.add((provider, kind, value))
    return found


def record_confirmed(
    session: Session, review: dict[str, Any], actor: str, note: str, now: datetime
) -> tuple[list[dict[str, Any]], list[EventDraft]]:
    """A review's withheld actions, planned on a reviewer's word (`confirmed_actions`,
    with the revocations their suspensions bring) and inserted in the caller's
    transaction; returns the rows and their `action.planned` events, which name the
    review (the caller chains them, then logs the changes)."""
    rows = confirmed_actions(review, actor, note, now)
    rows += expand_suspensions(session, rows, now)
    repository.insert_actions(session, rows)
    customers_repo.mark_acted(session, acted_targets(rows), now)
    return rows, planned_events(rows, actor, now, review_id=review["id"])


def planned_events(
    actions: Sequence[dict[str, Any]],
    actor: str,
    now: datetime,
    *,
    subjects: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    **also: Any,
) -> list[EventDraft]:
    """The `action.planned` event of each action row (`also`: more payload fields;
    `subjects`: each verdict's subject, by verdict id, when the caller has them: the
    events then list what they concern, their target included)."""
    return [
        EventDraft(
            type="action.planned",
            actor=actor,
            at=now,
            provider=a["provider"],
            verdict_id=a["verdict_id"],
            decision_id=a["decision_id"],
            action_id=a["id"],
            trace_id=a["trace_id"],
            payload={
                "type": a["type"],
                "target": {"kind": a["target_kind"], "value": a["target_value"]},
                "params": a["params"],
                "ttl_seconds": a["ttl_seconds"],
                "rule": a["rule"],
                "reason": a["reason"],
                "shadow": a["shadow"],
                "policy_revision": a["policy_revision"],
                **also,
            },
            subjects=None
            if subjects is None
            else [*subjects[a["verdict_id"]], (a["target_kind"], a["target_value"])],
        )
        for a in actions
    ]


def log_changes(session: Session, planned: Sequence[Planned], now: datetime) -> None:
    """The planned entries, in the enforcement change log (after the audit events)."""
    record_changes_blocking(
        session,
        [{**a, "span_id": a.get("span_id", p.span_id)} for p in planned for a in p.actions],
        "planned",
        now,
    )
