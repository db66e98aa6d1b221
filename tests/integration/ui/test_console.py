"""The console over HTTP: sessions (cookie flags, roles, tampering, revocation,
sign-out), the timeline's filters, the subject, action, policy, connector and audit
pages, and that no page ever shows an API key id."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import col

from connectors.memory import MemoryConnector
from controlplane.auth.roles import Role
from controlplane.auth.service import Principal
from controlplane.store.models import AuditEventRow
from controlplane.ui import sessions
from controlplane.ui.display import key_handle
from tests.integration.ui.conftest import Seeded, form_csrf, signed_in, transport
from tests.support.app import Running
from tests.support.verdicts import new_subject, verdict

ACTION_LINK = re.compile(r'href="/console/actions/(act_[0-9a-f]+)"')


@pytest.fixture
async def auditor(seeded: Seeded) -> AsyncIterator[httpx.AsyncClient]:
    async with signed_in(seeded.api) as client:
        yield client


def assert_no_key_ids(seeded: Seeded, html: str) -> None:
    leaked = [k for k in seeded.key_ids if re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", html)]
    assert leaked == [], f"API key ids shown: {leaked}"


# -- sessions --------------------------------------------------------------------------


async def test_pages_need_a_session(seeded: Seeded) -> None:
    async with httpx.AsyncClient(transport=transport(seeded.api), base_url="http://t") as anon:
        response = await anon.get("/console/policies?x=1")
        assert response.status_code == 303
        target = urlsplit(response.headers["location"])
        assert target.path == "/console/sign-in"
        assert parse_qs(target.query)["next"] == ["/console/policies?x=1"]
        # A bearer token is no console session.
        admin = {"Authorization": seeded.api.client.headers["Authorization"]}
        assert (await anon.get("/console", headers=admin)).status_code == 303
        form = await anon.get("/console/sign-in")
        assert form.status_code == 200 and 'name="token"' in form.text
        assert "script" not in form.headers["content-security-policy"].replace("'none'", "")


async def test_sign_in_sets_a_signed_httponly_strict_cookie(seeded: Seeded) -> None:
    token, row = await seeded.api.runtime.tokens.create("alice", Role.AUDITOR, actor="tests")
    async with httpx.AsyncClient(transport=transport(seeded.api), base_url="http://t") as client:
        response = await client.post(
            "/console/sign-in",
            data={"token": token, "next": "/console/audit", "csrf": await form_csrf(client)},
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/console/audit"
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
        assert "Secure" not in cookie, "plain http: a Secure cookie would never come back"
        assert token not in cookie and row.id in cookie
        page = await client.get("/console/audit")
        assert page.status_code == 200 and "alice" in page.text
        assert page.headers["cache-control"] == "no-store"


async def test_cookie_is_secure_over_https(seeded: Seeded) -> None:
    async with signed_in(seeded.api, https=True) as client:
        assert (await client.get("/console/connectors")).status_code == 200
    token, _ = await seeded.api.runtime.tokens.create("bob", Role.ENGINEER, actor="tests")
    async with httpx.AsyncClient(transport=transport(seeded.api), base_url="https://t") as other:
        response = await other.post(
            "/console/sign-in", data={"token": token, "csrf": await form_csrf(other)}
        )
        assert "Secure" in response.headers["set-cookie"]


async def test_bad_tokens_and_non_readers_cannot_sign_in(seeded: Seeded) -> None:
    async with httpx.AsyncClient(transport=transport(seeded.api), base_url="http://t") as client:
        csrf = await form_csrf(client)
        wrong = await client.post(
            "/console/sign-in", data={"token": "tg_" + "x" * 40, "csrf": csrf}
        )
        assert wrong.status_code == 401 and "unknown, revoked or expired" in wrong.text
        detector, _ = await seeded.api.runtime.tokens.create("det", Role.DETECTOR, actor="t")
        refused = await client.post("/console/sign-in", data={"token": detector, "csrf": csrf})
        assert refused.status_code == 403 and "detector token cannot open" in refused.text
        assert "set-cookie" not in refused.headers
        # Only console paths are followed after sign-in (no open redirect).
        auditor, _ = await seeded.api.runtime.tokens.create("aud", Role.AUDITOR, actor="t")
        away = await client.post(
            "/console/sign-in", data={"token": auditor, "next": "//evil.example/x", "csrf": csrf}
        )
        assert away.headers["location"] == "/console"


async def test_tampered_or_foreign_cookies_are_refused(seeded: Seeded) -> None:
    async with signed_in(seeded.api) as client:
        value = client.cookies["tollgate_console"]
        version, token_id, expires, nonce, signature = value.split(".")
        forged = ".".join([version, token_id, str(int(expires) + 86400), nonce, signature])
        client.cookies.set("tollgate_console", forged, domain="tollgate.test", path="/console")
        assert (await client.get("/console")).status_code == 303
    # Signed under another secret: what another deployment would issue.
    other, _ = sessions.issue(
        replace(seeded.api.settings, console_secret="another secret"),
        Principal(token_id, "x", Role.ADMIN),
    )
    assert sessions.token_id_of(seeded.api.settings, other) is None


async def test_revoking_the_token_ends_its_sessions(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sessions, "CACHE_SECONDS", 0.0)
    async with signed_in(seeded.api, Role.REVIEWER) as client:
        assert (await client.get("/console/connectors")).status_code == 200
        token_id = client.cookies["tollgate_console"].split(".")[1]
        await seeded.api.runtime.tokens.revoke(token_id, actor="tests")
        assert (await client.get("/console/connectors")).status_code == 303


async def test_a_cross_site_sign_in_form_signs_nobody_in(seeded: Seeded) -> None:
    """Login CSRF: a page elsewhere auto-posts the sign-in form with its author's token."""
    attacker, _ = await seeded.api.runtime.tokens.create("attacker", Role.ADMIN, actor="t")
    async with httpx.AsyncClient(transport=transport(seeded.api), base_url="http://t") as victim:
        csrf = await form_csrf(victim)  # even a victim who once opened the real form
        posts = [
            ({"Origin": "http://evil.example"}, {"token": attacker}),
            ({"Origin": "http://evil.example"}, {"token": attacker, "csrf": csrf}),
            ({"Sec-Fetch-Site": "cross-site"}, {"token": attacker, "csrf": csrf}),
            ({}, {"token": attacker}),
            # A forged token: one character changed (never "changed" to itself).
            ({}, {"token": attacker, "csrf": ("y" if csrf[0] == "x" else "x") + csrf[1:]}),
        ]
        for headers, form in posts:
            response = await victim.post("/console/sign-in", data=form, headers=headers)
            assert response.status_code == 403, (headers, form.keys())
            assert "tollgate_console" not in response.headers.get("set-cookie", "")
            assert (await victim.get("/console")).status_code == 303, "nobody is signed in"
        same_site = await victim.post(
            "/console/sign-in",
            data={"token": attacker, "csrf": csrf},
            headers={"Origin": "http://t"},
        )
        assert same_site.status_code == 303, "the console's own form still works"


