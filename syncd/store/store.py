"""The Store facade: one object the engine, daemon, CLI and connectors use to reach the database.

Pipeline stages run their own bulk statements inside `store.begin()`; everything else (cursors,
leases, runs, queues, stats) has a named method here.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from syncd.store import tables as t
from syncd.store.db import WRITE, make_engine, migrate


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
        """A write transaction (on SQLite it takes the write lock at BEGIN)."""
        if self._writer is None:
            with self.engine.connect() as conn:
                conn.execution_options(**{WRITE: True})
                with conn.begin():
                    yield conn
            return
        with self._writer, self.engine.connect() as conn:
            conn.execution_options(**{WRITE: True})
            with conn.begin():
                yield conn

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

    def release_lease(self, name: str, holder: str) -> None:
        with self.begin() as c:
            c.execute(delete(t.leases).where(t.leases.c.name == name, t.leases.c.holder == holder))

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
        if isinstance(raw, bytes):
            raw = _decode_raw(raw)
        elif raw is not None and not isinstance(raw, str):
            raw = json.dumps(raw, ensure_ascii=False, default=str)
        res = conn.execute(insert(t.quarantine).values(
            system=system, stream=stream, kind=kind, external_id=external_id, reason=reason, raw=raw,
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

    def replay(self, ids: list[int] | None = None) -> int:
        """Put dead-lettered writes back in the queue (all, or the given ids); the writes that
        waited for them look again."""
        from syncd.pipeline.outbox import replay

        return replay(self, ids)

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
