"""How concurrent requests form groups (group commit): callers that each send one
verdict, wait for the 202 and send the next are decided together, not half in each of
two groups; a lone caller never waits for company."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import pytest

from controlplane.domain.verdict import Verdict
from controlplane.ingest import service as ingest_service
from controlplane.ingest.schemas import IngestResult
from controlplane.ingest.service import IngestService
from tests.support.verdicts import verdict

DECIDE_SECONDS = 0.03
"""What deciding and storing a group takes here. Times are ten times the server's
(a group of a few verdicts ~8 ms, the window 2 ms) so a loaded machine keeps their
order."""

WINDOW = 0.02

TRIPS = [0.0005, 0.002, 0.006, 0.01]
"""How long each of four callers takes from its answer to its next request: answers
are sent, and requests read, one after another by the one event loop."""


@pytest.fixture(autouse=True)
def window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_service, "GATHER_SECONDS", WINDOW)


class NoDecider:
    def close(self) -> None:
        pass


class Recording(IngestService):
    """Groups are recorded and answered after DECIDE_SECONDS; nothing is stored."""

    def __init__(self) -> None:
        super().__init__(db=None, decider=NoDecider())  # type: ignore[arg-type]
        self.groups: list[int] = []

    async def _group(self, group: list[Any]) -> None:
        self.groups.append(len(group))
        await asyncio.sleep(DECIDE_SECONDS)
        for item in group:
            item.answer.set_result(IngestResult(accepted=1, duplicates=0, results=[]))


def one() -> list[Verdict]:
    return [Verdict.model_validate(verdict())]


async def caller(service: Recording, requests: int, pause: float) -> None:
    for _ in range(requests):
        await service.submit(one(), actor="detector")
        await asyncio.sleep(pause)  # the way back to the client and its next request


async def test_callers_that_wait_for_their_answers_are_decided_together() -> None:
    service = Recording()
    try:
        await asyncio.gather(*(caller(service, 20, trip) for trip in TRIPS))
    finally:
        service.close()
    # After the first groups, all four callers are in each group.
    assert statistics.median(service.groups[3:]) == 4, service.groups
    assert len(service.groups) <= 22
    assert sum(service.groups) == 80


async def test_without_the_wait_they_split_in_two(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same callers, no gathering: what the wait is for (this fails if the callers
    # here stopped modelling the problem).
    monkeypatch.setattr(ingest_service, "GATHER_SECONDS", 0.0)
    service = Recording()
    try:
        await asyncio.gather(*(caller(service, 20, trip) for trip in TRIPS))
    finally:
        service.close()
    assert statistics.median(service.groups[3:]) < 4, service.groups
    assert len(service.groups) > 30


class _CountedAsyncio:
    """`asyncio` as the ingest service sees it, its `wait_for` counted. Only the
    service's: the session's one event loop may run other tests' tasks meanwhile."""

    def __init__(self, found: list[float]) -> None:
        self._found = found

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def wait_for(self, awaitable: Any, seconds: float) -> Any:
        self._found.append(seconds)
        return await asyncio.wait_for(awaitable, seconds)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The windows the service waited for company (each wait, its timeout)."""
    found: list[float] = []
    monkeypatch.setattr(ingest_service, "asyncio", _CountedAsyncio(found))
    return found


async def test_a_lone_caller_never_waits_for_company(waits: list[float]) -> None:
    service = Recording()
    try:
        await caller(service, 10, 0.0)  # back to back, one at a time
        await caller(service, 3, 0.02)  # sparse
    finally:
        service.close()
    assert service.groups == [1] * 13
    assert waits == []


async def test_a_group_smaller_than_the_last_waits_at_most_the_window(
    waits: list[float],
) -> None:
    service = Recording()
    try:
        # Four callers, then one goes on alone: its groups wait, each at most the
        # window, until the service has learnt it is alone.
        await asyncio.gather(*(caller(service, 5, trip) for trip in TRIPS))
        await caller(service, 5, 0.0)
    finally:
        service.close()
    assert service.groups[-4:] == [1, 1, 1, 1]
    assert waits and set(waits) == {ingest_service.GATHER_SECONDS}
    assert sum(service.groups) == 25


async def test_a_request_waiting_for_its_group_is_answered_when_the_service_stops() -> None:
    service = Recording()
    service._expected, service._last_ended = 4, time.perf_counter()  # four just answered
    try:
        waiting = asyncio.create_task(service.submit(one(), actor="detector"))
        for _ in range(1000):  # until the group waits for the other three
            if service._gathered is not None:
                break
            await asyncio.sleep(0)
        assert service._gathered is not None and service._runner is not None
        service._runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiting, 5)  # answered, not left waiting for ever
        assert service.groups == []
    finally:
        service.close()
