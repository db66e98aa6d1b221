"""References on NGINX's refusals and account or org suspensions, against a real NGINX
1.22 (`nginx_fixtures.py`): every 403, 401 and 429 names the reference of the entry that
refused it (the header always, the JSON body where NGINX writes it), and
`decision explain` and an appeal take that reference; a suspended account or org is
refused whatever key it comes with, through the headers a trusted layer in front sets,
until the suspension is lifted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.nginx import NginxConnector
from controlplane.auth.roles import Role
from controlplane.enforce.sdk import ConnectorConfig, ConnectorError, Diff, Entry, EntryType
from tests.integration.connectors.nginx_fixtures import (  # noqa: F401 (fixtures)
    Nginx,
    backend_fixture,
    nginx_binary_fixture,
    nginx_fixture,
    nginx_stopped_fixture,
)
from tests.support.app import Running, make_settings, serve
from tests.support.verdicts import new_subject, operation_verdict, unique, verdict

OK = 200
HEADERS = {"account_header": "X-Account-Id", "org_header": "X-Org-Id"}
"""The connector's options naming the headers the authenticating layer in front sets."""


def suspend(value: str, kind: str = "account") -> Entry:
    return Entry(EntryType.SUSPEND, kind, value)


def caller(account: str = "", org: str = "") -> dict[str, str]:
    """The headers a trusted layer in front sets for the caller."""
    headers = {"X-Account-Id": account, "X-Org-Id": org}
    return {name: value for name, value in headers.items() if value}


async def put(connector: NginxConnector, *entries: Entry) -> None:
    result = await connector.apply(Diff(add=entries))
    assert not result.failed and not result.rejected, (result.failed, result.rejected)


def quoted(response: httpx.Response) -> str:
    """The reference a refusal quotes in its header; the JSON body, where NGINX wrote it,
    must say the same."""
    reference = response.headers["x-tollgate-reference"]
    if response.headers.get("content-type", "").startswith("application/json"):
        assert response.json()["reference"] == reference
    return reference


# -- the connector ------------------------------------------------------------------------


async def test_every_refusal_quotes_the_reference_of_the_entry_that_refused(
    nginx: Nginx,
) -> None:
    connector = nginx.connector(**HEADERS)
    blocked = Entry(EntryType.BLOCK, "ip", "127.0.0.2")
    account, org = suspend("acct_sus"), suspend("org_sus", "org")
    revoked = Entry(EntryType.REVOKE_KEY, "api_key", "key_ref")
    limited = Entry(EntryType.RATE_LIMIT, "api_key", "key_lim", 10)
    stopped = Entry(EntryType.RATE_LIMIT, "api_key", "key_zero", 0)
    await put(connector, blocked, account, org, revoked, limited, stopped)

    cases: list[tuple[Entry, int, httpx.Response]] = [
        (blocked, 403, await nginx.response("127.0.0.2", "key_ref")),  # the first list wins
        (account, 403, await nginx.response(key="key_new", **caller("acct_sus", "org_x"))),
        (org, 403, await nginx.response(key="key_new", **caller("acct_x", "org_sus"))),
        (revoked, 401, await nginx.response(key="key_ref")),
        (stopped, 429, await nginx.response(key="key_zero")),
    ]
    for entry, status, response in cases:
        assert response.status_code == status, (entry, response.text)
        assert response.headers["content-type"] == "application/json"
        assert response.json()["reference"] == entry.reference, entry
        assert quoted(response) == entry.reference, entry

    assert await nginx.statuses(10, key="key_lim") == [OK] * 10
    past = await nginx.response(key="key_lim")  # refused by limit_req: NGINX's own body
    assert past.status_code == 429 and quoted(past) == limited.reference

    served = await nginx.response(key="key_fine", **caller("acct_fine", "org_fine"))
    assert served.status_code == OK and "x-tollgate-reference" not in served.headers


async def test_a_suspension_refuses_every_key_of_the_account_until_it_is_lifted(
    nginx: Nginx,
) -> None:
    connector = nginx.connector(**HEADERS)
    account, org = suspend("acct_gone"), suspend("org_gone", "org")
    await put(connector, account, org)
    assert (await connector.observe()).entries == {account, org}

    for key in ("key_a", "key_never_seen", None):
        assert (await nginx.response(key=key, **caller("acct_gone"))).status_code == 403
        assert (await nginx.response(key=key, **caller("acct_y", "org_gone"))).status_code == 403
    assert (await nginx.response(key="key_a", **caller("acct_other", "org_y"))).status_code == OK
    assert (await nginx.response(key="key_a")).status_code == OK  # no header, no account

    result = await connector.apply(Diff(remove=(account, org)))
    assert sorted(e.key for e in result.done) == sorted([account.key, org.key])
    assert (await nginx.response(key="key_a", **caller("acct_gone", "org_gone"))).status_code == OK
    assert (await connector.observe()).entries == frozenset()


async def test_suspensions_need_the_header_that_names_their_kind(nginx: Nginx) -> None:
    bare = nginx.connector()
    assert EntryType.SUSPEND not in bare.capabilities()
    accounts_only = nginx.connector(account_header="X-Account-Id")
    assert EntryType.SUSPEND in accounts_only.capabilities()

    result = await accounts_only.apply(Diff(add=(suspend("acct_1"), suspend("org_1", "org"))))

    assert result.done == [suspend("acct_1")]
    [(entry, why)] = result.rejected
    assert entry == suspend("org_1", "org") and "options.org_header" in why
    assert (await nginx.response(**caller("acct_1"))).status_code == 403
    assert (await nginx.response(**caller("acct_2", "org_1"))).status_code == OK


