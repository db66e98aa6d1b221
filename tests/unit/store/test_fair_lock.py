"""The SQLite writers' lock goes to its waiters in the order they came."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from controlplane.store.db import FairLock, writers_of


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_waiters_go_in_turn_and_one_who_releases_queues_behind_them() -> None:
    lock = FairLock()
    order: list[str] = []
    lock.acquire()

    def writer(name: str) -> None:
        with lock:
            order.append(name)

    threads = []
    for i, name in enumerate(["first", "second", "third"], start=1):
        thread = threading.Thread(target=writer, args=(name,))
        thread.start()
        threads.append(thread)
        wait_for(lambda i=i: len(lock._waiters) == i)
    # The holder writes again at once: a plain lock would most often go back to it.
    lock.release()
    with lock:
        order.append("holder again")
    for thread in threads:
        thread.join(5)
    assert order == ["first", "second", "third", "holder again"]


def test_a_free_lock_is_taken_at_once_and_released_only_when_held() -> None:
    lock = FairLock()
    with lock:
        pass
    with lock:  # free again
        pass
    with pytest.raises(RuntimeError, match="not held"):
        lock.release()


def test_one_lock_per_sqlite_file_and_none_for_postgresql(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/tollgate.db"
    assert writers_of(url) is writers_of(url.replace("+aiosqlite", ""))
    assert isinstance(writers_of(url), FairLock)
    assert not isinstance(writers_of("postgresql+psycopg://127.0.0.1/t"), FairLock)