async def test_a_cross_site_sign_out_form_is_refused(seeded: Seeded) -> None:
    async with signed_in(seeded.api) as client:
        csrf = await form_csrf(client, "/console")
        for headers, form in [({"Origin": "http://evil.example"}, {"csrf": csrf}), ({}, {})]:
            response = await client.post("/console/sign-out", data=form, headers=headers)
            assert response.status_code == 403
            assert (await client.get("/console")).status_code == 200, "still signed in"


async def test_sign_out_forgets_the_session(auditor: httpx.AsyncClient) -> None:
    csrf = await form_csrf(auditor, "/console")
    response = await auditor.post("/console/sign-out", data={"csrf": csrf})
    assert response.status_code == 303 and response.headers["location"] == "/console/sign-in"
    assert "tollgate_console" not in auditor.cookies
    assert (await auditor.get("/console")).status_code == 303


# -- the timeline ----------------------------------------------------------------------


async def test_timeline_lists_events_newest_first(
    seeded: Seeded, auditor: httpx.AsyncClient
) -> None:
    page = await auditor.get("/console")
    assert page.status_code == 200
    seqs = [int(s) for s in re.findall(r'<td class="mono muted">(\d+)</td>', page.text)]
    assert len(seqs) == 50 and seqs == sorted(seqs, reverse=True)
    assert "Older events" in page.text
    older = await auditor.get(f"/console?cursor={seqs[-1]}")
    more = [int(s) for s in re.findall(r'<td class="mono muted">(\d+)</td>', older.text)]
    assert more and max(more) < seqs[-1]
    assert_no_key_ids(seeded, page.text + older.text)


