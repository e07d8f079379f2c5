"""The Store facade: one object the engine, daemon, CLI and connectors use to reach the database.

Pipeline stages run their own bulk statements inside `store.begin()`; everything else (cursors,
leases, runs, queues, stats) has a named method here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import threading
import time
import uuid
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import structlog
from sqlalchemy import case, delete, func, insert, literal, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from syncd.store import tables as t
from syncd.store.db import WRITE, dialect_insert_for, make_engine, migrate

_log = structlog.get_logger("syncd.store")


# Work to do after a transaction commits, per connection: what a transaction wrote is read again
# once it is visible to everyone (the outbox's wake-ups; see syncd/pipeline/outbox.py).
_AFTER_COMMIT: "weakref.WeakKeyDictionary[Connection, list[Callable[[Connection], None]]]" = \
    weakref.WeakKeyDictionary()


def after_commit(conn: Connection, fn: Callable[[Connection], None]) -> None:
    """Run `fn` in a transaction of its own once the transaction on `conn` has committed (never when
    it rolls back). Only for transactions opened with `Store.begin`; elsewhere it never runs."""
    _AFTER_COMMIT.setdefault(conn, []).append(fn)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_id() -> str:
    """32 hex chars, time-ordered (ms timestamp, then random) like UUIDv7.

    Ids made close in time sort together, so index inserts append instead of landing on random
    pages: at a million rows that is the difference between a cached page and a disk read.
    """
    return f"{time.time_ns() // 1_000_000:012x}{uuid.uuid4().hex[:20]}"


def _decode_raw(raw: bytes) -> str:
    """Raw input bytes as text: UTF-8 when they are, else the Windows code page of 1C and Bitrix."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1251", "replace")


