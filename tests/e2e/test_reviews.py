"""The review queue in a real browser: a verified customer's withheld hard action shows
with what would have been done and why, with no API key id on the page."""

from __future__ import annotations

import secrets

import httpx
from playwright.async_api import Page, expect

from controlplane.auth.roles import Role
from tests.e2e.conftest import Server, shot
from tests.e2e.test_console import assert_no_key_ids, sign_in


async def test_the_review_queue(page: Page, server: Server) -> None:
    account = f"acct_verified_{secrets.token_hex(4)}"
    admin = {"Authorization": f"Bearer {server.tokens[Role.ADMIN]}"}
    subject = {
        "account_id": account,
        "api_key_id": f"key_{secrets.token_hex(6)}",
        "ips": ["192.0.2.44"],
    }
    verdict = {
        "id": f"v-{secrets.token_hex(6)}",
        "provider": "lab-a",
        "detector": {"name": "sweep", "version": "1.4.0"},
        "observed_at": "2026-11-26T12:00:00Z",
        "subject": subject,
        "score": 0.93,
        "confidence": 0.8,
        "signals": {"requests_24h": 1200000, "prompt_template_reuse": 0.91},
        "labels": ["distillation.capability_sweep"],
    }
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        stored = await client.post(
            "/v1/customers",
            json={"customers": [{"account_id": account, "tier": "enterprise"}]},
            headers=admin,
        )
        assert stored.status_code in (200, 201), stored.text
        answer = await client.post("/v1/verdicts", json=verdict, headers=admin)
        assert answer.status_code == 202, answer.text

    await sign_in(page, server)
    await page.click("header nav >> text=Reviews")
    await expect(page.locator("h1")).to_have_text("Reviews")
    row = page.locator("tbody tr", has_text=account)
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("api_key key:")  # what was withheld, by handle
    await assert_no_key_ids(page, server)
    await shot(page, "22-reviews")
