"""The OpenAPI document is the API: schemathesis generates requests from it, valid and
invalid, sends them to a live server and runs every check it has (no 5xx, only
documented statuses, content types and headers, responses matching their schemas,
invalid data refused, valid data accepted, auth not ignored, ...). It must find nothing.

Bounded: a fixed seed, a few examples per operation and a time budget, so the run is
the same every time and takes about a minute on two cores.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.auth.roles import Role
from tests.support.app import make_settings
from tests.support.databases import sqlite_url
from tests.support.live import live_server

ST = Path(sys.executable).parent / "st"
BUDGET_SECONDS = 75
RUN_TIMEOUT = 300

CONFIG = f"""
seed = 20261126
max-time = {BUDGET_SECONDS}
workers = 1

[checks]
enabled = true

[generation]
max-examples = 12
database = "none"
# NUL characters are refused in every string (documented on each 422); JSON Schema
# cannot say so for free-form evidence, so they are tested in test_hostile_bodies.
allow-x00 = false

# OPTIONS is the framework's answer about what a path allows (its Allow header): it
# says nothing about a resource, so it answers the same before and after a DELETE.
[[operations]]
include-method = "OPTIONS"
checks.use_after_free.enabled = false

# Valid by the schema yet refused, for reasons no JSON Schema can state:
[[operations]]
# whether a string is a CIDR, and the provider's prefix floor
include-operation-id = "addIndicators"
checks.positive_data_acceptance.enabled = false

[[operations]]
# uploaded Rego must compile and define the entrypoint; revisions must exist
include-operation-id = "policyImpact"
checks.positive_data_acceptance.enabled = false

[[operations]]
# whether a value is an account id, an IP or a CIDR depends on the kind
include-operation-id = "subjectHistory"
checks.positive_data_acceptance.enabled = false

[[operations]]
# subject_kind and subject_value go together (OpenAPI cannot tie two parameters)
include-operation-id = "listAuditEvents"
checks.positive_data_acceptance.enabled = false

[[operations]]
# one of ip and range is needed (OpenAPI cannot tie two parameters), and whether a
# string is a CIDR
include-operation-id = "liveDecisions"
checks.positive_data_acceptance.enabled = false

[[operations]]
# since must be before until, whose default is now (OpenAPI cannot compare two values)
include-operation-id = "remediationReport"
checks.positive_data_acceptance.enabled = false

[[operations]]
# whether a subject's value is an account id, an IP or a CIDR depends on its kind, and
# the provider must be one this server serves (for exemptions, with its prefix floor)
include-operation-id = "fileAppeal"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-operation-id = "addExemption"
checks.positive_data_acceptance.enabled = false

[[operations]]
# exempt_for is a sum of periods that must come to 1m..366d (no pattern can add)
include-operation-id = "upholdAppeal"
checks.positive_data_acceptance.enabled = false

[[operations]]
# expires is a sum of periods like 30m or 7d that must come to more than nothing
include-operation-id = "createToken"
checks.positive_data_acceptance.enabled = false

[[operations]]
# match[version] is `first`, `last`, `all` or a list of RFC 3339 times (JSON Schema
# has a format for one time, not for a comma-separated list)
include-operation-id = "taxiiObjects"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-operation-id = "taxiiManifest"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-operation-id = "taxiiObject"
checks.positive_data_acceptance.enabled = false
"""


async def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    if not ST.exists():
        pytest.fail(f"schemathesis is not installed ({ST}): pip install -e '.[dev]'")
    url = sqlite_url(tmp_path)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG, encoding="utf-8")
    settings = make_settings(url, tmp_path)

    async with live_server(settings, roles=(Role.ADMIN,)) as server:
        run = await asyncio.to_thread(
            subprocess.run,
            [
                str(ST),
                "--config-file",
                str(config),
                "run",
                f"{server.url}/schema/openapi.json",
                "--header",
                f"Authorization: Bearer {server.tokens[Role.ADMIN]}",
                "--no-color",
                "--output-truncate",
                "true",
            ],
            cwd=tmp_path,  # its cache folder lands here, not in the work tree
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )

    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-20_000:]
    assert "No issues found" in report or " passed" in report, report[-5_000:]
