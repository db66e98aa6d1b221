"""The unit of work: a request (or a job) holds the transaction its services write in.

A mutating request commits once its handler returned, before the answer leaves, and
rolls back whole when it raised; what a service asked to run after the commit (waking
the connectors) runs only once it committed. A safe request reads in a read session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from litestar import Litestar, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.api import dependencies, errors
from controlplane.auth import repository as tokens
from controlplane.errors import Conflict
from controlplane.store.db import AFTER_COMMIT, Database, after_commit
from controlplane.store.types import utcnow


def _token(token_id: str) -> dict[str, Any]:
    return {
        "id": token_id,
        "name": token_id,
        "role": "auditor",
        "token_hash": f"hash-{token_id}",
        "created_at": utcnow(),
        "expires_at": None,
        "revoked_at": None,
    }


async def _stored(db: Database, token_id: str) -> bool:
    async with db.read() as session:
        return await tokens.get_token(session, token_id) is not None


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    try:
        yield database
    finally:
        await database.dispose()


async def test_a_unit_of_work_commits_whole_then_runs_its_hooks(db: Database) -> None:
    ran: list[bool] = []
    async with db.transaction() as session:
        await tokens.insert_token(session, _token("tok_uow_1"))
        after_commit(session, lambda: ran.append(True))
        after_commit(session, lambda: ran.append(True))  # another hook: runs too
        assert ran == [], "a hook ran before the commit"
    assert ran == [True, True]
    assert await _stored(db, "tok_uow_1")


async def test_a_unit_of_work_that_raises_leaves_nothing_and_runs_no_hook(db: Database) -> None:
    ran: list[str] = []
    with pytest.raises(Conflict):
        async with db.transaction() as session:
            await tokens.insert_token(session, _token("tok_uow_2"))
            after_commit(session, lambda: ran.append("woken"))
            raise Conflict("a rule refused half-way")
    assert not await _stored(db, "tok_uow_2"), "a write of a failed unit of work was kept"
    assert ran == []


async def test_a_hook_registered_twice_runs_once(db: Database) -> None:
    woken: list[int] = []

    def wake() -> None:
        woken.append(1)

    async with db.transaction() as session:
        after_commit(session, wake)
        after_commit(session, wake)
    assert woken == [1]


async def test_after_commit_refuses_a_session_that_never_commits(db: Database) -> None:
    async with db.read() as session:
        with pytest.raises(RuntimeError, match="unit of work"):
            after_commit(session, lambda: None)


@post("/tokens/{token_id:str}", status_code=201)
async def create(
    token_id: FromPath[str], session: NamedDependency[AsyncSession], state: State
) -> str:
    await tokens.insert_token(session, _token(token_id))
    after_commit(session, lambda: state.woken.append(token_id))
    if token_id.endswith("-bad"):
        raise Conflict(f"{token_id} refused after its write")
    return token_id


@get("/tokens/{token_id:str}")
async def read(token_id: FromPath[str], session: NamedDependency[AsyncSession]) -> dict[str, bool]:
    return {
        "found": await tokens.get_token(session, token_id) is not None,
        "writes": AFTER_COMMIT in session.info,
    }


@pytest.fixture
async def client(db: Database) -> AsyncIterator[tuple[httpx.AsyncClient, list[str]]]:
    woken: list[str] = []
    app = Litestar(
        route_handlers=[create, read],
        state=State({"runtime": SimpleNamespace(db=db), "woken": woken}),
        dependencies=dependencies.common(),
        exception_handlers=errors.HANDLERS,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http, woken


async def test_a_mutating_request_commits_before_it_answers(
    db: Database, client: tuple[httpx.AsyncClient, list[str]]
) -> None:
    http, woken = client
    response = await http.post("/tokens/tok_req_1")
    assert response.status_code == 201, response.text
    assert await _stored(db, "tok_req_1"), "answered before the write was committed"
    assert woken == ["tok_req_1"]
    answer = (await http.get("/tokens/tok_req_1")).json()
    assert answer == {"found": True, "writes": False}, "a GET must read in a read session"


async def test_a_request_that_fails_rolls_back_whole(
    db: Database, client: tuple[httpx.AsyncClient, list[str]]
) -> None:
    http, woken = client
    response = await http.post("/tokens/tok_req_2-bad")
    assert response.status_code == 409, response.text
    assert "refused after its write" in response.json()["message"]
    assert not await _stored(db, "tok_req_2-bad"), "a failed request left its write behind"
    assert woken == [], "a rolled-back request woke the connectors"
