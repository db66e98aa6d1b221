"""The console's review queue: what was withheld from a verified customer, and why,
with keys shown by their handle; a dismissed review moves to its own list."""

from __future__ import annotations

from controlplane.auth.roles import Role
from controlplane.domain.redact import key_handle
from tests.integration.ui.conftest import signed_in
from tests.support.app import Running
from tests.support.verdicts import unique, verdict


async def test_the_queue_shows_what_was_withheld_and_a_dismissal_moves_it(api: Running) -> None:
    account, key = unique("acct_cq"), unique("key_cq")
    await api.client.post("/v1/customers", json={"customers": [{"account_id": account}]})
    subject = {"account_id": account, "api_key_id": key, "ips": ["192.0.2.9"]}
    await api.submit(verdict(subject=subject))

    async with signed_in(api, Role.REVIEWER) as console:
        page = await console.get("/console/reviews")
        assert page.status_code == 200, page.text
        assert account in page.text and "rate_limit api_key" in page.text
        assert key_handle(key) in page.text and key not in page.text, "keys by handle only"
        [review] = [
            r
            for r in (await api.client.get("/v1/reviews")).json()["reviews"]
            if r["subject"]["value"] == account
        ]
        await api.client.post(
            f"/v1/reviews/{review['id']}/dismiss", json={"reason": "contracted batch job"}
        )
        still_open = await console.get("/console/reviews")
        dismissed = await console.get("/console/reviews", params={"state": "dismissed"})

    assert review["id"] not in still_open.text
    assert review["id"] in dismissed.text and "contracted batch job" in dismissed.text
