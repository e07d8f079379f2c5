"""Retention: done writes, runs and change log older than retention_days go, in small batches,
each its own transaction; what is still needed stays. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import Any

from sqlalchemy import create_engine, insert, select, text

from syncd.store import Store, new_id, utcnow
from syncd.store import tables as t
from syncd.store.retention import database_size, purge

NOW = utcnow()
OLD = NOW - dt.timedelta(days=120)
RECENT = NOW - dt.timedelta(days=10)


def _entity(c: Any) -> str:
    eid = new_id()
    c.execute(
        insert(t.entities).values(
            id=eid, type="person", fields="{}", versions="{}", created_at=OLD, updated_at=OLD
        )
    )
    return eid


def _outbox(c: Any, eid: str, status: str, when: dt.datetime, n: int = 1) -> None:
    c.execute(
        insert(t.outbox),
        [
            dict(
                entity_id=eid,
                entity_type="person",
                system="crm",
                op="update",
                payload="{}",
                idempotency_key=new_id(),
                status=status,
                attempts=0,
                next_attempt_at=when,
                created_at=when,
                updated_at=when,
            )
            for _ in range(n)
        ],
    )


def _runs(c: Any, system: str, stream: str, when: dt.datetime, n: int) -> list[str]:
    ids = []
    for i in range(n):
        rid = new_id()
        ids.append(rid)
        c.execute(
            insert(t.runs).values(
                id=rid,
                system=system,
                stream=stream,
                started_at=when + dt.timedelta(seconds=i),
                finished_at=when + dt.timedelta(seconds=i),
                status="ok",
                counts="{}",
            )
        )
    return ids


def _changes(c: Any, eid: str, when: dt.datetime, n: int) -> None:
    c.execute(
        insert(t.changelog),
        [dict(entity_id=eid, system="shop", origin="pull", fields="{}", observed_at=when) for _ in range(n)],
    )


def _seed(store: Store) -> dict[str, Any]:
    with store.begin() as c:
        eid = _entity(c)
        _outbox(c, eid, "done", OLD, 25)
        _outbox(c, eid, "done", RECENT, 3)
        for _ in range(2):  # a dead letter waits for a person, however old (one per record and system)
            _outbox(c, _entity(c), "dead", OLD, 1)
        _outbox(c, eid, "pending", OLD, 1)  # so does a write still to do
        old_runs = _runs(c, "shop", "orders", OLD, 12)
        _runs(c, "shop", "orders", RECENT, 2)
        only_old = _runs(c, "crm", "deals", OLD, 3)  # a stream that stopped running long ago
        _changes(c, eid, OLD, 30)
        _changes(c, eid, RECENT, 4)
    return {"entity": eid, "old_runs": old_runs, "crm_latest": only_old[-1]}


def _count(store: Store, table: Any, *where: Any) -> int:
    with store.read() as c:
        return len(c.execute(select(table).where(*where)).all())


def test_purge_removes_only_what_is_old_and_finished(store: Store) -> None:
    seeded = _seed(store)
    batches: list[tuple[str, int]] = []
    out = purge(
        store, dt.timedelta(days=90), batch=10, pause=0, on_batch=lambda tbl, n: batches.append((tbl, n))
    )
    assert (out.outbox, out.runs, out.changelog) == (25, 14, 30)
    # 10 rows per transaction, never more
    assert max(n for _, n in batches) == 10 and out.batches == len(batches) == 3 + 2 + 3
    assert [n for tbl, n in batches if tbl == "outbox"] == [10, 10, 5]
    assert _count(store, t.outbox, t.outbox.c.status == "done") == 3
    assert _count(store, t.outbox, t.outbox.c.status == "dead") == 2
    assert _count(store, t.outbox, t.outbox.c.status == "pending") == 1
    assert _count(store, t.changelog) == 4
    # runs: the recent ones, and the latest run of a stream that has not run since (for /stats)
    with store.read() as c:
        left = set(c.execute(select(t.runs.c.id)).scalars())
    assert len(left) == 3 and seeded["crm_latest"] in left and not left & set(seeded["old_runs"])
    assert store.entity(seeded["entity"]) is not None
    # a second purge finds nothing
    again = purge(store, dt.timedelta(days=90), batch=10, pause=0)
    assert (again.outbox, again.runs, again.changelog, again.batches) == (0, 0, 0, 0)


def test_stop_ends_the_purge_between_batches(store: Store) -> None:
    _seed(store)
    stop = threading.Event()

    def after(table: str, n: int) -> None:
        stop.set()  # shutdown arrives during the first batch

    out = purge(store, dt.timedelta(days=90), batch=10, pause=0, stop=stop, on_batch=after)
    assert out.stopped and out.batches == 1 and out.outbox == 10
    assert _count(store, t.outbox, t.outbox.c.status == "done") == 18


def test_between_batches_the_database_is_free_for_writers(db_url: str, store: Store) -> None:
    """No transaction spans two batches: a writer that refuses to wait gets in between them."""
    _seed(store)
    probe = create_engine(
        db_url.replace("postgresql://", "postgresql+psycopg://"),
        connect_args={"timeout": 0} if db_url.startswith("sqlite") else {},
    )
    wrote: list[int] = []

    def write_now(table: str, n: int) -> None:
        with probe.begin() as c:
            if db_url.startswith("sqlite"):
                c.exec_driver_sql("PRAGMA busy_timeout = 0")  # fail at once if a purge held the lock
            else:
                c.execute(text("SET LOCAL lock_timeout = '100ms'"))
            c.execute(
                insert(t.kv).values(key=f"probe-{len(wrote)}", value=json.dumps(n), updated_at=utcnow())
            )
        wrote.append(n)

    out = purge(store, dt.timedelta(days=90), batch=5, pause=0, on_batch=write_now)
    probe.dispose()
    assert len(wrote) == out.batches > 10


def test_zero_rows_is_not_an_error_and_size_is_reported(store: Store) -> None:
    out = purge(store, dt.timedelta(days=90))
    assert out.batches == 0 and out.as_dict()["outbox"] == 0
    size = database_size(store)
    assert size["size_bytes"] and size["size_bytes"] > 0
    assert size["backend"] == ("postgresql" if store.is_postgres else "sqlite")


def test_retention_days_zero_keeps_everything_in_the_daemon(tmp_path: Any) -> None:
    from factories import write_config

    from syncd.config import load_settings
    from syncd.daemon.runtime import Runtime
    from syncd.daemon.scheduler import RETENTION_EVERY, Scheduler

    cfg = write_config(tmp_path, systems={"a": {"type": "memory"}, "b": {"type": "memory"}})
    rt = Runtime(load_settings(cfg))
    try:
        sched = Scheduler(rt)
        sched.setup()
        job = sched.sched.get_job("retention")
        assert job is not None and job.trigger.interval.total_seconds() == RETENTION_EVERY
        # the job purges under a lease, in batches, and logs what it did
        with rt.store.begin() as c:
            eid = _entity(c)
            _outbox(c, eid, "done", OLD, 3)
        sched._retention()
        assert _count(rt.store, t.outbox) == 0
        rt.settings.daemon.retention_days = 0
        sched2 = Scheduler(rt)
        sched2.setup()
        assert sched2.sched.get_job("retention") is None
    finally:
        rt.close()


def test_stats_show_the_database_size(tmp_path: Any) -> None:
    from factories import write_config

    from syncd.config import load_settings
    from syncd.daemon.runtime import Runtime

    cfg = write_config(
        tmp_path, systems={"a": {"type": "memory"}, "b": {"type": "memory"}}, daemon={"retention_days": 30}
    )
    rt = Runtime(load_settings(cfg))
    try:
        stats = rt.stats()
        assert stats["database"]["backend"] == "sqlite"
        assert stats["database"]["size_bytes"] >= (tmp_path / "syncd.db").stat().st_size > 0
    finally:
        rt.close()
