"""CrowdSec's bouncer API served by Tollgate: what a decision is, the stream's startup
and delta answers, the bouncer's cursor (each change once; an answer cut short is sent
again), the filters, live lookups and the `bouncer` role."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.auth.roles import Role
from controlplane.bouncers import service as bouncers
from controlplane.bouncers.service import DecisionStream, Filters, answer, go_duration
from tests.support.actions import Planned, plan
from tests.support.app import Running, make_settings, serve

CROWDSEC = {"providers": ["lab-a"]}
GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?\d+s$")


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    async with serve(make_settings(database_url, tmp_path, crowdsec=CROWDSEC)) as running:
        yield running


async def bouncer(api: Running, name: str = "fw") -> dict[str, str]:
    token, _ = await api.runtime.tokens.create(name, Role.BOUNCER, actor="tests")
    return {"X-Api-Key": token, "Authorization": ""}


async def pull(api: Running, key: dict[str, str], **params: Any) -> dict[str, Any]:
    params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
    response = await api.client.get("/v1/decisions/stream", params=params, headers=key)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


def values(decisions: list[dict[str, Any]]) -> set[str]:
    return {d["value"] for d in decisions}


async def test_a_startup_answer_holds_every_active_block_as_a_crowdsec_decision(
    api: Running,
) -> None:
    await plan(
        api.runtime.db,
        Planned("block", "ip", "198.51.100.7", rule="intel.known_range", ttl_seconds=4 * 3600),
        Planned("block", "cidr", "203.0.113.0/24", ttl_seconds=None),
        Planned("block", "ip", "198.51.100.8", shadow=True),  # never a decision
        Planned("block", "ip", "198.51.100.9", provider="lab-b"),  # not served
        Planned("revoke_key", "api_key", "key_cs_1"),  # not a block
    )
    key = await bouncer(api)

    answer = await pull(api, key, startup=True)

    assert answer["deleted"] == []
    by_value = {d["value"]: d for d in answer["new"]}
    assert set(by_value) == {"198.51.100.7", "203.0.113.0/24"}
    ip, cidr = by_value["198.51.100.7"], by_value["203.0.113.0/24"]
    assert {k: ip[k] for k in ("origin", "type", "scope", "scenario", "simulated")} == {
        "origin": "tollgate",
        "type": "ban",
        "scope": "Ip",
        "scenario": "intel.known_range",
        "simulated": False,
    }
    assert GO_DURATION.match(ip["duration"]) and ip["duration"].startswith("3h59m")
    assert ip["until"].endswith("Z") and isinstance(ip["id"], int) and len(ip["uuid"]) == 36
    assert (cidr["scope"], cidr["until"], cidr["duration"]) == ("Range", None, "87600h0m0s")


async def test_each_change_reaches_a_bouncer_once(api: Running) -> None:
    [kept, lifted] = await plan(
        api.runtime.db,
        Planned("block", "ip", "198.51.100.20"),
        Planned("block", "ip", "198.51.100.21"),
    )
    key = await bouncer(api)
    assert values((await pull(api, key, startup=True))["new"]) >= {
        "198.51.100.20",
        "198.51.100.21",
    }
    assert await pull(api, key) == {"new": [], "deleted": []}  # nothing changed since

    async with api.runtime.db.transaction() as session:
        await api.runtime.remedy.lift(session, lifted, "tests", "false positive")
    await plan(api.runtime.db, Planned("block", "cidr", "192.0.2.0/24"))
    delta = await pull(api, key)

    assert values(delta["new"]) == {"192.0.2.0/24"}
    assert [(d["value"], d["scope"], d["duration"]) for d in delta["deleted"]] == [
        ("198.51.100.21", "Ip", "0s")
    ]
    assert delta["deleted"][0]["scenario"] == "tests.planned"
    assert await pull(api, key) == {"new": [], "deleted": []}
    assert kept


async def test_a_bouncer_never_seen_gets_everything_and_bouncers_keep_their_own_place(
    api: Running,
) -> None:
    first = await bouncer(api, "first")
    await pull(api, first, startup=True)
    await plan(api.runtime.db, Planned("block", "ip", "198.51.100.30"))
    second = await bouncer(api, "second")

    everything = await pull(api, second)  # startup=false, but no place yet: all of it
    delta = await pull(api, first)

    assert "198.51.100.30" in values(everything["new"])
    assert values(delta["new"]) == {"198.51.100.30"}


async def test_an_answer_cut_short_leaves_the_cursor_so_the_changes_come_again(
    api: Running,
) -> None:
    key = await bouncer(api)
    await pull(api, key, startup=True)
    await plan(api.runtime.db, Planned("block", "ip", "198.51.100.40"))
    principal = await api.runtime.tokens.authenticate(key["X-Api-Key"])
    assert principal is not None and api.runtime.bouncers is not None

    cut = answer(
        api.runtime.db, api.runtime.bouncers, principal.token_id, False, Filters.parse(*[None] * 4)
    )
    assert await anext(cut) == b'{"new":['
    await cut.aclose()  # the bouncer went away mid-answer

    assert values((await pull(api, key))["new"]) == {"198.51.100.40"}
    assert await pull(api, key) == {"new": [], "deleted": []}


async def test_a_startup_answer_is_sent_page_by_page(
    api: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    await plan(api.runtime.db, *(Planned("block", "ip", f"100.64.9.{i}") for i in range(10)))
    monkeypatch.setattr(bouncers, "PAGE", 3)
    stream = DecisionStream(api.runtime.bouncers._config)  # type: ignore[union-attr]

    filters = Filters.parse(*[None] * 4)
    chunks = [c async for c in answer(api.runtime.db, stream, "tok_pages", True, filters)]

    decision_chunks = [c for c in chunks if b'"value"' in c]
    assert len(decision_chunks) >= 4  # ten decisions, three a page
    body = b"".join(chunks).decode()
    assert {f"100.64.9.{i}" for i in range(10)} <= set(re.findall(r'"value":"([^"]+)"', body))


async def test_the_filters_are_crowdsecs(api: Running) -> None:
    await plan(
        api.runtime.db,
        Planned("block", "ip", "198.51.100.50", rule="intel.known_range"),
        Planned("block", "cidr", "198.51.100.0/24", rule="graduated.severe"),
    )
    key = await bouncer(api)

    assert all(d["scope"] == "Ip" for d in (await pull(api, key, startup=True, scopes="ip"))["new"])
    ranges = (await pull(api, key, startup=True, scopes="Range"))["new"]
    assert ranges and all(d["scope"] == "Range" for d in ranges)
    assert (await pull(api, key, startup=True, scopes="country"))["new"] == []
    assert (await pull(api, key, startup=True, origins="crowdsec,cscli"))["new"] == []
    assert (await pull(api, key, startup=True, origins="tollgate"))["new"]
    intel = (await pull(api, key, startup=True, scenarios_containing="intel"))["new"]
    assert intel and {d["scenario"] for d in intel} == {"intel.known_range"}
    other = (await pull(api, key, startup=True, scenarios_not_containing="intel"))["new"]
    assert "intel.known_range" not in {d["scenario"] for d in other}


async def test_live_mode_finds_the_blocks_covering_an_address(api: Running) -> None:
    await plan(
        api.runtime.db,
        Planned("block", "cidr", "203.0.113.0/24"),
        Planned("block", "ip", "203.0.113.77"),
    )
    key = await bouncer(api)

    found = await api.client.get("/v1/decisions", params={"ip": "203.0.113.77"}, headers=key)
    other = await api.client.get("/v1/decisions", params={"ip": "203.0.114.1"}, headers=key)
    bad = await api.client.get("/v1/decisions", params={"ip": "203.0.113.77;x"}, headers=key)

    assert found.status_code == 200
    assert {(d["scope"], d["value"]) for d in found.json()} == {
        ("Range", "203.0.113.0/24"),
        ("Ip", "203.0.113.77"),
    }
    assert other.json() == []
    assert bad.status_code == 422 and bad.json()["details"][0]["field"] == "ip"


async def test_only_bouncer_tokens_in_x_api_key_may_pull(api: Running) -> None:
    key = await bouncer(api)
    detector, _ = await api.runtime.tokens.create("det", Role.DETECTOR, actor="tests")

    missing = await api.client.get("/v1/decisions/stream", headers={"Authorization": ""})
    wrong = await api.client.get(
        "/v1/decisions/stream", headers={"X-Api-Key": detector, "Authorization": ""}
    )
    elsewhere = await api.client.get("/v1/actions", headers=key)
    unknown = await api.client.get(
        "/v1/decisions/stream", headers={"X-Api-Key": "tg_nope", "Authorization": ""}
    )

    assert (missing.status_code, wrong.status_code) == (401, 403)
    assert "X-Api-Key" in missing.json()["message"]
    assert (elsewhere.status_code, unknown.status_code) == (401, 401)


async def test_a_decisions_own_route_is_still_a_decision(api: Running) -> None:
    response = await api.client.get("/v1/decisions/dec_missing")
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (5, "5s"), (60, "1m0s"), (3599, "59m59s"), (14398, "3h59m58s"), (-3600, "-1h0m0s")],
)
def test_durations_are_written_as_go_writes_them(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


async def test_a_restarting_bouncer_is_told_what_ended_while_it_was_away(api: Running) -> None:
    [gone] = await plan(api.runtime.db, Planned("block", "ip", "198.51.100.70"))
    key = await bouncer(api)
    await pull(api, key, startup=True)
    async with api.runtime.db.transaction() as session:
        await api.runtime.remedy.lift(session, gone, "tests", "false positive")

    restart = await pull(api, key, startup=True)

    assert "198.51.100.70" not in values(restart["new"])
    assert values(restart["deleted"]) == {"198.51.100.70"}
