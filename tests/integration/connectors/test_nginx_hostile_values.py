"""Hostile values never reach NGINX's include files: a zone id, `;`, a newline, a space,
a quote or non-ASCII digits could end an entry and add a directive. The connector
refuses every value not in canonical form (reported failed, never written); the files
stay as they were and NGINX keeps serving what it enforced."""

from __future__ import annotations

from controlplane.enforce.sdk import Diff, Entry, EntryType
from tests.integration.connectors.nginx_fixtures import (  # noqa: F401 (fixtures)
    Nginx,
    backend_fixture,
    nginx_binary_fixture,
    nginx_fixture,
    nginx_stopped_fixture,
)

OK = 200
REFUSED = "refused before it reached the gateway"
INJECTED = "default 1"


def hostile_entries() -> list[Entry]:
    blocks = [
        ("cidr", f"fe80::%x;{INJECTED};/64"),
        ("ip", "fe80::1%lo"),
        ("ip", "127.0.0.3;"),
        ("ip", f"127.0.0.3\n{INJECTED}"),
        ("cidr", "127.0.0.0/24\n"),
        ("ip", "127.0.0.3 "),
        ("ip", "\u0661\u0662\u0667.\u0660.\u0660.\u0663"),  # Arabic-Indic digits
        ("cidr", "127.0.0.77/24"),  # host bits: not the canonical spelling
        ("ip", "::ffff:127.0.0.3"),  # Tollgate sends 127.0.0.3
        ("cidr", "0.0.0.0/0"),  # everyone
        ("cidr", "::/0"),
    ]
    keys = [
        "key_3\n",
        f"key_3\n{INJECTED};",
        f"key_3; {INJECTED}",
        "key 3",
        "key_\u0663",
        '"key_3"',
    ]
    return [
        *(Entry(EntryType.BLOCK, kind, value) for kind, value in blocks),
        *(Entry(EntryType.REVOKE_KEY, "api_key", key) for key in keys),
        *(Entry(EntryType.RATE_LIMIT, "api_key", key, 60) for key in keys),
    ]


def files(nginx: Nginx) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(nginx.include_dir.iterdir())}


async def test_hostile_values_are_refused_and_nginx_keeps_serving(nginx: Nginx) -> None:
    good = (
        Entry(EntryType.BLOCK, "ip", "127.0.0.2"),
        Entry(EntryType.REVOKE_KEY, "api_key", "key_3"),
    )
    done = await nginx.connector().apply(Diff(add=good))
    assert set(done.done) == set(good)
    before = files(nginx)
    hostile = hostile_entries()

    result = await nginx.connector().apply(Diff(add=tuple(hostile)))

    assert result.done == []
    assert {e for e, _ in result.rejected} == set(hostile)
    assert all(why.startswith(REFUSED) for _, why in result.rejected), result.rejected
    assert files(nginx) == before
    assert await nginx.get("127.0.0.3") == OK  # serving, and nobody else is blocked
    assert await nginx.get("127.0.0.2") == 403  # still enforcing
    assert await nginx.get("127.0.0.3", key="key_3") == 401
    assert await nginx.get("127.0.0.3", key="key_4") == OK
