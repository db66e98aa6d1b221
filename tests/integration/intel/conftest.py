"""Three Tollgate servers on loopback (lab-a, lab-b, lab-c) that share intel over TAXII,
and a medallion server (the OASIS TAXII 2.1 server) relaying lab-a's objects.

lab-b runs on the module's database (SQLite, then PostgreSQL); lab-a and lab-c on
SQLite files of their own.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

from controlplane.api.app import create_app
from controlplane.audit.keys import generate
from controlplane.auth.jobs import Tokens
from controlplane.auth.roles import Role
from controlplane.runtime import Runtime
from controlplane.store.db import Database, upgrade
from tests.support.app import make_settings
from tests.support.databases import sqlite_url
from tests.support.processes import free_port

SHARED = "2016ad17-76e1-45ba-9c2e-06cfd2f2133f"
"""The collection every lab serves to the other two (TLP clear, green, amber)."""
CLOSE = "8d0b5c8e-3a41-4a8e-9d1f-6c2f7b1e0a55"
"""A second collection lab-a grants to lab-b only."""
INBOX = "5b6c1d0e-2f3a-4b5c-8d7e-9f0a1b2c3d4e"
"""lab-b's inbox: lab-a may POST objects to it (and read them back)."""
LABS = ("lab-a", "lab-b", "lab-c")
MEDALLION_USER = ("relay", "relay-password-for-tests")


@dataclass
class Lab:
    name: str
    url: str
    runtime: Runtime
    client: httpx.AsyncClient
    """Talks to the lab's real HTTP port as its admin."""
    public_key: Path
    peer_tokens: dict[str, str] = field(default_factory=dict)
    """Tokens this lab issued, by the peer that holds them."""

    async def add(self, *indicators: dict[str, Any]) -> list[dict[str, Any]]:
        response = await self.client.post(
            "/v1/intel/indicators", json={"indicators": list(indicators)}
        )
        assert response.status_code == 201, response.text
        rows: list[dict[str, Any]] = response.json()
        return rows

    async def pull(self, peer: str) -> dict[str, Any]:
        response = await self.client.post(f"/v1/intel/peers/{peer}/pull")
        assert response.status_code == 200, response.text
        report: dict[str, Any] = response.json()
        assert report["error"] is None, report
        return report

    async def indicators(self, **params: Any) -> list[dict[str, Any]]:
        response = await self.client.get("/v1/intel/indicators", params={"limit": 1000, **params})
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()
        return rows


@dataclass
class Exchange:
    labs: dict[str, Lab]
    medallion_url: str
    consortium_secret: str

    def __getitem__(self, name: str) -> Lab:
        return self.labs[name]


