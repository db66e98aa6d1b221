"""What only the remote engine has: the push to OPA, rego_compat off, timeouts, retries,
errors mapped to Tollgate's, traced HTTP calls, and replacing one revision by another.
Against the OPA test server (`tests/support/opa_server.py`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

import pytest
from opa_client import AsyncOpaClient  # type: ignore[import-untyped]
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from controlplane.engine.bundle import PolicyBundle, load_bundle
from controlplane.engine.opa_http import ADMIN_RETRIES, OpaHttp, OpaTarget
from controlplane.engine.opa_push import push
from controlplane.engine.remote import RemoteEngine, policy_id
from controlplane.engine.runtime import EngineSlot, load_engine
from controlplane.errors import EngineUnavailable, PolicyError
from tests.integration.engine.conftest import Loader, engine_settings, make_bundle
from tests.support.opa_server import OpaTestServer, opa_test_server, unused_url

REPO = Path(__file__).resolve().parents[3]

GREET = """\
package greet

decision := {"says": _word, "tags": tags}

_word := "hello"

tags contains "first"
"""

HELPERS = """\
package helpers

shout(word) := upper(word)
"""

TWICE = """\
package twice

default decision := 0

decision := 1 if input.n == 1

decision := 2 if input.n == 1
"""

CALLER = """\
package caller

import data.helpers

decision := helpers.shout("hi")
"""


async def remote(loader: Loader, bundle: PolicyBundle, **overrides: Any) -> RemoteEngine:
    overrides.setdefault("entrypoint", "greet.decision")
    return cast(RemoteEngine, await loader("remote", bundle, **overrides))


def greet(word: str = "hello", tag: str = "first", data: Any = None) -> PolicyBundle:
    source = GREET.replace('"hello"', f'"{word}"').replace('"first"', f'"{tag}"')
    return make_bundle({"greet/greet.rego": source}, data)


async def test_the_library_would_rewrite_a_v0_module_by_default(server: OpaTestServer) -> None:
    """Why `rego_compat` must be off: left on, a module OPA refuses is rewritten by a
    regex and the rewrite uploaded, so OPA holds a policy nobody wrote."""
    port = int(server.url.rsplit(":", 1)[1])
    async with AsyncOpaClient(host="127.0.0.1", port=port) as client:
        source = "package legacy\n\nallow { true }\n"
        assert await client.update_policy_from_string(source, "elsewhere/legacy.rego")
        assert server.raw_policy("elsewhere/legacy.rego") == "package legacy\n\nallow if { true }"
        assert await client.delete_policy("elsewhere/legacy.rego")


async def test_a_v0_module_is_refused_not_rewritten(server: OpaTestServer) -> None:
    """The push itself: OPA's refusal stands and the library rewrites nothing."""
    bundle = make_bundle({"legacy/legacy.rego": "package legacy\n\ndecision { true }\n"})
    http = OpaHttp(OpaTarget(server.url, 2.0, 0.5), concurrency=1)
    try:
        with pytest.raises(PolicyError) as raised:
            await push(http, bundle, None)
    finally:
        await http.aclose()

    target = policy_id(bundle.revision, "legacy/legacy.rego")
    puts = server.received("PUT", f"/v1/policies/{target}")
    assert [p.body for p in puts] == [bundle.modules["legacy/legacy.rego"].encode()]
    assert target not in server.policy_ids()
    assert "/policies/legacy/legacy.rego: " in raised.value.message
    assert raised.value.details == [
        {"field": "legacy/legacy.rego", "message": raised.value.details[0]["message"]}
    ]


async def test_a_module_tollgate_cannot_parse_is_never_pushed(
    loader: Loader, server: OpaTestServer
) -> None:
    """Unparsed, it cannot be cleared of builtins that leave the process."""
    bundle = make_bundle({"legacy/legacy.rego": "package legacy\n\ndecision { true }\n"})

    with pytest.raises(PolicyError, match=r"legacy/legacy\.rego:3: rego_parse_error"):
        await remote(loader, bundle, entrypoint="legacy.decision")

    assert server.received("PUT", "/v1/policies") == []


async def test_modules_are_uploaded_byte_for_byte(loader: Loader, server: OpaTestServer) -> None:
    repo = load_bundle(REPO / "policies")
    odd = "\n\n# ünïcode, a tab\tand CRLF\r\npackage odd\r\n\r\n  ok := true"  # no final newline
    bundle = PolicyBundle(
        root=repo.root,
        revision=repo.revision,
        modules={**repo.modules, "odd/odd.rego": odd},
        data=repo.data,
    )

    engine = await remote(loader, bundle, entrypoint="tollgate.decision")

    for path, source in bundle.modules.items():
        assert server.raw_policy(policy_id(engine.revision, path)) == source
    puts = server.received("PUT", "/v1/policies/")
    assert sorted(p.body for p in puts) == sorted(s.encode() for s in bundle.modules.values())