@pytest.mark.parametrize(
    ("query", "expected_rule"),
    [
        ("action_type=block", "intel.known_range"),
        ("rule=graduated.repeat_offense", "graduated.repeat_offense"),
    ],
)
async def test_timeline_filters_by_action_type_and_rule(
    seeded: Seeded, auditor: httpx.AsyncClient, query: str, expected_rule: str
) -> None:
    page = await auditor.get(f"/console?{query}")
    assert page.status_code == 200
    rules = set(re.findall(r'<td class="mono">([a-z_]+\.[a-z_]+)</td>', page.text))
    assert rules == {expected_rule}, rules


async def test_timeline_filters_by_provider_actor_revision_and_time(
    seeded: Seeded, auditor: httpx.AsyncClient
) -> None:
    revision = seeded.results[0]["policy_revision"]
    by_revision = await auditor.get(f"/console?revision={revision[:10]}&event=decision.recorded")
    assert by_revision.text.count("decision.recorded</span>") == len(seeded.results)
    lab_b = await auditor.get("/console?provider=lab-b")
    providers = set(re.findall(r"<td>(lab-[a-z])</td>", lab_b.text))
    assert providers == {"lab-b"}
    by_actor = await auditor.get("/console?actor=edge")
    assert "action.applied" in by_actor.text
    assert set(re.findall(r"<td>(edge|tollgate|test-admin)</td>", by_actor.text)) == {"edge"}
    future = await auditor.get("/console?since=2100-01-01T00:00")
    assert "No events." in future.text
    bad = await auditor.get("/console?since=yesterday")
    assert "is not a date and time" in bad.text


async def test_timeline_names_api_keys_by_handle_only(
    seeded: Seeded, auditor: httpx.AsyncClient
) -> None:
    key_id = next(
        a["target"]["value"]
        for a in seeded.actions("revoke_key")
        if a["target"]["kind"] == "api_key"
    )
    typed = await auditor.get(f"/console?subject_kind=api_key&subject={key_id}")
    assert typed.status_code == 303
    location = unquote(typed.headers["location"])
    assert key_id not in location and key_handle(key_id) in location
    page = await auditor.get(location)
    assert page.status_code == 200
    assert "revoke_key" in page.text and key_handle(key_id) in page.text
    assert_no_key_ids(seeded, page.text)
    unknown = await auditor.get("/console?subject=key:000000000000")
    assert "no API key with handle" in unknown.text


# -- subject, action, policies, connectors, audit -------------------------------------


async def test_subject_page_tells_the_story(seeded: Seeded, auditor: httpx.AsyncClient) -> None:
    # One the connector serves (it enforces lab-a's actions).
    action = next(a for a in seeded.actions("revoke_key") if a["provider"] == "lab-a")
    key_id = action["target"]["value"]
    page = await auditor.get(
        "/console/subject", params={"kind": "api_key", "value": key_handle(key_id)}
    )
    assert page.status_code == 200
    assert f"/console/actions/{action['id']}" in page.text
    assert "verdict.received" in page.text and "Verdicts" in page.text
    assert_no_key_ids(seeded, page.text)
    raw = await auditor.get("/console/subject", params={"kind": "api_key", "value": key_id})
    assert raw.status_code == 422 and "handle" in raw.text
    exempt = await auditor.get(
        "/console/subject", params={"kind": "account", "value": "acct_meridian"}
    )
    assert "MSA 2026-031" in exempt.text, "the exemption's reason"


async def test_action_page_goes_from_verdict_to_gateway(
    seeded: Seeded, auditor: httpx.AsyncClient
) -> None:
    # One the connector serves (it enforces lab-a's actions).
    action = next(a for a in seeded.actions("revoke_key") if a["provider"] == "lab-a")
    page = await auditor.get(f"/console/actions/{action['id']}")
    assert page.status_code == 200, page.text
    text = page.text
    assert action["policy_revision"][:16] in text
    assert "matches the stored result" in text
    assert action["rule"] in text
    # The rule's METADATA title, from the revision's Rego.
    assert re.search(r'<div class="rule mine">.*?<strong>[^<]+</strong></div>', text, re.S)
    # The memory connector applied it, and said so in the audit trail.
    assert re.search(r"edge <span class=\"muted\">memory</span>.*?badge applied", text, re.S)
    assert "action.applied" in text
    # The trace, as a waterfall with this verdict's pipeline and the connector.
    bars = re.findall(r'<span class="mono">([a-z.]+|POST [^<]+)</span>', text)
    for name in ("verdict.ingest", "policy.evaluate", "action.plan", "connector.apply"):
        assert name in bars, (name, bars)
    assert bars.count("verdict.ingest") == 1, "other verdicts of the batch are folded away"
    assert "folded away" in text
    everything = await auditor.get(f"/console/actions/{action['id']}?all=1")
    assert everything.text.count(">verdict.ingest</span>") == len(seeded.results)
    assert_no_key_ids(seeded, text + everything.text)
    missing = await auditor.get("/console/actions/act_missing")
    assert missing.status_code == 404 and "no action" in missing.text


