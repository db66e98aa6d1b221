"""The console in a real browser: sign in, filter the timeline, follow an action to its
decision, gateways and trace waterfall, read the policy history and the audit verdict.
Every page is screenshotted to test-artifacts/e2e/ and checked for API key ids."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from playwright.async_api import Page, expect

from controlplane.auth.roles import Role
from controlplane.ui.display import key_handle
from tests.e2e.conftest import ARTIFACTS, Server, shot, wait_for


async def sign_in(page: Page, server: Server, role: Role = Role.AUDITOR) -> None:
    await page.goto(f"{server.url}/console")
    await expect(page).to_have_url(re.compile(r"/console/sign-in\?next=%2Fconsole$"))
    await page.fill("#token", server.tokens[role])
    await page.click("button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Enforcement timeline")


async def assert_no_key_ids(page: Page, server: Server) -> None:
    html = await page.content()
    leaked = [k for k in server.key_ids if re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", html)]
    assert leaked == [], f"{page.url} shows API key ids {leaked}"


async def test_sign_in_refuses_bad_tokens_then_opens_the_console(
    page: Page, server: Server
) -> None:
    await page.goto(f"{server.url}/console/audit")
    await expect(page.locator("h1")).to_have_text("Tollgate console")
    await page.fill("#token", "tg_not-a-token")
    await page.click("button[type=submit]")
    await expect(page.get_by_role("alert")).to_contain_text("unknown, revoked or expired")
    await page.fill("#token", server.tokens[Role.DETECTOR])
    await page.click("button[type=submit]")
    await expect(page.get_by_role("alert")).to_contain_text("detector token cannot open")
    await shot(page, "01-sign-in-refused")

    await page.fill("#token", server.tokens[Role.AUDITOR])
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{server.url}/console/audit")
    cookie = next(c for c in await page.context.cookies() if c["name"] == "tollgate_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert server.tokens[Role.AUDITOR] not in cookie["value"]

    await page.click("header nav >> text=Timeline")
    await expect(page.locator("h1")).to_have_text("Enforcement timeline")
    await expect(page.locator("table.events tbody tr")).to_have_count(50)
    await assert_no_key_ids(page, server)
    await shot(page, "02-timeline")

    await page.click("text=Sign out")
    await expect(page).to_have_url(f"{server.url}/console/sign-in")
    await page.goto(f"{server.url}/console")
    await expect(page).to_have_url(re.compile(r"/console/sign-in"))


async def test_filter_the_timeline(page: Page, server: Server) -> None:
    await sign_in(page, server)
    await page.select_option("select[name=action_type]", "revoke_key")
    await page.fill("input[name=provider]", "lab-a")
    await page.click("button:has-text('Filter')")
    await expect(page).to_have_url(re.compile(r"action_type=revoke_key"))
    rows = page.locator("table.events tbody tr")
    assert await rows.count() > 0
    assert set(await rows.locator("td:nth-child(7)").all_inner_texts()) == {"revoke_key"}
    assert set(await rows.locator("td:nth-child(5)").all_inner_texts()) == {"lab-a"}
    await shot(page, "03-timeline-filtered")

    # An API key typed by its id: the page moves to its handle; the id is shown nowhere.
    key_id = next(
        a["target"]["value"]
        for r in server.results
        for a in r["actions"]
        if a["type"] == "revoke_key"
    )
    await page.goto(f"{server.url}/console")
    await page.select_option("select[name=subject_kind]", "api_key")
    await page.fill("input[name=subject]", key_id)
    await page.click("button:has-text('Filter')")
    await expect(page.locator("input[name=subject]")).to_have_value(key_handle(key_id))
    assert parse_qs(urlsplit(page.url).query)["subject"] == [key_handle(key_id)]
    await expect(page.locator("table.events tbody tr").first).to_contain_text(key_handle(key_id))
    await assert_no_key_ids(page, server)
    await shot(page, "04-timeline-by-key")

    await page.locator("table.events a.mono", has_text=key_handle(key_id)).first.click()
    await expect(page.locator("h1")).to_contain_text(key_handle(key_id))
    await expect(page.get_by_role("heading", name="Verdicts")).to_be_visible()
    await assert_no_key_ids(page, server)
    await shot(page, "05-subject")


async def test_an_action_from_verdict_to_gateway_with_its_trace(page: Page, server: Server) -> None:
    await sign_in(page, server)
    # A revocation a policy rule asked for (not one Tollgate planned with a suspension),
    # enforced at the connector: from the timeline to its page.
    action = next(
        a
        for r in server.results
        for a in r["actions"]
        if a["type"] == "revoke_key"
        and a["provider"] == "lab-a"
        and not a["rule"].startswith("tollgate.")
    )
    await page.goto(f"{server.url}/console?action_type=revoke_key&event=action.applied")
    await page.locator(f"table.events a[href='/console/actions/{action['id']}']").first.click()
    await expect(page).to_have_url(re.compile(r"/console/actions/act_"))

    await expect(page.get_by_role("region", name="verdict")).to_contain_text("sweep")
    decision = page.get_by_role("region", name="decision")
    await expect(decision).to_contain_text(server.revisions[0][:16])
    gateways = page.get_by_role("region", name="connectors")
    await expect(gateways.locator("tbody tr").first).to_contain_text("edge")
    await expect(gateways.locator(".badge.applied")).to_have_count(1)
    await expect(page.locator(".rule.mine").first).to_be_visible()
    await expect(page.get_by_text("matches the stored result")).to_be_visible()

    # Spans reach the store about a second after they end: reload until the trace shows.
    async def waterfall() -> bool:
        if await page.locator(".wf-row").count():
            return True
        await page.reload()
        return False

    await wait_for("the trace waterfall", waterfall)
    names = await page.locator(".wf-label summary .mono").all_inner_texts()
    for name in ("verdict.ingest", "policy.evaluate", "action.plan", "connector.apply"):
        assert name in names, names
    assert names.count("verdict.ingest") == 1, "the batch's other verdicts are folded away"
    request_bar = await page.locator(".wf-bar").first.bounding_box()
    track = await page.locator(".wf-track").first.bounding_box()
    assert request_bar and track and request_bar["width"] > track["width"] * 0.5
    await assert_no_key_ids(page, server)
    await shot(page, "06-action")

    await page.locator(".wf-label summary", has_text="policy.evaluate").click()
    attributes = page.locator(".wf-label .attrs").filter(has_text="tollgate.policy_revision")
    await expect(attributes).to_be_visible()
    await page.locator(".waterfall").screenshot(path=str(ARTIFACTS / "07-trace-waterfall.png"))


async def test_policy_history_connectors_and_audit(page: Page, server: Server) -> None:
    await sign_in(page, server)
    await page.click("header nav >> text=Policies")
    rejected = page.locator("tbody tr", has=page.locator(".badge.rejected"))
    await expect(rejected).to_have_count(1)
    await expect(rejected).to_contain_text("test_new_provider_is_configured")
    await expect(rejected).to_contain_text("added tollgate/config/zz_review_test.rego")
    active = page.locator("tbody tr", has=page.locator(".badge.active"))
    await expect(active).to_contain_text("changed tollgate/graduated/graduated.rego")
    await shot(page, "08-policies")

    await active.locator("a").first.click()
    await expect(page.locator(".diff .add")).to_contain_text("it is given")
    await expect(page.locator(".diff .del")).to_have_count(1)
    await shot(page, "09-revision-diff")

    await page.click("header nav >> text=Connectors")
    await expect(page.locator("tbody tr").first).to_contain_text("edge")
    await expect(page.locator(".badge.healthy")).to_have_count(1)
    await shot(page, "10-connectors")

    await page.click("header nav >> text=Audit")
    await expect(page.get_by_role("status")).to_contain_text("intact")
    await shot(page, "11-audit-verify")
