"""Ids: time-ordered, unique across threads, and a forked child never repeats the
ids its parent goes on to make (the random part is read from the OS a block at a time)."""

from __future__ import annotations

import os
import re
import threading

from controlplane.store.models import new_id


def test_ids_are_prefixed_time_ordered_hex() -> None:
    first, second = new_id("dec"), new_id("dec")
    assert re.fullmatch(r"dec_[0-9a-f]{24}", first)
    assert first[4:16] <= second[4:16]


def test_ids_are_unique_across_threads_and_blocks() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        out.extend(new_id("act") for _ in range(5_000))  # several blocks per thread

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for out in made for i in out]
    assert len(set(everything)) == len(everything) == 20_000


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_id("dec")  # the parent holds a block it has only begun
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave at once
        os.close(read)
        os.write(write, " ".join(new_id("dec")[16:] for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_id("dec")[16:] for _ in range(50)}
    assert len(child) == 50
    assert not child & parent