def _medallion(directory: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    root = f"http://127.0.0.1:{port}/relay/"
    data = {
        "/discovery": {
            "title": "relay",
            "description": "a plain TAXII relay",
            "default": root,
            "api_roots": [root],
        },
        "relay": {
            "information": {
                "title": "relay",
                "description": "relay",
                "versions": ["application/taxii+json;version=2.1"],
                "max_content_length": 104857600,
            },
            "status": [],
            "collections": [
                {
                    "id": SHARED,
                    "title": "relayed",
                    "description": "relayed",
                    "can_read": True,
                    "can_write": True,
                    "media_types": ["application/stix+json;version=2.1"],
                    "objects": [],
                    "manifest": [],
                }
            ],
        },
    }
    (directory / "data.json").write_text(json.dumps(data))
    config = {
        "backend": {
            "module": "medallion.backends.memory_backend",
            "module_class": "MemoryBackend",
            "filename": str(directory / "data.json"),
        },
        "users": {MEDALLION_USER[0]: MEDALLION_USER[1]},
        "taxii": {"max_page_size": 3},
    }
    (directory / "config.json").write_text(json.dumps(config))
    medallion = Path(sys.executable).with_name("medallion")
    process = subprocess.Popen(
        [
            str(medallion),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            str(directory / "config.json"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, root


async def _wait_answers(url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(auth=MEDALLION_USER) as client:
        while True:
            assert process.poll() is None, "medallion exited at start"
            try:
                await client.get(url)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def exchange(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Exchange]:
    root = tmp_path_factory.mktemp("exchange")
    ports = {name: free_port() for name in LABS}
    secret_file = root / "consortium.key"
    consortium_secret = secrets.token_hex(32)
    secret_file.write_text(consortium_secret)
    medallion_dir = root / "medallion"
    medallion_dir.mkdir()
    medallion, medallion_url = _medallion(medallion_dir, free_port())
    dirs = {name: root / name for name in LABS}
    urls = {name: sqlite_url(dirs[name]) for name in LABS} | {"lab-b": module_database_url}
    tokens: dict[str, dict[str, str]] = {}
    admins: dict[str, str] = {}
    for name in LABS:
        dirs[name].mkdir()
        generate(dirs[name] / "intel.key", dirs[name] / "intel.pub.pem")
        await asyncio.to_thread(upgrade, urls[name])
        db = Database(urls[name])
        service = Tokens(db)
        admins[name], _ = await service.create("test-admin", Role.ADMIN, actor="tests")
        tokens[name] = {}
        for other in LABS:
            if other != name:
                tokens[name][other], _ = await service.create(other, Role.PEER, actor="tests")
        await db.dispose()
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
    labs: dict[str, Lab] = {}
    try:
        for name in LABS:
            others = [o for o in LABS if o != name]
            for other in others:
                (dirs[name] / f"token-{other}").write_text(tokens[other][name])
            (dirs[name] / "token-relay").write_text(":".join(MEDALLION_USER))
            settings = make_settings(urls[name], dirs[name])
            peers = [
                {
                    "name": other,
                    "url": f"http://127.0.0.1:{ports[other]}/taxii2/tollgate/",
                    "collection": SHARED,
                    "token": {"file": str(dirs[name] / f"token-{other}")},
                    "public_key_file": str(dirs[other] / "intel.pub.pem"),
                    "trust": 1.0,
                }
                for other in others
            ]
            if name == "lab-b":
                peers.append(
                    {
                        "name": "relay",
                        "url": medallion_url,
                        "collection": SHARED,
                        "token": {"file": str(dirs[name] / "token-relay")},
                        "auth": "basic",
                        "public_key_file": str(dirs["lab-a"] / "intel.pub.pem"),
                    }
                )
            collections = [
                {
                    "id": SHARED,
                    "title": "shared",
                    "tlp": ["clear", "green", "amber"],
                    "readers": others,
                }
            ]
            if name == "lab-a":
                collections.append(
                    {"id": CLOSE, "title": "close", "tlp": ["green"], "readers": ["lab-b"]}
                )
            if name == "lab-b":
                collections.append(
                    {"id": INBOX, "title": "inbox", "writers": ["lab-a"], "readers": ["lab-a"]}
                )
            document = {
                "connectors": [],
                "intel": {
                    "lab": name,
                    "signing_key_file": str(dirs[name] / "intel.key"),
                    "consortium_keys": [{"id": "k1", "secret": {"file": str(secret_file)}}],
                    "collections": collections,
                    "peers": peers,
                    "pull_seconds": 86400,
                    **(
                        {"bundle": {"packages": ["tollgate.share"], "readers": ["lab-b"]}}
                        if name == "lab-a"
                        else {}
                    ),
                },
            }
            settings.config.write_text(yaml.safe_dump(document))
            runtime = Runtime.create(settings)
            app = create_app(settings, runtime)
            server = uvicorn.Server(
                uvicorn.Config(app, host="127.0.0.1", port=ports[name], log_level="warning")
            )
            task = asyncio.create_task(server.serve())
            servers.append((server, task))
            while not server.started:
                if task.done():
                    task.result()
                    raise AssertionError(f"{name} stopped at start")
                await asyncio.sleep(0.05)
            labs[name] = Lab(
                name,
                f"http://127.0.0.1:{ports[name]}",
                runtime,
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{ports[name]}",
                    headers={"Authorization": f"Bearer {admins[name]}"},
                    timeout=60,
                ),
                dirs[name] / "intel.pub.pem",
                tokens[name],
            )
        await _wait_answers(medallion_url, medallion)
        yield Exchange(labs, medallion_url, consortium_secret)
    finally:
        for lab in labs.values():
            await lab.client.aclose()
        for server, _ in servers:
            server.should_exit = True
        for _, task in servers:
            await task
        medallion.terminate()
        medallion.wait()


@pytest.fixture
def medallion_auth() -> Iterator[tuple[str, str]]:
    yield MEDALLION_USER
