"""Retention: what syncd no longer needs is purged, so the database stops growing forever.

Purged once a day (the daemon's `retention` job; `syncd purge` by hand), when older than
`[daemon] retention_days` (default 90, 0 keeps everything):

- outbox rows with status `done` (by `updated_at`, when they were confirmed): pending, sending and
  dead writes are never touched;
- runs (by `started_at`), except the latest run of each system and stream, which `/stats` shows;
- change-log rows (by `observed_at`): the audit trail of older changes.

Each batch (`batch` rows, 5,000 by default) is its own short transaction, with a pause between
batches, so on SQLite the write lock is never held for more than one batch and the sync jobs get it
between them; a stop event ends the purge between batches (shutdown). Nothing else reads these
rows: the engine works from entities, shadows, bindings and the open outbox rows.

SQLite reuses the freed pages, so the file stops growing but does not shrink (`VACUUM` with the
daemon stopped gives the space back to the file system).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import ColumnElement, delete, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from syncd.store import tables as t
from syncd.store.store import Store, utcnow

BATCH = 5000
PAUSE = 0.05  # seconds between batches: room for the sync jobs' transactions


@dataclass
class Purged:
    outbox: int = 0
    runs: int = 0
    changelog: int = 0
    batches: int = 0
    cutoff: dt.datetime | None = None
    stopped: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "outbox": self.outbox,
            "runs": self.runs,
            "changelog": self.changelog,
            "batches": self.batches,
            "cutoff": self.cutoff.isoformat() if self.cutoff else None,
            "stopped": self.stopped,
            "seconds": round(self.seconds, 3),
        }


def _latest_runs(store: Store) -> list[str]:
    """The latest run of each (system, stream): /stats shows it however old it is."""
    r = t.runs.c
    keep = []
    with store.read() as c:
        latest = c.execute(
            select(r.system, r.stream, func.max(r.started_at)).group_by(r.system, r.stream)
        ).all()
        for system, stream, started in latest:
            keep += (
                c.execute(
                    select(r.id)
                    .where(r.system == system, r.stream == stream, r.started_at == started)
                    .limit(1)
                )
                .scalars()
                .all()
            )
    return keep


def _targets(store: Store, cutoff: dt.datetime) -> list[tuple[str, Any, Any, ColumnElement[bool]]]:
    keep = _latest_runs(store)
    runs_cond = t.runs.c.started_at < cutoff
    if keep:
        runs_cond = runs_cond & t.runs.c.id.not_in(keep)
    return [
        ("outbox", t.outbox, t.outbox.c.id, (t.outbox.c.status == "done") & (t.outbox.c.updated_at < cutoff)),
        ("runs", t.runs, t.runs.c.id, runs_cond),
        ("changelog", t.changelog, t.changelog.c.id, t.changelog.c.observed_at < cutoff),
    ]


def purge(
    store: Store,
    older_than: dt.timedelta,
    *,
    batch: int = BATCH,
    pause: float = PAUSE,
    stop: threading.Event | None = None,
    now: dt.datetime | None = None,
    on_batch: Callable[[str, int], None] | None = None,
) -> Purged:
    """Delete what is older than `older_than`, `batch` rows per transaction; returns the counts.

    `on_batch(table, rows)` is called after each committed batch, outside any transaction.
    """
    started = time.monotonic()
    cutoff = (now or utcnow()) - older_than
    out = Purged(cutoff=cutoff)
    for name, table, id_col, cond in _targets(store, cutoff):
        while True:
            if stop is not None and stop.is_set():
                out.stopped = True
                break
            # ids in order: the oldest rows are at the low ids, so each batch reads only what it deletes
            chosen = select(id_col).where(cond).order_by(id_col).limit(batch)
            with store.begin() as c:
                n = c.execute(delete(table).where(id_col.in_(chosen))).rowcount or 0
            if not n:
                break
            setattr(out, name, getattr(out, name) + n)
            out.batches += 1
            if on_batch is not None:
                on_batch(name, n)
            if n < batch:
                break
            if pause:
                time.sleep(pause)
        if out.stopped:
            break
    out.seconds = time.monotonic() - started
    return out


def database_size(store: Store) -> dict[str, Any]:
    """How big the database is: the file (and its WAL) for SQLite, pg_database_size for PostgreSQL."""
    if store.is_postgres:
        try:
            with store.read() as c:
                size = int(c.execute(text("SELECT pg_database_size(current_database())")).scalar() or 0)
        except SQLAlchemyError:
            return {"backend": "postgresql", "size_bytes": None}
        return {"backend": "postgresql", "size_bytes": size}
    from pathlib import Path

    db = store.engine.url.database
    if not db or db == ":memory:":
        return {"backend": "sqlite", "size_bytes": None}
    main = Path(db)
    wal = Path(db + "-wal")
    size = main.stat().st_size if main.exists() else 0
    wal_size = wal.stat().st_size if wal.exists() else 0
    return {
        "backend": "sqlite",
        "size_bytes": size + wal_size,
        "file_bytes": size,
        "wal_bytes": wal_size,
        "path": str(main),
    }
