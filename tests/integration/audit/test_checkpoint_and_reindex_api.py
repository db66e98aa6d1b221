"""`POST /v1/audit/checkpoint` and `POST /v1/audit/reindex`: what `tollgate audit
checkpoint` and `audit reindex` do through a server. The server signs with its own key
(none: a 409 naming the setting), never over a broken chain, and only for auditors and
admins; the index is rebuilt from the chain."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controlplane.audit.keys import generate, load_public_key, signature_valid
from controlplane.auth.roles import Role
from controlplane.store.models import AuditCheckpointRow, AuditEventRow, AuditSubjectRow
from tests.integration.audit import tampering
from tests.support.app import Running, make_settings, serve
from tests.support.store import count
from tests.support.verdicts import new_subject, verdict


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("keys")
    generate(directory / "audit.pem", directory / "audit.pub.pem")
    return directory / "audit.pem", directory / "audit.pub.pem"


@pytest.fixture
async def signing_api(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, key_files: tuple[Path, Path]
) -> AsyncIterator[Running]:
    """A server of its own (one test breaks its chain) that holds a signing key; its
    periodic checkpoint is an hour away, so every checkpoint here is asked for."""
    settings = dataclasses.replace(
        make_settings(database_url, tmp_path_factory.mktemp("data")),
        audit_signing_key_file=key_files[0],
        audit_checkpoint_seconds=3600,
    )
    async with serve(settings) as running:
        yield running


async def test_the_server_signs_the_head_with_its_key_once(
    signing_api: Running, key_files: tuple[Path, Path]
) -> None:
    api = signing_api
    await api.submit({"verdicts": [verdict(), verdict()]})
    head = await count(api.runtime.db, AuditEventRow)

    signed = await api.client.post("/v1/audit/checkpoint")

    assert signed.status_code == 200, signed.text
    body = signed.json()
    assert body["new"] is True and body["seq"] == head
    assert signature_valid(load_public_key(key_files[1]), head, body["hash"], body["signature"])
    again = await api.client.post("/v1/audit/checkpoint")
    assert again.status_code == 200, again.text
    assert again.json() == {**body, "new": False}, "the head did not move: nothing new signed"
    assert await count(api.runtime.db, AuditCheckpointRow) == 1
    verified = (await api.client.get("/v1/audit/verify")).json()
    assert verified["checkpoints_verified"] == 1 and verified["authenticated_through_seq"] == head


async def test_only_auditors_and_admins_sign_and_reindex(signing_api: Running) -> None:
    api = signing_api
    auditor = await api.token(Role.AUDITOR, "auditor")
    assert (await api.client.post("/v1/audit/checkpoint", headers=auditor)).status_code == 200
    assert (await api.client.post("/v1/audit/reindex", headers=auditor)).status_code == 200
    for role in (Role.ENGINEER, Role.REVIEWER, Role.DETECTOR, Role.SUPPORT):
        headers = await api.token(role, role.value)
        for path in ("/v1/audit/checkpoint", "/v1/audit/reindex"):
            refused = await api.client.post(path, headers=headers)
            assert refused.status_code == 403, (role, path, refused.text)
            assert f"role {role.value} may not do this" in refused.json()["message"]
    assert await count(api.runtime.db, AuditCheckpointRow) == 1, "only the auditor's"


async def test_nothing_is_signed_over_a_broken_chain(signing_api: Running) -> None:
    api = signing_api
    await api.submit({"verdicts": [verdict(), verdict()]})
    await tampering.edit_actor(api.runtime.db, 2, "somebody else")

    refused = await api.client.post("/v1/audit/checkpoint")

    assert refused.status_code == 409, refused.text
    assert refused.json()["message"].startswith("the audit chain is broken at seq 2")
    assert await count(api.runtime.db, AuditCheckpointRow) == 0


async def test_a_server_without_a_key_answers_409_naming_the_setting(api: Running) -> None:
    refused = await api.client.post("/v1/audit/checkpoint")

    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["error"] == "conflict"
    assert body["message"].startswith(
        "this server has no audit signing key: set TOLLGATE_AUDIT_SIGNING_KEY_FILE on the server"
    )
    assert await count(api.runtime.db, AuditCheckpointRow) == 0


async def test_reindex_rebuilds_the_subject_index_from_the_chain(signing_api: Running) -> None:
    api = signing_api
    subject = new_subject()
    await api.submit(verdict(subject=subject))
    query = {"subject_kind": "account", "subject_value": subject["account_id"]}
    found = (await api.client.get("/v1/audit", params=query)).json()["items"]
    assert found, "indexed before the query answers"
    # Someone empties the index (it is outside the hashes): the subject's events vanish.
    await tampering.sql(api.runtime.db, "DELETE FROM audit_subject")
    assert await count(api.runtime.db, AuditSubjectRow) == 0
    assert (await api.client.get("/v1/audit", params=query)).json()["items"] == []

    rebuilt = await api.client.post("/v1/audit/reindex")

    assert rebuilt.status_code == 200, rebuilt.text
    assert rebuilt.json() == {"indexed": await count(api.runtime.db, AuditEventRow)}
    about = (await api.client.get("/v1/audit", params=query)).json()["items"]
    assert about == found
    assert {"verdict.received", "action.planned"} <= {e["type"] for e in about}
