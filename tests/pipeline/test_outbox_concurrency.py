"""Guarantee 3 under real concurrency: two workers (own engines, own connections) drain one
outbox at the same time; no row is pushed twice and every row is pushed once."""

from __future__ import annotations

import threading
from collections import Counter

from factories import make_world, person
from syncd.connector import WriteOp, WriteResult
from syncd.pipeline.push import Pusher, PushPolicy
from syncd.sandbox.memory import MemoryConnector, MemorySystem
from syncd.store import Store


class CountingConnector(MemoryConnector):
    def __init__(self, name: str, system: MemorySystem, seen: Counter, lock: threading.Lock) -> None:
        super().__init__(name, system)
        self.seen, self.lock = seen, lock

    def write(self, op: WriteOp) -> WriteResult:
        with self.lock:
            self.seen[op.op_id] += 1
        return super().write(op)


def test_two_workers_never_push_a_row_twice(db_url: str) -> None:
    store = Store(db_url)
    syncer, remote = make_world(store, systems=("crm", "shop"))
    n = 300
    for i in range(n):
        remote["shop"].edit("person", f"s{i}", **person(name=f"Клиент {i}", email=f"c{i}@example.ru"))
    syncer.pull("shop", "person")
    assert store.count("outbox", status="pending") == n

    seen: Counter = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(2)
    results = []

    def worker(name: str) -> None:
        own = Store(db_url, create=False)          # its own engine and connection pool
        conn = CountingConnector("crm", remote["crm"], seen, lock)
        pusher = Pusher(own, syncer.mapper, {"crm": conn}, worker=name,
                        policy=PushPolicy(base_delay=0.0, inline_wait_max=0.0))
        barrier.wait()
        results.append(pusher.push("crm", limit=7))
        own.close()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(seen) == n, "every row pushed"
    assert max(seen.values()) == 1, f"a row was pushed twice: {[k for k, v in seen.items() if v > 1][:3]}"
    assert sum(r.pushed for r in results) == n
    assert all(r.pushed > 0 for r in results), "both workers took part"
    assert remote["crm"].creates == n
    assert store.count("outbox", status="done") == n
    store.close()
