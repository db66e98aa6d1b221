"""Customer records through the API, what policies see of them, and the review queue's
dismissal and metric."""

from __future__ import annotations

import secrets
from typing import Any

from controlplane.auth.roles import Role
from tests.support.app import Running
from tests.support.verdicts import unique, verdict


async def test_bad_record_is_refused_whole_naming_the_field(api: Running) -> None:
    good = {"account_id": unique("acct_c"), "tier": "enterprise"}
    bad = {"account_id": "has space", "tier": "enterprise"}
    answer = await api.client.post("/v1/customers", json={"customers": [good, bad]})
    assert answer.status_code == 422
    assert [d["field"] for d in answer.json()["details"]] == ["customers[1].account_id"]
    assert (await api.client.get(f"/v1/customers/{good['account_id']}")).status_code == 404

    twice = await api.client.post("/v1/customers", json={"customers": [good, good]})
    assert twice.status_code == 422
    assert twice.json()["details"][0]["field"] == "customers[1].account_id"


async def test_import_page_get_replace_delete(api: Running) -> None:
    prefix = unique("acct_p")
    records = [{"account_id": f"{prefix}_{i}", "keys": [f"k{i}"]} for i in range(5)]
    first = await api.client.post("/v1/customers", json={"customers": records})
    assert first.json() == {"created": 5, "updated": 0}
    again = await api.client.post(
        "/v1/customers", json={"customers": [{**records[0], "verified": False, "tier": "research"}]}
    )
    assert again.json() == {"created": 0, "updated": 1}
    one = (await api.client.get(f"/v1/customers/{prefix}_0")).json()
    assert (one["verified"], one["tier"]) == (False, "research")
    assert (await api.client.get(f"/v1/customers/{prefix}_1")).json()["verified"] is True

    seen: list[str] = []
    cursor = f"{prefix}_"
    while cursor:
        page = (await api.client.get("/v1/customers", params={"cursor": cursor, "limit": 2})).json()
        seen += [c["account_id"] for c in page["customers"] if c["account_id"].startswith(prefix)]
        cursor = page["next_cursor"]
    assert seen == [r["account_id"] for r in records]

    assert (await api.client.delete(f"/v1/customers/{prefix}_2")).status_code == 204
    assert (await api.client.delete(f"/v1/customers/{prefix}_2")).status_code == 404


async def test_customers_need_reviewer_or_admin(api: Running) -> None:
    detector = await api.token(Role.DETECTOR)
    answer = await api.client.get("/v1/customers", headers=detector)
    assert answer.status_code == 403


async def test_policies_see_the_customer_record(api: Running) -> None:
    account = unique("acct_ctx")
    await api.client.post(
        "/v1/customers",
        json={"customers": [{"account_id": account, "tier": "enterprise", "owner": "am"}]},
    )
    subject = {"account_id": account, "api_key_id": unique("key"), "ips": ["192.0.2.9"]}
    [known] = (await api.submit(verdict(subject=subject, score=0.2)))["results"]
    [unknown] = (await api.submit(verdict(score=0.2)))["results"]
    decided: dict[str, Any] = (await api.client.get(f"/v1/decisions/{known['decision_id']}")).json()
    assert decided["input"]["context"]["customer"]["tier"] == "enterprise"
    assert decided["input"]["history"]["account"]["keys_seen"] == 1
    other = (await api.client.get(f"/v1/decisions/{unknown['decision_id']}")).json()
    assert "customer" not in other["input"]["context"]


async def test_dismissed_review_keeps_the_actions_withheld_and_the_metric_counts(
    api: Running,
) -> None:
    account = unique("acct_rv")
    await api.client.post("/v1/customers", json={"customers": [{"account_id": account}]})
    subject = {"account_id": account, "api_key_id": unique("key"), "ips": ["192.0.2.9"]}
    [result] = (await api.submit(verdict(subject=subject)))["results"]
    assert [a["type"] for a in result["actions"]] == ["flag_review"]
    metrics = (await api.client.get("/metrics")).text
    assert "tollgate_review_oldest_open_seconds" in metrics
    assert "tollgate_reviews_open 0.0" not in metrics

    reviews = (await api.client.get("/v1/reviews")).json()["reviews"]
    [review] = [r for r in reviews if r["subject"]["value"] == account]
    assert [w["type"] for w in review["withheld"]] == ["rate_limit"]
    empty = await api.client.post(f"/v1/reviews/{review['id']}/dismiss", json={"reason": ""})
    assert empty.status_code == 422
    dismissed = await api.client.post(
        f"/v1/reviews/{review['id']}/dismiss", json={"reason": "contracted batch job"}
    )
    assert dismissed.status_code == 200
    assert dismissed.json()["resolution"] == "contracted batch job"
    actions = (await api.client.get("/v1/actions", params={"target_value": account})).json()
    assert {a["type"] for a in actions["items"]} == {"flag_review"}
    assert (
        await api.client.post(f"/v1/reviews/{review['id']}/dismiss", json={"reason": "x"})
    ).status_code == 409


async def test_a_network_a_verified_customer_uses_is_named_while_the_record_says_so(
    api: Running,
) -> None:
    """Another account's verdict on a network a verified customer was seen on names that
    network (a range block there would refuse the customer), whether the record came
    before the customer's sightings or after, and stops naming it once the record is
    unverified or deleted."""
    n = secrets.randbelow(250 * 250)
    later_net, earlier_net = (f"10.{n // 250}.{(n + i) % 250}" for i in (0, 1))

    async def networks_named_for_another(prefix: str) -> list[str]:
        subject = {"account_id": unique("acct_other"), "ips": [f"{prefix}.99"]}
        [result] = (await api.submit(verdict(subject=subject, score=0.1)))["results"]
        decided = (await api.client.get(f"/v1/decisions/{result['decision_id']}")).json()
        named: list[str] = decided["input"]["context"]["verified_networks"]
        return named

    async def record(account: str, verified: bool) -> None:
        customers = [{"account_id": account, "verified": verified}]
        answer = await api.client.post("/v1/customers", json={"customers": customers})
        assert answer.status_code == 200, answer.text

    # The customer's sightings first, its record after.
    later = unique("acct_vlater")
    await api.submit(verdict(subject={"account_id": later, "ips": [f"{later_net}.5"]}, score=0.1))
    assert await networks_named_for_another(later_net) == []
    await record(later, True)
    assert await networks_named_for_another(later_net) == [f"{later_net}.0/24"]
    await record(later, False)
    assert await networks_named_for_another(later_net) == []

    # The record first, the sightings after.
    earlier = unique("acct_vearlier")
    await record(earlier, True)
    await api.submit(
        verdict(subject={"account_id": earlier, "ips": [f"{earlier_net}.5"]}, score=0.1)
    )
    assert await networks_named_for_another(earlier_net) == [f"{earlier_net}.0/24"]
    assert (await api.client.delete(f"/v1/customers/{earlier}")).status_code == 204
    assert await networks_named_for_another(earlier_net) == []
