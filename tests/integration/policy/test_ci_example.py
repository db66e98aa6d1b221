"""docs/examples/policy-ci.yml runs as written in a lab's own policy repository: its
steps are run by bash, as GitHub's runner would, in a git repository holding a copy of
the policies, against a real Tollgate server on 127.0.0.1. Only two things are not
the real ones: the install step (it would download the published package; it is
checked to name this package, version and engine hashes instead) and `gh`, a fake
that records the comment it was asked to post."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import yaml

from controlplane.auth.jobs import Tokens
from controlplane.auth.roles import Role
from controlplane.store.db import Database, upgrade
from tests.support.app import POLICY_DIR, REPO
from tests.support.processes import free_port, started
from tests.support.verdicts import new_subject, verdict

WORKFLOW = REPO / "docs" / "examples" / "policy-ci.yml"
FAKE_GH = """#!/bin/sh
# A fake `gh`: records each call; --edit-last fails (no earlier comment), as on a new PR.
printf '%s\\n' "$*" >> "$GH_CALLS"
for arg in "$@"; do [ "$arg" = --edit-last ] && exit 1; done
while [ $# -gt 0 ]; do
  if [ "$1" = --body-file ]; then cp "$2" "$GH_BODY"; fi
  shift
done
"""


def steps() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    return {s["name"]: s for s in document["jobs"]["policies"]["steps"] if "name" in s}


def expand(text: str, context: dict[str, str]) -> str:
    """`${{ a.b }}` as GitHub expands it (an unknown name is the empty string)."""
    return re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}", lambda m: context.get(m.group(1), ""), text)


def commit_all(repository: Path) -> None:
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "policies"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
            cwd=repository,
            check=True,
        )


def run_step(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A `run:` step as GitHub's runner runs it: `bash --noprofile --norc -eo pipefail`."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_install_step_installs_this_package_and_its_pinned_engine() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    install = steps()["Install Tollgate and its OPA engine"]["run"]
    assert f'pip install "{project["name"]}=={project["version"]}"' in install
    pinned = (REPO / "requirements" / "opa-engine.txt").read_text()
    assert re.findall(r"sha256:[0-9a-f]{64}", install) == re.findall(r"sha256:[0-9a-f]{64}", pinned)
    assert "opa-golib-python-bindings==0.4.4" in install and "==0.4.4" in pinned
    assert "--require-hashes" in install


async def test_the_workflow_runs_as_written(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'tollgate.db'}"
    upgrade(database_url)
    db = Database(database_url)
    try:
        engineer, _ = await Tokens(db).create("policy-ci", Role.ENGINEER, actor="tests")
        detector, _ = await Tokens(db).create("detector", Role.DETECTOR, actor="tests")
    finally:
        await db.dispose()
    port = free_port()
    settings = {
        "TOLLGATE_DATABASE_URL": database_url,
        "TOLLGATE_DATA_DIR": str(tmp_path / "data"),
        "TOLLGATE_POLICY_DIR": str(POLICY_DIR),
        "TOLLGATE_PORT": str(port),
        "TOLLGATE_ENGINE_WORKERS": "1",
    }
    with started(["serve"], settings, port, tmp_path / "serve.log") as server:
        await server.ready()
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {detector}"}) as client:
            batch = {"verdicts": [verdict(subject=new_subject(), score=0.95) for _ in range(5)]}
            response = await client.post(f"{server.url}/v1/verdicts", json=batch)
            assert response.status_code == 202, response.text

        lab = tmp_path / "lab-policies"
        shutil.copytree(POLICY_DIR, lab / "policies")
        await asyncio.to_thread(commit_all, lab)
        tools = tmp_path / "tools"
        tools.mkdir()
        (tools / "gh").write_text(FAKE_GH)
        (tools / "gh").chmod(0o755)
        context = {
            "secrets.TOLLGATE_URL": server.url,
            "secrets.TOLLGATE_TOKEN": engineer,
            "github.token": "not-a-real-token",
            "github.event.pull_request.number": "7",
            "github.repository": "lab/policies",
        }
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
        base_env["PATH"] = f"{tools}:{Path(sys.executable).parent}:{base_env['PATH']}"
        base_env["GH_CALLS"] = str(tmp_path / "gh-calls")
        base_env["GH_BODY"] = str(tmp_path / "gh-body.md")
        for name in (
            "Check",
            "Test",
            "Impact on the last 7 days of traffic",
            "Comment on the pull request",
        ):
            step = steps()[name]
            env = base_env | {k: expand(str(v), context) for k, v in step.get("env", {}).items()}
            done = await asyncio.to_thread(run_step, step["run"], lab, env)
            assert done.returncode == 0, f"{name}: {done.stdout}\n{done.stderr}"

    calls = (tmp_path / "gh-calls").read_text().splitlines()
    assert calls == [
        "pr comment 7 --repo lab/policies --body-file impact.md --edit-last",
        "pr comment 7 --repo lab/policies --body-file impact.md",
    ]
    body = (tmp_path / "gh-body.md").read_text()
    assert body.startswith("### Tollgate policy impact:")
    assert "Replayed **5** stored verdicts" in body
