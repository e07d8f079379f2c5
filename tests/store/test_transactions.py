"""Defect 9: on SQLite a read (status page, `stats`, look-ups) never takes the write lock, so it
never waits behind a long write transaction."""

from __future__ import annotations

import threading

from sqlalchemy import insert

from syncd.store import Store, utcnow
from syncd.store import tables as t
from syncd.store.stats import collect


def test_reads_do_not_wait_for_a_writer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = Store(f"sqlite:///{tmp_path}/s.db")
    locked, reader_done = threading.Event(), threading.Event()

    def writer() -> None:
        with store.begin() as c:
            c.execute(insert(t.kv).values(key="k", value="1", updated_at=utcnow()))
            locked.set()
            reader_done.wait(20)       # hold the write lock until the reads are through

    w = threading.Thread(target=writer)
    w.start()
    assert locked.wait(10)
    results: dict[str, object] = {}

    def reads() -> None:
        results["stats"] = collect(store, ["shop"])
        results["quarantine"] = store.list_quarantine()
        results["kv"] = store.kv_get("k", "none")

    r = threading.Thread(target=reads)
    r.start()
    r.join(5)
    finished = not r.is_alive()
    reader_done.set()
    w.join(10)
    r.join(30)
    store.close()
    assert finished, "a read waited for the write lock"
    assert results["kv"] == "none", "a read saw an uncommitted write"
    assert "shop" in results["stats"]["integrations"]  # type: ignore[index]


def test_writers_still_exclude_each_other(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = Store(f"sqlite:///{tmp_path}/s.db")
    order: list[str] = []
    locked = threading.Event()

    def first() -> None:
        with store.begin() as c:
            locked.set()
            c.execute(insert(t.kv).values(key="a", value="1", updated_at=utcnow()))
            threading.Event().wait(0.5)
            order.append("first")

    def second() -> None:
        assert locked.wait(10)
        with store.begin() as c:
            order.append("second")
            c.execute(insert(t.kv).values(key="b", value="1", updated_at=utcnow()))

    a, b = threading.Thread(target=first), threading.Thread(target=second)
    a.start(); b.start(); a.join(20); b.join(20)
    store.close()
    assert order == ["first", "second"]