async def test_data_is_replaced_by_top_level_document(
    loader: Loader, server: OpaTestServer
) -> None:
    first = greet(data=[("greet.settings", {"a": 1}), ("old", {"gone": True})])
    second = greet(word="hi", data=[("greet.settings", {"b": 2})])

    await remote(loader, first)
    assert server.document() == {"greet": {"settings": {"a": 1}}, "old": {"gone": True}}
    await remote(loader, second)

    assert server.document() == {"greet": {"settings": {"b": 2}}}


async def test_a_new_revision_replaces_the_old_one(loader: Loader, server: OpaTestServer) -> None:
    old = await remote(loader, greet())
    new = await remote(loader, greet(word="bye", tag="second"))

    (evaluation,) = await new.evaluate_many([{}])

    # Beside each other, `_word` would conflict and `tags` would hold both tags.
    assert evaluation.result == {"says": "bye", "tags": ["second"]}
    assert server.policy_ids() == [policy_id(new.revision, "greet/greet.rego")]
    with pytest.raises(EngineUnavailable, match=f"now holds revision {new.revision}"):
        await old.evaluate_many([{}])
    await old.retire()  # nothing of it is left; it only closes
    assert server.policy_ids() == [policy_id(new.revision, "greet/greet.rego")]


async def test_a_batch_in_flight_when_a_load_starts_is_discarded(
    loader: Loader, server: OpaTestServer
) -> None:
    old = await remote(loader, greet())
    server.clear()
    server.delay = 0.3
    batch = asyncio.create_task(old.evaluate_many([{}]))
    for _ in range(200):  # until the batch's request waits at the server...
        if server.received("POST"):
            break
        await asyncio.sleep(0.01)
    server.delay = 0

    new = await remote(loader, greet(word="bye"))  # ...and is answered by the new revision

    with pytest.raises(EngineUnavailable, match="started loading another revision"):
        await batch
    assert (await new.evaluate_many([{}]))[0].result == {"says": "bye", "tags": ["first"]}


async def test_a_failed_load_puts_the_previous_revision_back(
    loader: Loader, server: OpaTestServer
) -> None:
    current = await remote(loader, greet(data=[("greet.settings", {"a": 1})]))
    broken = make_bundle({"greet/greet.rego": "package greet\n\ndecision { true }\n"})
    undefined = greet(word="other")

    with pytest.raises(PolicyError, match="`if` keyword is required"):
        await remote(loader, broken)
    with pytest.raises(PolicyError, match="undefined"):
        await remote(loader, undefined, entrypoint="greet.nothing")

    assert server.policy_ids() == [policy_id(current.revision, "greet/greet.rego")]
    assert server.document() == {"greet": {"settings": {"a": 1}}}
    server.clear()
    (evaluation,) = await current.evaluate_many([{}])
    assert evaluation.result == {"says": "hello", "tags": ["first"]}
    assert [r.method for r in server.requests] == ["POST"]


async def test_a_revision_that_could_not_be_put_back_is_pushed_once_the_server_answers(
    loader: Loader, server: OpaTestServer
) -> None:
    current = await remote(loader, greet())
    server.fail_next(502, times=2 * (ADMIN_RETRIES + 1))  # the load, then putting back

    with pytest.raises(EngineUnavailable, match="HTTP 502"):
        await remote(loader, greet(word="never"))
    server.fail_next(502, times=ADMIN_RETRIES + 1)
    with pytest.raises(EngineUnavailable, match="pushing it again failed"):
        await current.evaluate_many([{}])

    (evaluation,) = await current.evaluate_many([{}])
    assert evaluation.result == {"says": "hello", "tags": ["first"]}


async def test_modules_are_pushed_and_deleted_in_dependency_order(
    loader: Loader, server: OpaTestServer
) -> None:
    # "caller" sorts before "helpers" and calls its function: OPA refuses it until
    # "helpers" is there, and refuses to delete "helpers" while "caller" is there.
    bundle = make_bundle({"caller/caller.rego": CALLER, "helpers/helpers.rego": HELPERS})

    engine = await remote(loader, bundle, entrypoint="caller.decision")
    assert (await engine.evaluate_many([{}]))[0].result == "HI"
    await remote(loader, greet())

    assert server.policy_ids() == [policy_id(greet().revision, "greet/greet.rego")]


async def test_an_opa_that_lost_its_policies_gets_them_again(
    loader: Loader, server: OpaTestServer
) -> None:
    engine = await remote(loader, greet(data=[("greet.settings", {"a": 1})]))
    server.reset()  # as a sidecar that restarted: nothing pushed survives

    with pytest.raises(EngineUnavailable, match="had lost revision"):
        await engine.evaluate_many([{}])

    assert (await engine.evaluate_many([{}]))[0].result == {"says": "hello", "tags": ["first"]}
    assert server.document() == {"greet": {"settings": {"a": 1}}}


