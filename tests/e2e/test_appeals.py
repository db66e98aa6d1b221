"""The appeal queue and an appeal's page in a real browser: appeals filed by support and
decided by a reviewer through the API show with their state, the actions they cover,
what the customer was told, and the remediation figures; no API key id is shown."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.async_api import Page, expect

from controlplane.auth.roles import Role
from tests.e2e.conftest import Server, shot
from tests.e2e.test_console import assert_no_key_ids, sign_in


async def _file(client: httpx.AsyncClient, server: Server, action: dict[str, Any]) -> str:
    headers = {"Authorization": f"Bearer {server.tokens[Role.SUPPORT]}"}
    body = {
        "subject": action["target"],
        "provider": "lab-a",
        "action_ids": [action["id"]],
        "statement": "We run a nightly evaluation suite for a hospital group.",
        "contact": "ops@customer.example",
    }
    response = await client.post("/v1/appeals", json=body, headers=headers)
    assert response.status_code == 201, response.text
    appeal_id: str = response.json()["id"]
    return appeal_id


async def test_the_appeal_queue_and_an_upheld_appeal(page: Page, server: Server) -> None:
    actions = [
        a
        for r in server.results
        for a in r["actions"]
        if a["type"] in ("rate_limit", "revoke_key") and a["provider"] == "lab-a"
    ]
    assert len(actions) >= 2, "the demo scenario enforces on keys"
    reviewer = {"Authorization": f"Bearer {server.tokens[Role.REVIEWER]}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        upheld = await _file(client, server, actions[0])
        denied = await _file(client, server, actions[1])
        await client.post(
            f"/v1/appeals/{upheld}/uphold",
            json={"reason": "verified evaluation workload", "exempt_for": "30d"},
            headers=reviewer,
        )
        await client.post(
            f"/v1/appeals/{denied}/deny", json={"reason": "sweep confirmed"}, headers=reviewer
        )

    await sign_in(page, server)
    await page.click("header nav >> text=Appeals")
    await expect(page.locator("h1")).to_have_text("Appeals")
    await expect(page.locator("table.appeals tbody tr")).to_have_count(2)
    await expect(page.locator(f"a[href='/console/appeals/{upheld}']")).to_be_visible()
    await assert_no_key_ids(page, server)
    await shot(page, "20-appeals")

    await page.click(f"a[href='/console/appeals/{upheld}']")
    await expect(page.locator("h1")).to_contain_text("upheld")
    await expect(page.get_by_text("Told the customer:")).to_be_visible()
    await expect(page.locator("table tbody tr").first).to_contain_text("lifted")
    await assert_no_key_ids(page, server)
    await shot(page, "21-appeal-upheld")

    await page.goto(f"{server.url}/console/appeals?state=denied")
    await expect(page.locator("table.appeals tbody tr")).to_have_count(1)
    await expect(page.locator("table.appeals")).to_contain_text(denied)
