"""A real HAProxy 2.6 (Debian's package) for the HAProxy connector's tests.

Imported by the test modules that need it, not a conftest, so the fixtures of other
gateways' tests never collide with these. HAProxy is installed when missing (as
root, through apt-get); when it cannot be, the tests fail saying what to do: they are
never skipped. Each HAProxy runs from a temporary directory on free ports, on the
documented config (`connectors.haproxy.sample_config`), in front of a stub model API
that answers 200 to everything, and is stopped afterwards by its pid file.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.haproxy import HAProxyConnector, HAProxyOptions
from controlplane.cli.demo import HAProxyMissing, LocalHAProxy, ModelStub, ensure_haproxy
from controlplane.enforce.sdk import ConnectorConfig


def fingerprint(key: str) -> str:
    """What Tollgate calls a key under `key_match: fingerprint`: its SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class Gateway:
    """One running HAProxy and what talks to it."""

    proxy: LocalHAProxy
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)
    unused: httpx.AsyncClient = field(default_factory=httpx.AsyncClient)
    """The HTTP client a connector is given (HAProxy's is driven over its socket)."""
    made: list[HAProxyConnector] = field(default_factory=list)
    """Connectors of the current test, closed at its end: none writes its files late,
    into the next test's."""

    def connector(self, name: str = "edge", /, **options: Any) -> HAProxyConnector:
        """A connector on this HAProxy (extra options override the fixture's)."""
        config = ConnectorConfig(
            name=name,
            type="haproxy",
            providers=("*",),
            options={**self.connector_options(), **options},
            timeout_seconds=5.0,
        )
        connector = HAProxyConnector(config, self.unused)
        self.made.append(connector)
        return connector

    def connector_options(self) -> dict[str, Any]:
        """What tollgate.yaml's `options:` would say for this HAProxy."""
        o = self.proxy.options
        chosen = {
            "socket": o.socket,
            "state_dir": o.state_dir,
            "key_header": o.key_header,
            "key_match": o.key_match,
            "account_header": o.account_header,
        }
        return {k: v for k, v in chosen.items() if v}

    async def get(self, source: str = "127.0.0.1", **headers: str) -> int:
        """One request through HAProxy from `source` (a loopback address): its status."""
        return (await self.response(source, **headers)).status_code

    async def response(self, source: str = "127.0.0.1", **headers: str) -> httpx.Response:
        """One request through HAProxy from `source` (a loopback address)."""
        client = self.clients.get(source)
        if client is None:
            transport = httpx.AsyncHTTPTransport(local_address=source)
            client = httpx.AsyncClient(transport=transport, timeout=5.0)
            self.clients[source] = client
        return await client.get(f"{self.proxy.url}/v1/messages", headers=headers)

    async def statuses(self, count: int, source: str = "127.0.0.1", **headers: str) -> list[int]:
        return [await self.get(source, **headers) for _ in range(count)]

    async def runtime(self, command: str) -> str:
        """One command at the Runtime API, as an operator would type it by hand."""
        connector = self.connector()
        async with connector._session() as cli:
            return await cli.run(command)

    async def reset(self) -> None:
        """Empty every ACL and map, live and on disk: each test starts from nothing."""
        for path in self.proxy.files():
            kind = "acl" if path.suffix == ".acl" else "map"
            await self.runtime(f"clear {kind} {path}")
            path.write_text("", encoding="utf-8")

    async def close_connectors(self) -> None:
        for connector in self.made:
            await connector.close()
        self.made.clear()

    async def close(self) -> None:
        await self.close_connectors()
        for client in [*self.clients.values(), self.unused]:
            await client.aclose()
        self.clients.clear()


@pytest.fixture(scope="session", name="haproxy_binary")
def haproxy_binary_fixture() -> str:
    try:
        return ensure_haproxy(print)
    except HAProxyMissing as exc:
        pytest.fail(f"the HAProxy connector's tests need a real HAProxy: {exc}")


@pytest.fixture(scope="session", name="model_stub")
def model_stub_fixture() -> Iterator[ModelStub]:
    stub = ModelStub().start()
    yield stub
    stub.stop()


def _run(
    binary: str, directory: Path, stub: ModelStub, trusted: tuple[str, ...] = (), **options: Any
) -> LocalHAProxy:
    opts = HAProxyOptions(socket=str(directory / "admin.sock"), state_dir=str(directory), **options)
    proxy = LocalHAProxy(binary, directory, opts, backend=stub.address, trusted_proxies=trusted)
    return proxy.start()


@contextlib.asynccontextmanager
async def _gateway(proxy: LocalHAProxy) -> AsyncIterator[Gateway]:
    """A running HAProxy's test handle; the proxy stops when it closes."""
    gateway = Gateway(proxy)
    try:
        yield gateway
    finally:
        await gateway.close()
        proxy.stop()


@pytest.fixture(scope="session", name="haproxy_session")
async def haproxy_session_fixture(
    haproxy_binary: str, model_stub: ModelStub, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    """HAProxy as documented: keys matched by SHA-256 fingerprint of `x-api-key`."""
    async with _gateway(_run(haproxy_binary, tmp_path_factory.mktemp("haproxy"), model_stub)) as g:
        yield g


@pytest.fixture(name="haproxy")
async def haproxy_fixture(haproxy_session: Gateway) -> AsyncIterator[Gateway]:
    """The session's HAProxy, emptied for this test."""
    await haproxy_session.reset()
    yield haproxy_session
    await haproxy_session.close_connectors()


@pytest.fixture(scope="session", name="haproxy_by_id")
async def haproxy_by_id_fixture(
    haproxy_binary: str, model_stub: ModelStub, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    """HAProxy behind a trusted proxy (127.0.0.1 may set X-Forwarded-For), matching key
    ids from `x-api-key-id` as they are, with account limits from `x-account-id`: the
    demo's setup."""
    proxy = _run(
        haproxy_binary,
        tmp_path_factory.mktemp("haproxy-id"),
        model_stub,
        trusted=("127.0.0.1",),
        key_header="x-api-key-id",
        key_match="id",
        account_header="x-account-id",
    )
    async with _gateway(proxy) as gateway:
        yield gateway


@pytest.fixture(name="haproxy_id")
async def haproxy_id_fixture(haproxy_by_id: Gateway) -> AsyncIterator[Gateway]:
    """The key-id HAProxy, emptied for this test."""
    await haproxy_by_id.reset()
    yield haproxy_by_id
    await haproxy_by_id.close_connectors()