async def test_an_unreachable_server_names_the_setting() -> None:
    url = unused_url()
    started = time.perf_counter()

    with pytest.raises(EngineUnavailable) as raised:
        await load_engine(engine_settings("remote", url), greet())

    assert f"cannot reach OPA at {url}" in raised.value.message
    assert "TOLLGATE_OPA_URL" in raised.value.message
    assert time.perf_counter() - started < 3  # 3 connection attempts, 0.9 s of backoff


async def test_a_server_that_goes_away_makes_the_batch_fail(loader: Loader) -> None:
    with opa_test_server() as private:
        engine = await remote(loader, greet(), opa_url=private.url)
    with pytest.raises(EngineUnavailable, match="TOLLGATE_OPA_URL"):
        await engine.evaluate_many([{}])


async def test_a_slow_server_times_out(loader: Loader, server: OpaTestServer) -> None:
    engine = await remote(loader, greet(), opa_timeout=0.3)
    server.delay = 1.0
    started = time.perf_counter()

    with pytest.raises(EngineUnavailable) as raised:
        await engine.evaluate_many([{}, {}])

    assert "did not answer within 0.3s" in raised.value.message
    assert "TOLLGATE_OPA_TIMEOUT" in raised.value.message
    assert time.perf_counter() - started < 0.9


async def test_a_502_is_retried_a_bounded_number_of_times_when_pushing(loader: Loader) -> None:
    with opa_test_server() as private:  # no earlier revision to put back afterwards
        private.fail_next(502, times=10)
        started = time.perf_counter()

        with pytest.raises(EngineUnavailable, match="HTTP 502"):
            await remote(loader, greet(), opa_url=private.url)

        assert len(private.requests) == ADMIN_RETRIES + 1 == 3
        assert 0.9 <= time.perf_counter() - started < 2  # sleeps of 0.3 s and 0.6 s


async def test_an_evaluation_is_never_retried(loader: Loader, server: OpaTestServer) -> None:
    bundle = make_bundle({"greet/greet.rego": GREET, "twice/twice.rego": TWICE})
    engine = await remote(loader, bundle)
    server.clear()
    server.fail_next(502, times=10)

    with pytest.raises(EngineUnavailable, match="HTTP 502"):
        await engine.evaluate_many([{}])
    server.clear()
    failing = await remote(loader, bundle, entrypoint="twice.decision")
    server.clear()
    (evaluation,) = await failing.evaluate_many([{"n": 1}])

    assert evaluation.error is not None and "eval_conflict_error" in evaluation.error
    assert len(server.received("POST")) == 1


async def test_http_calls_are_traced(
    loader: Loader, server: OpaTestServer, client_spans: InMemorySpanExporter
) -> None:
    engine = await remote(loader, greet())
    client_spans.clear()
    server.clear()

    await engine.evaluate_many([{}])

    (span,) = [s for s in client_spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    attributes = dict(span.attributes or {})
    assert attributes.get("http.method", attributes.get("http.request.method")) == "POST"
    url = str(attributes.get("http.url", attributes.get("url.full")))
    assert url == f"{server.url}/v1/data/greet/decision"
    (post,) = server.received("POST")
    assert post.headers["traceparent"].split("-")[1] == format(span.context.trace_id, "032x")


async def test_pushes_are_traced(loader: Loader, client_spans: InMemorySpanExporter) -> None:
    await remote(loader, greet(word="traced"))

    names = {
        (dict(s.attributes or {}).get("http.method"), s.kind)
        for s in client_spans.get_finished_spans()
    }
    assert {("GET", SpanKind.CLIENT), ("PUT", SpanKind.CLIENT), ("POST", SpanKind.CLIENT)} <= names


async def test_the_slot_closes_a_replaced_remote_engine(loader: Loader) -> None:
    old = await remote(loader, greet())
    new = await remote(loader, greet(word="bye"))
    slot = EngineSlot(old)

    slot.swap(new)  # closes the old engine on a thread of its own
    for _ in range(50):
        if old._http.closed:
            break
        await asyncio.sleep(0.01)

    assert old._http.closed
    with pytest.raises(EngineUnavailable, match="is closed"):
        await old.evaluate_many([{}])


async def test_settings_that_name_no_engine_are_refused(server: OpaTestServer) -> None:
    with pytest.raises(EngineUnavailable, match="TOLLGATE_ENGINE='opa' is not an engine"):
        await load_engine(engine_settings("opa", server.url), greet())
    with pytest.raises(EngineUnavailable, match="TOLLGATE_OPA_URL="):
        await load_engine(engine_settings("remote", f"{server.url}/opa"), greet())
    with pytest.raises(EngineUnavailable, match="TOLLGATE_OPA_URL="):
        OpaTarget("localhost:8181", 1, 1)
