"""`build_input`: the policy input's history and context for one verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from controlplane.customers.repository import ScopesRead, Tally
from controlplane.domain.verdict import Verdict
from controlplane.evaluate.context import IntelIndex, Lookups, PriorVerdict, build_input
from tests.support.verdicts import verdict

OBSERVED = datetime(2026, 11, 26, 12, tzinfo=UTC)
RECEIVED = datetime(2026, 11, 26, 12, 5, tzinfo=UTC)
NOW = datetime(2026, 11, 26, 12, 5, 1, tzinfo=UTC)

SUBJECT = {"account_id": "acct_1", "api_key_id": "key_1", "org_id": "org_1", "ips": ["192.0.2.7"]}


def the_verdict(**changes: Any) -> Verdict:
    return Verdict.model_validate({**verdict(subject=SUBJECT), "id": "v-now", **changes})


def prior(
    verdict_id: str,
    *,
    observed: timedelta,
    received: timedelta,
    account: str | None = "acct_1",
    key: str | None = "key_1",
    score: float = 0.8,
) -> PriorVerdict:
    """An earlier verdict, `observed` and `received` before this one."""
    return PriorVerdict(
        id=verdict_id,
        account_id=account,
        api_key_id=key,
        observed_at=OBSERVED - observed,
        received_at=RECEIVED - received,
        score=score,
        confidence=0.8,
        detector="sweep",
    )


def with_priors(*priors: PriorVerdict, provider: str = "lab-a") -> Lookups:
    lookups = Lookups()
    for p in priors:
        if p.account_id:
            lookups.verdicts[(provider, "account", p.account_id)].append(p)
        if p.api_key_id:
            lookups.verdicts[(provider, "api_key", p.api_key_id)].append(p)
    return lookups


def action_doc(
    action_id: str,
    kind: str,
    value: str,
    *,
    expires: datetime | None = None,
    kind_type: str = "rate_limit",
) -> dict[str, Any]:
    return {
        "id": action_id,
        "type": kind_type,
        "target": {"kind": kind, "value": value},
        "params": {},
        "rule": "graduated.first_offense",
        "state": "pending",
        "created_at": (NOW - timedelta(hours=1)).isoformat(),
        "expires_at": expires.isoformat() if expires else None,
    }


def test_shape_and_verdict_document() -> None:
    v = the_verdict()

    given = build_input(v, RECEIVED, Lookups(), NOW)

    assert set(given) == {"verdict", "history", "context", "now"}
    assert given["verdict"] == v.document()
    assert given["now"] == "2026-11-26T12:05:01Z"
    assert given["history"]["active_actions"] == []
    assert given["history"]["verdicts_30d"] == 0
    assert given["history"]["appeals"] == []
    assert given["context"] == {
        "exempt": False,
        "exemption": None,
        "intel_matches": [],
        "verified_networks": [],
    }


def test_verdicts_30d_counts_only_earlier_verdicts_within_30_days() -> None:
    lookups = with_priors(
        prior("counted", observed=timedelta(days=10), received=timedelta(days=10)),
        prior("edge", observed=timedelta(days=30), received=timedelta(days=30)),
        prior("too-old", observed=timedelta(days=30, seconds=1), received=timedelta(days=1)),
        prior("later", observed=timedelta(days=1), received=-timedelta(seconds=1)),
        prior("same-time", observed=timedelta(0), received=timedelta(0)),
        prior("by-account", observed=timedelta(days=2), received=timedelta(days=2), key="key_9"),
        prior("by-key", observed=timedelta(days=3), received=timedelta(days=3), account=None),
        prior(
            "stranger",
            observed=timedelta(days=1),
            received=timedelta(days=1),
            account="a2",
            key="k2",
        ),
        # Observed after this one but reported before it: an earlier verdict all the same.
        prior("late-report", observed=-timedelta(hours=1), received=timedelta(minutes=1)),
    )

    history = build_input(the_verdict(), RECEIVED, lookups, NOW)["history"]

    assert history["verdicts_30d"] == 5
    assert [p["id"] for p in history["recent_verdicts"]] == [
        "late-report",
        "by-account",
        "by-key",
        "counted",
        "edge",
    ]
    assert history["recent_verdicts"][3] == {
        "id": "counted",
        "observed_at": "2026-11-16T12:00:00Z",
        "score": 0.8,
        "confidence": 0.8,
        "detector": "sweep",
    }


def test_a_prior_verdict_on_both_account_and_key_counts_once() -> None:
    lookups = with_priors(prior("both", observed=timedelta(days=1), received=timedelta(days=1)))

    assert build_input(the_verdict(), RECEIVED, lookups, NOW)["history"]["verdicts_30d"] == 1


def test_other_providers_verdicts_do_not_count() -> None:
    lookups = with_priors(
        prior("elsewhere", observed=timedelta(days=1), received=timedelta(days=1)), provider="lab-b"
    )

    assert build_input(the_verdict(), RECEIVED, lookups, NOW)["history"]["verdicts_30d"] == 0


def test_active_actions_matched_by_key_account_org_ip_and_cidr() -> None:
    lookups = Lookups()
    for action in (
        action_doc("on-key", "api_key", "key_1"),
        action_doc("on-account", "account", "acct_1"),
        action_doc("on-org", "org", "org_1", kind_type="flag_review"),
        action_doc("on-ip", "ip", "192.0.2.7", kind_type="block"),
        action_doc("on-cidr", "cidr", "192.0.2.0/24", kind_type="block"),
        action_doc("other-key", "api_key", "key_9"),
        action_doc("other-ip", "ip", "192.0.2.8", kind_type="block"),
        action_doc("other-cidr", "cidr", "198.51.100.0/24", kind_type="block"),
        action_doc("expired", "api_key", "key_1", expires=NOW - timedelta(seconds=1)),
        action_doc("expires-now", "api_key", "key_1", expires=NOW),
        action_doc("expiring", "api_key", "key_2", expires=NOW + timedelta(hours=1)),
        action_doc("expired-cidr", "cidr", "192.0.0.0/16", expires=NOW - timedelta(hours=1)),
    ):
        lookups.add_action("lab-a", action)
    lookups.add_action("lab-b", action_doc("other-provider", "api_key", "key_1"))
    lookups.add_action("lab-b", action_doc("other-provider-cidr", "cidr", "192.0.2.0/24"))

    active = build_input(the_verdict(), RECEIVED, lookups, NOW)["history"]["active_actions"]

    assert sorted(a["id"] for a in active) == [
        "on-account",
        "on-cidr",
        "on-ip",
        "on-key",
        "on-org",
    ]


def test_repeats_of_one_enforcement_appear_once_with_the_longest_expiry() -> None:
    # A policy that asks again for an active block (every verdict from a shared-intel
    # range does) must not make each later input carry every repeat.
    lookups = Lookups()
    for n, hours in enumerate((1, 5, 3)):
        lookups.add_action(
            "lab-a",
            action_doc(
                f"block-{n}",
                "cidr",
                "192.0.2.0/24",
                kind_type="block",
                expires=NOW + timedelta(hours=hours),
            ),
        )
    lookups.add_action("lab-a", action_doc("limit", "api_key", "key_1"))

    active = build_input(the_verdict(), RECEIVED, lookups, NOW)["history"]["active_actions"]

    assert sorted(a["id"] for a in active) == ["block-1", "limit"]


def test_cidr_action_matches_ipv6_subjects() -> None:
    lookups = Lookups()
    lookups.add_action("lab-a", action_doc("v6", "cidr", "2001:db8::/32", kind_type="block"))
    v = the_verdict(subject={"ips": ["192.0.2.1", "2001:db8::5"]})

    active = build_input(v, RECEIVED, lookups, NOW)["history"]["active_actions"]

    assert [a["id"] for a in active] == ["v6"]


def test_an_action_reachable_two_ways_is_listed_once() -> None:
    lookups = Lookups()
    shared = action_doc("shared", "api_key", "key_1")
    lookups.add_action("lab-a", shared)
    lookups.actions[("lab-a", "account", "acct_1")].append(
        lookups.actions[("lab-a", "api_key", "key_1")][0]
    )

    active = build_input(the_verdict(), RECEIVED, lookups, NOW)["history"]["active_actions"]

    assert [a["id"] for a in active] == ["shared"]


def test_exemption_of_any_subject_key_makes_the_verdict_exempt() -> None:
    exemption = {"subject": {"kind": "org", "value": "org_1"}, "owner": "t&s", "reason": "msa"}
    for key in (
        ("lab-a", "org", "org_1"),
        ("lab-a", "api_key", "key_1"),
        ("lab-a", "ip", "192.0.2.7"),
    ):
        lookups = Lookups()
        lookups.exemptions[key] = exemption

        context = build_input(the_verdict(), RECEIVED, lookups, NOW)["context"]

        assert context["exempt"] is True, key
        assert context["exemption"] == exemption


def test_exemption_for_another_subject_or_provider_does_not_apply() -> None:
    lookups = Lookups()
    lookups.exemptions[("lab-b", "account", "acct_1")] = {"owner": "x"}
    lookups.exemptions[("lab-a", "account", "acct_2")] = {"owner": "y"}

    context = build_input(the_verdict(), RECEIVED, lookups, NOW)["context"]

    assert (context["exempt"], context["exemption"]) == (False, None)


def test_intel_matches_for_every_ip() -> None:
    lookups = Lookups()
    lookups.intel = IntelIndex(
        [{"value": "203.0.113.0/24", "source": "lab-b", "confidence": 0.9, "tlp": "amber"}]
    )
    v = the_verdict(subject={"ips": ["203.0.113.7", "192.0.2.1", "203.0.113.8"]})

    matches = build_input(v, RECEIVED, lookups, NOW)["context"]["intel_matches"]

    assert [(m["cidr"], m["ip"]) for m in matches] == [
        ("203.0.113.0/24", "203.0.113.7"),
        ("203.0.113.0/24", "203.0.113.8"),
    ]


def remedy(remedy_id: str, kind: str, value: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": remedy_id,
        "appeal_id": None,
        "state": "lifted",
        "rule": "graduated.first_offense",
        "type": "rate_limit",
        "target": {"kind": kind, "value": value},
        "score": 0.8,
        "at": "2026-11-25T12:00:00Z",
        "cooldown_until": "2026-12-02T12:00:00Z",
        **extra,
    }


def test_appeal_history_of_every_subject_key_and_of_ranges_holding_an_ip() -> None:
    lookups = Lookups()
    lookups.add_remedy("lab-a", remedy("lft_key", "api_key", "key_1", at="2026-11-25T13:00:00Z"))
    lookups.add_remedy("lab-a", remedy("lft_range", "cidr", "192.0.2.0/24"))
    lookups.add_remedy("lab-a", remedy("apl_open", "account", "acct_1", state="open"))
    lookups.add_remedy("lab-a", remedy("lft_other", "cidr", "198.51.100.0/24"))
    lookups.add_remedy("lab-b", remedy("lft_elsewhere", "api_key", "key_1"))
    history = build_input(the_verdict(), RECEIVED, lookups, NOW)["history"]
    assert [r["id"] for r in history["appeals"]] == ["apl_open", "lft_range", "lft_key"]


def test_no_appeal_history_is_an_empty_list() -> None:
    assert build_input(the_verdict(), RECEIVED, Lookups(), NOW)["history"]["appeals"] == []


def test_operation_counts_come_from_tallies_the_batch_and_flagged_keys() -> None:
    """`history.account`/`org` from what a batch read (`read_sightings`): the tallies,
    the stored sightings among the batch's, the flagged keys and accounts; then what
    the batch's earlier verdicts saw and planned."""
    account, org = ("lab-a", "account", "acct_1"), ("lab-a", "org", "org_1")
    lookups = Lookups()
    lookups.add_sightings(
        ScopesRead(
            tallies={
                account: Tally(keys=40, networks=3, first_networks=["10.0.0.0/24"]),
                org: Tally(keys=90, networks=5, accounts=7),
            },
            known={
                (*account, "api_key", "key_1"): NOW,
                (*account, "api_key", "key_other"): NOW,  # shown by another verdict
                (*org, "account", "acct_1"): NOW,
            },
            acted={(*account, "api_key", "key_old"): NOW, (*org, "account", "acct_gone"): NOW},
        )
    )
    # The flagged ones still acted on (read for the batch), and a batch target's actions.
    lookups.acted = {("lab-a", "api_key", "key_old"), ("lab-a", "account", "acct_gone")}
    lookups.add_action("lab-a", action_doc("limited", "api_key", "key_1"))  # not a revocation

    history = build_input(the_verdict(), RECEIVED, lookups, NOW)["history"]
    assert history["account"] == {
        "keys_seen": 40,  # key_1 is stored
        "networks_seen": 4,  # 192.0.2.0/24 is new
        "networks": ["10.0.0.0/24", "192.0.2.0/24"],
        "keys_acted_on": 1,
    }
    assert (history["org"]["keys_seen"], history["org"]["accounts_seen"]) == (91, 7)
    assert (history["org"]["keys_acted_on"], history["org"]["accounts_acted_on"]) == (0, 1)

    # An earlier verdict of the batch shows a new key; another's outcome revokes a key
    # the account was seen with before (it names that key itself).
    earlier = Verdict.model_validate(
        {**verdict(subject={**SUBJECT, "api_key_id": "key_new"}), "id": "v-earlier"}
    )
    lookups.saw(earlier)
    lookups.add_action("lab-a", action_doc("now", "api_key", "key_other", kind_type="revoke_key"))
    history = build_input(the_verdict(), RECEIVED, lookups, NOW)["history"]
    assert history["account"]["keys_seen"] == 41
    assert history["account"]["keys_acted_on"] == 2
    assert history["org"]["keys_seen"] == 92