async def test_account_ids_that_could_break_the_configuration_are_refused(nginx: Nginx) -> None:
    connector = nginx.connector(**HEADERS)
    await put(connector, suspend("acct_ok"), suspend("default"))  # a map keyword, escaped
    before = (nginx.include_dir / "suspended_account.conf").read_bytes()
    hostile = [
        suspend('acct"; return 200 "'),
        suspend("acct with space"),
        suspend("x" * 300),
        suspend("ACCT_OK"),  # maps ignore case: the twin of a held one would shadow it
    ]

    result = await connector.apply(Diff(add=tuple(hostile)))

    assert not result.done
    assert {entry for entry, _ in (*result.rejected, *result.failed)} == set(hostile)
    assert (nginx.include_dir / "suspended_account.conf").read_bytes() == before
    assert (await nginx.response(**caller("acct_ok"))).status_code == 403
    assert (await nginx.response(**caller("default"))).status_code == 403
    assert (await nginx.response(**caller("acct_fine"))).status_code == OK  # not everyone


def test_bad_header_options_are_refused_naming_the_option() -> None:
    cases: list[tuple[dict[str, str], str]] = [
        ({"account_header": "X_Account_Id"}, "account_header"),
        ({"org_header": "X-Org Id"}, "org_header"),
        ({"account_header": "x-api-key"}, "must be different"),
        ({"account_header": "X-Who", "org_header": "x-who"}, "must be different"),
    ]
    for options, words in cases:
        config = ConnectorConfig("edge-nginx", "nginx", ("*",), options)
        with pytest.raises(ConnectorError, match=words) as caught:
            NginxConnector(config, httpx.AsyncClient())
        assert caught.value.retryable is False


# -- through Tollgate ---------------------------------------------------------------------


@pytest.fixture
async def tollgate(nginx: Nginx, database_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    connector = {
        "name": "edge-nginx",
        "type": "nginx",
        "providers": ["lab-a"],
        "reconcile_seconds": 3600,
        "options": nginx.options(**HEADERS),
    }
    data = tmp_path / "data"
    data.mkdir()
    async with serve(make_settings(database_url, data, connectors=[connector])) as running:
        await running.runtime.enforcer.settle()
        yield running


async def submit(api: Running, document: dict[str, Any]) -> list[dict[str, Any]]:
    [result] = (await api.submit(document))["results"]
    await api.runtime.enforcer.settle()
    actions: list[dict[str, Any]] = result["actions"]
    return actions


def appeal(subject: dict[str, str], reference: str) -> dict[str, Any]:
    return {
        "subject": subject,
        "provider": "lab-a",
        "reference": reference,
        "statement": "our evaluation harness, not distillation",
        "contact": "ops@customer.example",
    }


async def test_a_suspended_operation_is_refused_with_a_reference_that_explains_and_appeals(
    tollgate: Running, nginx: Nginx
) -> None:
    account, org = unique("acct_op"), unique("org_op")
    keys = [unique("key_op") for _ in range(3)]
    fresh = unique("key_op_next")  # never seen by any detector
    assert (await nginx.response(key=fresh, **caller(account, org))).status_code == OK

    types: list[str] = []
    for n, key in enumerate(keys):
        actions = await submit(tollgate, operation_verdict(account, key, org, f"192.0.2.{40 + n}"))
        types = sorted(a["type"] for a in actions)
    assert "suspend" in types  # the third key shows the rotation

    refused = await nginx.response(key=fresh, **caller(account, org))
    assert refused.status_code == 403
    reference = quoted(refused)
    other = await nginx.response(key=unique("key_other"), **caller(unique("acct_other")))
    assert other.status_code == OK

    explained = await tollgate.client.get(f"/v1/decisions/{reference}/explain")
    assert explained.status_code == 200, explained.text
    support = await tollgate.token(Role.SUPPORT, "support")
    reviewer = await tollgate.token(Role.REVIEWER, "reviewer")
    subject = {"kind": "account", "value": account}
    filed = await tollgate.client.post(
        "/v1/appeals", json=appeal(subject, reference), headers=support
    )
    assert filed.status_code == 201, filed.text
    covered = {c["action"]["type"]: c["action"] for c in filed.json()["actions"]}
    assert covered["suspend"]["target"] == {"kind": "account", "value": account}
    assert covered["suspend"]["reference"] == reference

    upheld = await tollgate.client.post(
        f"/v1/appeals/{filed.json()['id']}/uphold",
        json={"reason": "confirmed evaluation workload"},
        headers=reviewer,
    )
    assert upheld.status_code == 200, upheld.text
    await tollgate.runtime.enforcer.settle()
    assert (await nginx.response(key=fresh, **caller(account, org))).status_code == OK


async def test_a_rate_limited_key_is_refused_with_a_reference_that_explains_and_appeals(
    tollgate: Running, nginx: Nginx
) -> None:
    subject = new_subject()
    key = subject["api_key_id"]
    [limit] = await submit(tollgate, verdict(subject=subject))
    assert limit["type"] == "rate_limit"

    statuses = []
    response = await nginx.response(key=key)
    while response.status_code == OK and len(statuses) < 200:
        statuses.append(response.status_code)
        response = await nginx.response(key=key)
    assert response.status_code == 429, statuses
    reference = quoted(response)
    assert reference == limit["reference"]

    explained = await tollgate.client.get(f"/v1/decisions/{reference}/explain")
    assert explained.status_code == 200, explained.text
    assert explained.json()["verdict_id"] == limit["verdict_id"]
    support = await tollgate.token(Role.SUPPORT, "support")
    filed = await tollgate.client.post(
        "/v1/appeals",
        json=appeal({"kind": "api_key", "value": key}, reference.lower()),
        headers=support,
    )
    assert filed.status_code == 201, filed.text
    assert [c["action"]["id"] for c in filed.json()["actions"]] == [limit["id"]]
