"""The group-commit writer push connectors answer through: every item is committed before its waiter
hears so, what queued during a commit goes in the next one together, a failed commit tells each of
its waiters and the writer goes on."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from syncd.commit_queue import CommitQueue


def test_items_queued_during_a_commit_go_together_and_each_waiter_hears_after_its_commit() -> None:
    committed: list[list[int]] = []
    gate = threading.Event()

    def commit(items: Sequence[int]) -> None:
        if not committed:
            gate.wait(5)               # the first commit is slow: the others queue meanwhile
        committed.append(list(items))

    q: CommitQueue[int] = CommitQueue("t", commit)
    first = q.submit(0)
    time.sleep(0.05)
    rest = [q.submit(i) for i in range(1, 50)]
    assert not first.done() and not any(f.done() for f in rest)
    gate.set()
    for f in [first, *rest]:
        assert f.result(5) is None
    assert committed[0] == [0] and sorted(x for c in committed[1:] for x in c) == list(range(1, 50))
    assert len(committed) <= 3                     # grouped, not one commit each
    q.close()


def test_a_failed_commit_tells_each_of_its_waiters_and_the_writer_goes_on() -> None:
    calls = []

    def commit(items: Sequence[str]) -> None:
        calls.append(list(items))
        if "bad" in items:
            raise RuntimeError("database is locked")

    q: CommitQueue[str] = CommitQueue("t", commit)
    with pytest.raises(RuntimeError, match="locked"):
        q.submit("bad").result(5)
    assert q.submit("good").result(5) is None and calls[-1] == ["good"]
    q.close()
