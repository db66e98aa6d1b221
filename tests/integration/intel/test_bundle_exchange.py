"""A lab shares Rego packages as a signed OPA bundle: lab-b fetches lab-a's over HTTP
with its peer token and vendors it; lab-c (not a reader) and packages not shared are
refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from controlplane.audit.keys import key_id, load_public_key
from controlplane.policy.bundles import read_bundle, verify_bundle
from tests.integration.intel.conftest import Exchange
from tests.unit.policy.policy_dirs import tollgate, write_policies


async def test_a_reader_fetches_the_shared_packages_signed_and_vendors_them(
    exchange: Exchange, tmp_path: Path
) -> None:
    a, b = exchange["lab-a"], exchange["lab-b"]
    key = load_public_key(a.public_key)

    async def fetch(token: str, **params: object) -> httpx.Response:
        async with httpx.AsyncClient(base_url=a.url) as client:
            return await client.get(
                "/v1/intel/bundle/",
                params=params,
                headers={"Authorization": f"Bearer {token}"},
            )

    shared = await fetch(a.peer_tokens["lab-b"])
    stranger = await fetch(a.peer_tokens["lab-c"])
    unshared = await fetch(a.peer_tokens["lab-b"], package="tollgate.decision")

    assert shared.status_code == 200, shared.text
    assert shared.headers["content-type"] == "application/gzip"
    bundle = read_bundle(shared.content)
    assert bundle.roots == ["tollgate/share"]
    assert verify_bundle(bundle, {key_id(key): key}) == key_id(key)
    assert all(n.startswith("tollgate/share/") or n.startswith(".") for n in bundle.files)
    assert stranger.status_code == 403 and "intel.bundle.readers" in stranger.json()["message"]
    assert unshared.status_code == 403 and "tollgate.decision" in unshared.json()["message"]

    repo = write_policies(tmp_path / "lab-b-policies", {})
    env = {"TOLLGATE_CONFIG": str(b.runtime.settings.config)}
    imported = await asyncio.to_thread(
        tollgate,
        "intel",
        "bundle",
        "import",
        "--peer",
        "lab-a",
        "--policy-dir",
        str(repo),
        env=env,
    )
    assert imported.exit_code == 0, imported.output
    assert (repo / "vendor/lab-a/.signatures.json").is_file()
    checked = await asyncio.to_thread(tollgate, "policy", "check", str(repo))
    assert checked.exit_code == 0, checked.output
