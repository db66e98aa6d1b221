"""`GET /v1/audit/verify` and `GET /v1/audit/export` on a server that signs checkpoints:
exports verify offline, and a rewrite of the database shows in both."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.audit.checkpoints import checkpoint_job
from controlplane.audit.keys import generate, load_public_key, load_signer
from controlplane.audit.verify import verify_file
from controlplane.errors import InvalidInput
from tests.integration.audit import tampering
from tests.support.app import Running, make_settings, serve
from tests.support.verdicts import verdict


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("keys")
    generate(directory / "audit.pem", directory / "audit.pub.pem")
    return directory / "audit.pem", directory / "audit.pub.pem"


@pytest.fixture
async def signing_api(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, key_files: tuple[Path, Path]
) -> AsyncIterator[Running]:
    """A server of its own (tests here tamper with its database) that signs checkpoints."""
    settings = dataclasses.replace(
        make_settings(database_url, tmp_path_factory.mktemp("data")),
        audit_signing_key_file=key_files[0],
        audit_checkpoint_seconds=3600,
    )
    async with serve(settings) as running:
        yield running


async def verify(api: Running) -> dict[str, Any]:
    response = await api.client.get("/v1/audit/verify")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_the_server_signs_and_verifies_with_its_key(
    signing_api: Running, key_files: tuple[Path, Path]
) -> None:
    api = signing_api
    assert api.runtime.scheduler.get_job("audit_checkpoint") is not None
    await api.submit({"verdicts": [verdict(), verdict()]})
    signer = load_signer(key_files[0])
    await checkpoint_job(api.runtime.db, signer)
    await api.submit(verdict())

    body = await verify(api)

    assert body["ok"] is True and body["broken"] is None
    assert body["signatures_checked"] is True and body["key_ids"] == [signer.key_id]
    assert body["checkpoints"] == body["checkpoints_verified"] == 1
    assert 0 < body["authenticated_through_seq"] < body["last_seq"] == body["events"]
    assert any("not yet covered" in w for w in body["warnings"])


async def test_a_rewrite_shows_in_verify_and_in_the_export(
    signing_api: Running, key_files: tuple[Path, Path], tmp_path: Path
) -> None:
    api = signing_api
    await api.submit({"verdicts": [verdict() for _ in range(3)]})
    await checkpoint_job(api.runtime.db, load_signer(key_files[0]))
    head = (await verify(api))["last_seq"]

    await tampering.rehash_after_edit(api.runtime.db, 3, "nobody")

    body = await verify(api)
    assert body["ok"] is False
    assert body["broken"]["kind"] == "checkpoint" and body["broken"]["seq"] == head
    exported = tmp_path / "audit.csv"
    response = await api.client.get("/v1/audit/export", params={"format": "csv"})
    exported.write_bytes(response.content)
    public = load_public_key(key_files[1])
    report = verify_file(exported, {load_signer(key_files[0]).key_id: public})
    assert report.broken is not None and report.broken.kind == "checkpoint"


@pytest.mark.parametrize(
    ("name", "media_type"), [("jsonl", "application/x-ndjson"), ("csv", "text/csv")]
)
async def test_exports_stream_and_verify_offline(
    api: Running, tmp_path: Path, name: str, media_type: str
) -> None:
    await api.submit({"verdicts": [verdict(), verdict()]})

    response = await api.client.get("/v1/audit/export", params={"format": name})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(media_type)
    assert f"tollgate-audit.{name}" in response.headers["content-disposition"]
    path = tmp_path / f"audit.{name}"
    path.write_bytes(response.content)
    report = verify_file(path, None)
    assert report.ok, report.broken
    assert report.first_seq == 1 and report.events == report.last_seq
    assert report.events >= 6


async def test_a_time_window_exports_a_contiguous_run(api: Running, tmp_path: Path) -> None:
    whole = (await api.client.get("/v1/audit/export")).text.splitlines()
    events = [json.loads(line) for line in whole if '"record":"event"' in line]
    since, until = events[len(events) // 3]["at"], events[2 * len(events) // 3]["at"]

    response = await api.client.get("/v1/audit/export", params={"since": since, "until": until})

    path = tmp_path / "window.jsonl"
    path.write_bytes(response.content)
    report = verify_file(path, None)
    assert report.ok, report.broken
    assert report.first_seq is not None and report.first_seq > 1
    assert report.last_seq is not None and report.last_seq < events[-1]["seq"]
    inside = [e["seq"] for e in events if since <= e["at"] < until]
    assert report.first_seq <= min(inside) and max(inside) <= report.last_seq


async def test_an_empty_window_is_a_valid_empty_export(api: Running, tmp_path: Path) -> None:
    response = await api.client.get(
        "/v1/audit/export", params={"format": "csv", "since": "2999-01-01T00:00:00Z"}
    )
    path = tmp_path / "empty.csv"
    path.write_bytes(response.content)

    report = verify_file(path, None)

    assert report.ok and report.events == 0


async def test_bad_export_parameters_are_named(api: Running) -> None:
    wrong = await api.client.get("/v1/audit/export", params={"format": "xml"})
    naive = await api.client.get("/v1/audit/export", params={"until": "2026-01-01T00:00:00"})

    assert wrong.status_code == 422 and wrong.json()["details"][0]["field"] == "format"
    assert naive.status_code == 422 and "until" in naive.json()["message"]


async def test_an_unreadable_signing_key_stops_the_start(database_url: str, tmp_path: Path) -> None:
    settings = dataclasses.replace(
        make_settings(database_url, tmp_path), audit_signing_key_file=tmp_path / "missing.pem"
    )
    with pytest.raises(InvalidInput, match="TOLLGATE_AUDIT_SIGNING_KEY_FILE: cannot read"):
        async with serve(settings):
            pass