async def test_policies_page_shows_revisions_changes_and_rejections(
    seeded: Seeded, auditor: httpx.AsyncClient
) -> None:
    api = seeded.api
    first = seeded.results[0]["policy_revision"]
    policies = Path(api.settings.policy_dir)
    module = policies / "tollgate" / "graduated" / "graduated.rego"
    original = module.read_text(encoding="utf-8")
    broken = policies / "tollgate" / "config" / "zz_broken_test.rego"
    try:
        # A passing change (a rule's documentation), then a rejected one (a failing test).
        module.write_text(
            original.replace("Escalates with the evidence", "Escalates with the evidence (v2)"),
            encoding="utf-8",
        )
        await api.runtime.sync_policies()
        second = (await api.client.get("/v1/policies")).json()["active"]
        assert second != first
        broken.write_text(
            "package tollgate.config_test\n\nimport rego.v1\n\ntest_fails if false\n",
            encoding="utf-8",
        )
        await api.runtime.sync_policies()
        page = await auditor.get("/console/policies")
    finally:
        broken.unlink(missing_ok=True)
        module.write_text(original, encoding="utf-8")
        await api.runtime.sync_policies()
    assert page.status_code == 200
    text = page.text
    assert "badge rejected" in text and "test_fails" in text
    assert "changed tollgate/graduated/graduated.rego" in text
    assert "added tollgate/config/zz_broken_test.rego" in text
    assert "first revision recorded" in text and first[:20] in text
    assert "activate" in text
    changed = await auditor.get(f"/console/policies/{second}")
    assert changed.status_code == 200
    assert '<div class="add">' in changed.text and "(v2)" in changed.text
    assert first in changed.text, "compared with the revision before it"


async def test_connectors_and_audit_pages(auditor: httpx.AsyncClient) -> None:
    connectors = await auditor.get("/console/connectors")
    assert connectors.status_code == 200
    assert "edge" in connectors.text and "badge healthy" in connectors.text
    audit = await auditor.get("/console/audit")
    assert audit.status_code == 200
    assert "badge ok" in audit.text and "intact" in audit.text


async def test_static_css_is_served(seeded: Seeded) -> None:
    async with httpx.AsyncClient(transport=transport(seeded.api), base_url="http://t") as anon:
        css = await anon.get("/console/static/console.css")
        assert css.status_code == 200 and ".wf-bar" in css.text


async def test_audit_page_shows_a_broken_chain(fresh_api: Running) -> None:
    await fresh_api.submit(verdict())
    async with fresh_api.runtime.db.write() as session, session.begin():
        await session.execute(
            update(AuditEventRow)
            .where(col(AuditEventRow.type) == "decision.recorded")
            .values(actor="someone-else")
        )
    async with signed_in(fresh_api) as client:
        page = await client.get("/console/audit")
    assert page.status_code == 200
    assert "badge broken" in page.text and "(hash)" in page.text


async def test_connector_failures_never_show_the_key(seeded: Seeded) -> None:
    api = seeded.api
    key_id = f"key_refused_{secrets.token_hex(4)}"
    memory = api.runtime.enforcer._running["edge"].connector
    assert isinstance(memory, MemoryConnector)
    memory.refuse.add(("rate_limit", "api_key", key_id))
    try:
        await api.submit(verdict(subject=new_subject() | {"api_key_id": key_id}))
        await api.runtime.enforcer.settle()
        async with signed_in(api) as client:
            connectors = await client.get("/console/connectors")
            failed = await client.get("/console?event=action.failed")
    finally:
        memory.refuse.clear()
        await api.runtime.enforcer.reconcile("edge")
    assert "refused by the gateway" in connectors.text
    assert key_handle(key_id) in connectors.text and key_id not in connectors.text
    assert "refused by the gateway" in failed.text and key_id not in failed.text
