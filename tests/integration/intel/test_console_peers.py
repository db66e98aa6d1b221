"""The console's peers page: each peer's health and what it contributed."""

from __future__ import annotations

import httpx

from controlplane.auth.roles import Role
from tests.integration.intel.conftest import Exchange
from tests.integration.ui.conftest import form_csrf


async def test_peers_page_shows_health_and_contributions(exchange: Exchange) -> None:
    b = exchange["lab-b"]
    await b.add({"kind": "cidr", "value": "198.19.250.0/24", "confidence": 0.9})
    await exchange["lab-c"].pull("lab-b")
    await b.pull("lab-c")
    token, _ = await b.runtime.tokens.create("console-auditor", Role.AUDITOR, actor="tests")
    async with httpx.AsyncClient(base_url=b.url) as browser:
        csrf = await form_csrf(browser)
        signed = await browser.post(
            "/console/sign-in", data={"token": token, "next": "/console", "csrf": csrf}
        )
        assert signed.status_code == 303, signed.text
        page = await browser.get("/console/peers")

    assert page.status_code == 200
    html = page.text
    rows = {
        name: next(r for r in html.split("<tr>") if f"<td>{name} " in r)
        for name in ("lab-a", "lab-c", "relay")
    }
    assert 'badge healthy">healthy' in rows["lab-c"]
    assert "http://127.0.0.1:" in rows["lab-c"]