def _aware(v: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    if v is not None and v.tzinfo is None:
        return v.replace(tzinfo=dt.timezone.utc)
    return v


class Store:
    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        # SQLite has one writer at a time. A writer of this process finding the lock taken would
        # wait in SQLite's busy handler, which polls with sleeps of up to 100 ms; writers of one
        # process queue on this lock instead and go the moment it is free (a form post waiting for
        # the pusher's short settle waits that long, not a sleep). Other processes still meet the
        # busy handler.
        self._writer = threading.RLock() if self.engine.dialect.name == "sqlite" else None
        if create:
            migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction (on SQLite it takes the write lock at BEGIN); after it commits, what
        was registered with `after_commit` runs, each in a transaction of its own."""
        with self._writer or contextlib.nullcontext(), self.engine.connect() as conn:
            conn.execution_options(**{WRITE: True})
            try:
                with conn.begin():
                    yield conn
            except BaseException:
                _AFTER_COMMIT.pop(conn, None)
                raise
            hooks = _AFTER_COMMIT.pop(conn, None)
            if hooks:
                try:
                    with conn.begin():
                        for fn in hooks:
                            fn(conn)
                except Exception as exc:  # noqa: BLE001 - what committed stands; the sweep repairs the rest
                    _log.warning("after_commit_failed", error=f"{type(exc).__name__}: {exc}")

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction: never takes SQLite's write lock, never commits."""
        with self.engine.connect() as conn:
            yield conn

    def ping(self) -> bool:
        with self.read() as conn:
            return conn.execute(select(1)).scalar() == 1

    # -- cursors --------------------------------------------------------------------------------
    def get_cursor(self, system: str, stream: str, conn: Connection | None = None) -> str | None:
        q = select(t.cursors.c.value).where(t.cursors.c.system == system, t.cursors.c.stream == stream)
        if conn is not None:
            return conn.execute(q).scalar()
        with self.read() as c:
            return c.execute(q).scalar()

    def set_cursor(self, conn: Connection, system: str, stream: str, value: str | None) -> None:
        n = conn.execute(update(t.cursors).where(t.cursors.c.system == system, t.cursors.c.stream == stream)
                         .values(value=value, updated_at=utcnow())).rowcount
        if not n:
            conn.execute(insert(t.cursors).values(system=system, stream=stream, value=value,
                                                  updated_at=utcnow()))

    # -- key/value state (connector state, round-robin pointers, tokens) -------------------------
    def kv_get(self, key: str, default: Any = None, conn: Connection | None = None) -> Any:
        q = select(t.kv.c.value).where(t.kv.c.key == key)
        if conn is not None:
            raw = conn.execute(q).scalar()
        else:
            with self.read() as c:
                raw = c.execute(q).scalar()
        return default if raw is None else json.loads(raw)

    def kv_set(self, key: str, value: Any, conn: Connection | None = None) -> None:
        def _do(c: Connection) -> None:
            raw = json.dumps(value, ensure_ascii=False, default=str)
            if not c.execute(update(t.kv).where(t.kv.c.key == key).values(value=raw, updated_at=utcnow())).rowcount:
                c.execute(insert(t.kv).values(key=key, value=raw, updated_at=utcnow()))
        if conn is not None:
            _do(conn)
        else:
            with self.begin() as c:
                _do(c)

    def kv_swap(self, key: str, expected: Any, value: Any) -> bool:
        """Set `key` to `value` only if it still holds `expected` (None: absent); `value` None
        deletes it. True when swapped. What several instances sharing one database need to hand
        state over without losing each other's writes (a lock, a session record)."""
        raw = None if value is None else json.dumps(value, ensure_ascii=False, default=str)
        try:
            with self.begin() as c:
                q = select(t.kv.c.value).where(t.kv.c.key == key)
                cur = c.execute(q.with_for_update() if self.is_postgres else q).scalar()
                if (None if cur is None else json.loads(cur)) != expected:
                    return False
                if raw is None:
                    c.execute(delete(t.kv).where(t.kv.c.key == key))
                elif cur is None:
                    c.execute(insert(t.kv).values(key=key, value=raw, updated_at=utcnow()))
                else:
                    c.execute(update(t.kv).where(t.kv.c.key == key).values(value=raw, updated_at=utcnow()))
                return True
        except IntegrityError:            # another instance inserted the key first
            return False

    # -- leases (one instance runs a job at a time) ---------------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        now = time.time()
        with self.begin() as c:
            n = c.execute(update(t.leases).where(
                t.leases.c.name == name,
                or_(t.leases.c.holder == holder, t.leases.c.expires_at < now),
            ).values(holder=holder, expires_at=now + ttl)).rowcount
            if n:
                return True
            try:
                with c.begin_nested():
                    c.execute(insert(t.leases).values(name=name, holder=holder, expires_at=now + ttl))
                return True
            except IntegrityError:
                return False

    def lease_holder(self, name: str) -> str | None:
        """Who holds lease `name` now (expired or not), or None."""
        with self.read() as c:
            return c.execute(select(t.leases.c.holder).where(t.leases.c.name == name)).scalar()

    def take_lease_from(self, name: str, dead: str, holder: str, ttl: float) -> bool:
        """Take lease `name` from `dead` (a holder known not to run any more), if it still holds it."""
        with self.begin() as c:
            return bool(c.execute(update(t.leases).where(t.leases.c.name == name, t.leases.c.holder == dead)
                                  .values(holder=holder, expires_at=time.time() + ttl)).rowcount)

    def release_lease(self, name: str, holder: str) -> None:
        with self.begin() as c:
            c.execute(delete(t.leases).where(t.leases.c.name == name, t.leases.c.holder == holder))

    # -- rate budgets (one peer's request rate, shared by every instance) ------------------------
    def _db_now(self) -> Any:
        # on PostgreSQL the server's clock: instances on several hosts share one timeline
        if self.is_postgres:
            return func.extract("epoch", func.clock_timestamp())
        return literal(time.time())

    def take_rate(self, key: str, rate: float, burst: float) -> float:
        """Reserve the next request slot of budget `key` (`rate` a second, up to `burst` at once),
        for whichever instance asks; returns the seconds to wait before sending (GCRA: the budget
        is one number, its theoretical arrival time, moved in one statement)."""
        step = 1.0 / rate
        now = self._db_now()
        rb = t.rate_budgets.c
        ins = dialect_insert_for(self.engine.dialect.name, t.rate_budgets)
        stmt = ins.values(key=key, tat=now + step).on_conflict_do_update(
            index_elements=[rb.key], set_={"tat": case((rb.tat > now, rb.tat), else_=now) + step}
        ).returning(rb.tat, now)
        with self.begin() as c:
            tat, at = c.execute(stmt).one()
        return max(0.0, float(tat) - step * max(1.0, burst) - float(at))

    def rate_budget(self, key: str, rate: float, burst: float) -> "RateBudget | FileRateBudget":
        """A request-rate budget shared by every instance on this database: a row on PostgreSQL;
        a locked file beside a SQLite database (whose instances are processes of one machine, and
        whose one write lock a connector call inside a pull's transaction must never wait for)."""
        if self.is_postgres:
            return RateBudget(self, key, rate, burst)
        db = self.engine.url.database
        if not db or db == ":memory:":
            return FileRateBudget(None, rate, burst)
        digest = hashlib.sha1(key.encode()).hexdigest()[:12]
        return FileRateBudget(f"{db}.rate-{digest}", rate, burst)

    def fill_rate(self, key: str, rate: float, burst: float) -> None:
        """The peer said its budget is spent (QUERY_LIMIT_EXCEEDED): nobody sends until it drains."""
        now = self._db_now()
        full = now + max(1.0, burst) / rate
        rb = t.rate_budgets.c
        ins = dialect_insert_for(self.engine.dialect.name, t.rate_budgets)
        with self.begin() as c:
            c.execute(ins.values(key=key, tat=full).on_conflict_do_update(
                index_elements=[rb.key], set_={"tat": case((rb.tat > full, rb.tat), else_=full)}))

    # -- runs -----------------------------------------------------------------------------------
    def start_run(self, system: str, stream: str, instance: str = "") -> str:
        run_id = new_id()
        with self.begin() as c:
            c.execute(insert(t.runs).values(id=run_id, system=system, stream=stream, started_at=utcnow(),
                                            status="running", counts="{}", instance=instance))
        return run_id

    def finish_run(self, run_id: str, counts: dict[str, int], error: str | None = None) -> None:
        with self.begin() as c:
            c.execute(update(t.runs).where(t.runs.c.id == run_id).values(
                finished_at=utcnow(), status="failed" if error else "ok",
                counts=json.dumps(counts), error=error))

    def recent_runs(self, limit: int = 20, system: str | None = None) -> list[dict[str, Any]]:
        q = select(t.runs).order_by(t.runs.c.started_at.desc()).limit(limit)
        if system:
            q = q.where(t.runs.c.system == system)
        with self.read() as c:
            rows = c.execute(q).mappings().all()
        return [dict(r, counts=json.loads(r["counts"] or "{}"), started_at=_aware(r["started_at"]),
                     finished_at=_aware(r["finished_at"])) for r in rows]

    # -- quarantine -----------------------------------------------------------------------------
    def quarantine(self, conn: Connection, *, system: str, reason: str, stream: str | None = None,
                   kind: str | None = None, external_id: str | None = None, raw: Any = None,
                   run_id: str | None = None, record: str | None = None, entity_id: str | None = None) -> int:
        """Keep a record that could not be processed, whole, with why; returns its id."""
        raw_bytes = None
        if isinstance(raw, bytes):
            if b"\x00" in raw:
                raw_bytes = raw
            raw = _decode_raw(raw)
        elif raw is not None and not isinstance(raw, str):
            raw = json.dumps(raw, ensure_ascii=False, default=str)
        if raw is not None and "\x00" in raw:
            # PostgreSQL's text holds no NUL: the exact bytes are kept beside a readable form
            raw_bytes = raw_bytes or raw.encode("utf-8", "surrogatepass")
            raw = raw.replace("\x00", "\\x00")
        res = conn.execute(insert(t.quarantine).values(
            system=system, stream=stream, kind=kind, external_id=external_id, reason=reason, raw=raw,
            raw_bytes=raw_bytes,
            record=record, entity_id=entity_id, status="open", created_at=utcnow(), run_id=run_id))
        return int(res.inserted_primary_key[0])

    def list_quarantine(self, status: str = "open", limit: int = 100) -> list[dict[str, Any]]:
        q = select(t.quarantine).where(t.quarantine.c.status == status).order_by(t.quarantine.c.id.desc()).limit(limit)
        with self.read() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def quarantine_item(self, qid: int) -> dict[str, Any] | None:
        with self.read() as c:
            row = c.execute(select(t.quarantine).where(t.quarantine.c.id == qid)).mappings().first()
        return dict(row) if row is not None else None

    # -- review (identify) ----------------------------------------------------------------------
    def list_review(self, status: str = "open", limit: int = 100) -> list[dict[str, Any]]:
        q = select(t.review).where(t.review.c.status == status).order_by(t.review.c.id).limit(limit)
        with self.read() as c:
            return [dict(r, record=json.loads(r["record"]), candidates=json.loads(r["candidates"]))
                    for r in c.execute(q).mappings()]

    # -- conflicts ------------------------------------------------------------------------------
    def list_conflicts(self, status: str = "open", limit: int = 100) -> list[dict[str, Any]]:
        q = select(t.conflicts).where(t.conflicts.c.status == status).order_by(t.conflicts.c.id).limit(limit)
        with self.read() as c:
            return [dict(r, candidates=json.loads(r["candidates"])) for r in c.execute(q).mappings()]

    # -- outbox ---------------------------------------------------------------------------------
    def list_outbox(self, status: str = "dead", limit: int = 100) -> list[dict[str, Any]]:
        q = select(t.outbox).where(t.outbox.c.status == status).order_by(t.outbox.c.id).limit(limit)
        with self.read() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    # -- entities -------------------------------------------------------------------------------
    def entity(self, entity_id: str) -> dict[str, Any] | None:
        from syncd.schema import decode
        with self.read() as c:
            row = c.execute(select(t.entities).where(t.entities.c.id == entity_id)).mappings().first()
            if row is None:
                return None
            binds = c.execute(select(t.bindings.c.system, t.bindings.c.external_id)
                              .where(t.bindings.c.entity_id == entity_id)).all()
        return {"id": row["id"], "type": row["type"], "fields": decode(row["fields"]),
                "versions": json.loads(row["versions"]), "bindings": {s: e for s, e in binds},
                "hold": row["hold"], "merged_into": row["merged_into"]}

    def find_entity(self, system: str, type_: str, external_id: str) -> str | None:
        with self.read() as c:
            return c.execute(select(t.bindings.c.entity_id).where(
                t.bindings.c.system == system, t.bindings.c.type == type_,
                t.bindings.c.external_id == external_id)).scalar()

    def external_id(self, entity_id: str, system: str) -> str | None:
        with self.read() as c:
            return c.execute(select(t.bindings.c.external_id).where(
                t.bindings.c.entity_id == entity_id, t.bindings.c.system == system, t.bindings.c.alias.is_(False))
                .order_by(t.bindings.c.created_at).limit(1)).scalar()

    def count(self, table: str, **where: Any) -> int:
        tbl = t.metadata.tables[table]
        q = select(func.count()).select_from(tbl)
        for k, v in where.items():
            q = q.where(tbl.c[k] == v)
        with self.read() as c:
            return int(c.execute(q).scalar() or 0)


class RateBudget:
    """One peer's request rate, shared through the database by every instance (and every thread):
    `acquire()` before each request waits for its slot, `fill()` after the peer refused one."""

    def __init__(self, store: Store, key: str, rate: float, burst: float,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store, self.key, self.rate, self.burst = store, key, rate, burst
        self._sleep = sleep
        self._lock = threading.Lock()
        self._local_next = 0.0          # used only while the database cannot be asked

    def acquire(self) -> float:
        try:
            wait = self.store.take_rate(self.key, self.rate, self.burst)
        except Exception as exc:  # noqa: BLE001 - the database is down: pace this process alone
            _log.warning("rate_budget_unavailable", key=self.key, error=type(exc).__name__)
            with self._lock:
                now = time.monotonic()
                self._local_next = max(self._local_next, now) + 1.0 / self.rate
                wait = max(0.0, self._local_next - now - 1.0 / self.rate)
        if wait > 0:
            self._sleep(wait)
        return wait

    def fill(self) -> None:
        try:
            self.store.fill_rate(self.key, self.rate, self.burst)
        except Exception as exc:  # noqa: BLE001
            _log.warning("rate_budget_unavailable", key=self.key, error=type(exc).__name__)


class FileRateBudget:
    """The same budget (GCRA: one theoretical arrival time) in a small file under an exclusive
    lock: the processes of one machine sharing a SQLite database share it without a database write.
    `path` None: this process alone (an in-memory database)."""

    def __init__(self, path: str | None, rate: float, burst: float,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.path, self.rate, self.burst = path, rate, burst
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat = 0.0

    def _move(self, fn: Callable[[float, float], float]) -> tuple[float, float]:
        """Apply `fn(tat, now) -> new tat` atomically; returns (new tat, now)."""
        with self._lock:
            now = time.time()
            if self.path is None:
                self._tat = fn(self._tat, now)
                return self._tat, now
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                raw = os.pread(fd, 64, 0)
                try:
                    tat = float(raw.decode().strip() or 0)
                except ValueError:
                    tat = 0.0
                now = time.time()
                new = fn(tat, now)
                data = repr(new).encode()
                os.pwrite(fd, data.ljust(32), 0)
                return new, now
            finally:
                os.close(fd)

    def acquire(self) -> float:
        step = 1.0 / self.rate
        tat, now = self._move(lambda tat, now: max(tat, now) + step)
        wait = max(0.0, tat - step * max(1.0, self.burst) - now)
        if wait > 0:
            self._sleep(wait)
        return wait

    def fill(self) -> None:
        full = max(1.0, self.burst) / self.rate
        self._move(lambda tat, now: max(tat, now + full))
