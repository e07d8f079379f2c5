"""The operator's actions on an integration, as the status page runs them: a connection check (the
same findings as `syncd check`), a backfill for a period in the background with its progress, run
now, pause and resume.

A backfill runs on a thread of its own in this process; the page polls `Backfills.view(id)`.
Only one backfill per system runs at a time. Each of its stream reads waits for the stream's own
scheduled run to finish first (Runtime.run_stream's per-stream lock), so the two never ingest
the same stream at once.
"""

from __future__ import annotations

import datetime as dt
import threading
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import func, select

from syncd.check import Finding
from syncd.daemon.i18n import N_, Conflict, NotFound, Refusal
from syncd.daemon.runtime import Runtime
from syncd.pipeline.counts import Counts
from syncd.store import tables as t
from syncd.store import utcnow

log = structlog.get_logger("syncd.operations")


# -- connection check -----------------------------------------------------------------------------
def check_system(rt: Runtime, system: str) -> list[Finding]:
    """`syncd check` for one system: its connection (health), then whatever of the config and
    the mappings concerns it, each finding naming file and key."""
    from syncd import check as checks

    conn = rt.connectors.get(system)
    if conn is None:
        raise NotFound(N_("no system {system}"), system=system)
    try:
        h = conn.health()
        out = [Finding(system, h.ok, h.detail)]
    except Exception as exc:  # noqa: BLE001 - a check reports, it does not raise
        out = [Finding(system, False, f"{type(exc).__name__}: {exc}")]
    one = {system: conn}
    try:
        origins = checks.MappingOrigins(rt.settings)
    except Exception as exc:  # noqa: BLE001 - a mapping file that went bad since start
        return [*out, Finding("mappings", False, str(exc))]
    mine = [f for f in checks.check_map_targets(rt.settings, rt.mapper, rt.connectors, origins)
            if f"({system}." in f.detail]
    jobs = checks.check_jobs(rt.settings, one)
    try:
        live = checks.check_live_mappings(rt.mapper, one, origins)
    except Exception as exc:  # noqa: BLE001
        live = [Finding(f"{system} mapping", False, f"{type(exc).__name__}: {exc}")]
    return out + jobs + mine + live


def check_all(rt: Runtime) -> list[Finding]:
    """Every system, the database first: what `syncd check` prints, against the running config."""
    out: list[Finding] = []
    try:
        rt.store.ping()
        out.append(Finding("database", True, rt.store.engine.url.render_as_string(hide_password=True)))
    except Exception as exc:  # noqa: BLE001
        out.append(Finding("database", False, f"{type(exc).__name__}: {exc}"))
    for name in rt.connectors:
        out += check_system(rt, name)
    return out


# -- backfill -------------------------------------------------------------------------------------
@dataclass
class StreamProgress:
    stream: str
    read: int = 0
    total: int | None = None          # when the source says how many records are coming
    state: str = "waiting"            # waiting | reading | done | failed
    error: str | None = None

    def fraction(self) -> float:
        if self.state in ("done", "failed"):
            return 1.0
        if self.state == "reading" and self.total:
            return min(1.0, self.read / self.total)
        return 0.0


@dataclass
class Backfill:
    id: str
    system: str
    since: dt.datetime
    streams: list[StreamProgress]
    started_at: dt.datetime = field(default_factory=utcnow)
    finished_at: dt.datetime | None = None
    state: str = "running"            # running | pushing | done | failed
    counts: Counts = field(default_factory=Counts)
    pending_start: int | None = None  # writes waiting when the push began
    pending_now: int | None = None
    error: str | None = None

    def fraction(self) -> float:
        """0..1: each stream one share, the push of what was read the last share."""
        if self.state in ("done", "failed"):
            return 1.0
        shares = [s.fraction() for s in self.streams]
        push = 0.0
        if self.state == "pushing" and self.pending_start:
            push = max(0.0, 1.0 - (self.pending_now or 0) / self.pending_start)
        return (sum(shares) + push) / (len(shares) + 1)

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "system": self.system, "since": self.since.isoformat(), "state": self.state,
                "fraction": round(self.fraction(), 4), "percent": int(self.fraction() * 100),
                "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None,
                "streams": [{"stream": s.stream, "read": s.read, "total": s.total, "state": s.state,
                             "error": s.error} for s in self.streams],
                "records_read": sum(s.read for s in self.streams),
                "pending_start": self.pending_start, "pending_now": self.pending_now,
                "counts": {k: v for k, v in self.counts.as_dict().items() if v}, "error": self.error}


class Backfills:
    """Backfills started from the page, kept in memory (the last few per system)."""

    KEEP = 20

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._jobs: dict[str, Backfill] = {}
        self._lock = threading.Lock()

    def start(self, system: str, since: dt.datetime) -> Backfill:
        conn = self.rt.connectors.get(system)
        if conn is None:
            raise NotFound(N_("no system {system}"), system=system)
        if not conn.streams:
            raise Refusal(N_("{system} has nothing to import: its peer calls syncd itself"), system=system)
        if self.rt.is_paused(system):
            raise Conflict(N_("{system} is paused; resume it first"), system=system)
        if since > utcnow():
            raise Refusal(N_("the start of the period is in the future"))
        with self._lock:
            running = [j for j in self._jobs.values() if j.system == system and j.state in ("running", "pushing")]
            if running:
                raise Conflict(N_("an import of {system} is already running"), system=system)
            job = Backfill(uuid.uuid4().hex[:12], system, since, [StreamProgress(s) for s in conn.streams])
            self._jobs[job.id] = job
            old = sorted(self._jobs.values(), key=lambda j: j.started_at)[:-self.KEEP]
            for j in old:
                if j.state in ("done", "failed"):
                    del self._jobs[j.id]
        threading.Thread(target=self._run, args=(job,), name=f"backfill:{system}", daemon=True).start()
        log.info("backfill_started", system=system, since=since.isoformat(), job=job.id)
        return job

    def get(self, job_id: str) -> Backfill:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(N_("no import {id}"), id=job_id)
        return job

    def latest(self) -> dict[str, Backfill]:
        """The newest backfill of each system."""
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j.started_at)
        return {j.system: j for j in jobs}

    def _pending(self) -> int:
        with self.rt.store.read() as c:
            return int(c.execute(select(func.count()).select_from(t.outbox).where(
                t.outbox.c.status.in_(("pending", "sending")))).scalar() or 0)

    def _run(self, job: Backfill) -> None:
        try:
            for sp in job.streams:
                sp.state = "reading"

                def advance(n: int, total: int | None = None, sp: StreamProgress = sp) -> None:
                    sp.read += n
                    if total is not None:
                        sp.total = max(total, sp.read)

                c = self.rt.run_stream(job.system, sp.stream, since=job.since, progress=advance, wait=True)
                if c is None:
                    sp.state, sp.error = "failed", "another instance is reading this stream now; try again later"
                    continue
                job.counts.add(c)
                run = self.rt.store.recent_runs(1, system=job.system)
                if c.failed and run and run[0].get("error"):
                    sp.state, sp.error = "failed", run[0]["error"]
                else:
                    sp.state = "done"
            job.state = "pushing"
            job.pending_start = job.pending_now = self._pending()
            for name in self.rt.connectors:
                if self.rt.is_paused(name):
                    continue
                job.counts.add(self.rt.push(name))
                job.pending_now = self._pending()
            failed = [s for s in job.streams if s.state == "failed"]
            job.state = "failed" if failed else "done"
            if failed:
                job.error = "; ".join(f"{s.stream}: {s.error}" for s in failed)
        except Exception as exc:  # noqa: BLE001 - reported on the page; the daemon goes on
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
            log.error("backfill_failed", system=job.system, error=job.error, tb=traceback.format_exc())
        finally:
            job.finished_at = utcnow()
            log.info("backfill_finished", system=job.system, job=job.id, state=job.state,
                     **{k: v for k, v in job.counts.as_dict().items() if v})


# -- run now, pause ---------------------------------------------------------------------------------
def run_now(rt: Runtime, system: str) -> list[str]:
    """Poll every stream of `system` now (the scheduler runs them and pushes what they bring)."""
    conn = rt.connectors.get(system)
    if conn is None:
        raise NotFound(N_("no system {system}"), system=system)
    if rt.is_paused(system):
        raise Conflict(N_("{system} is paused; resume it first"), system=system)
    if not conn.streams:
        raise Refusal(N_("{system} has nothing to poll: its peer calls syncd itself"), system=system)
    for stream in conn.streams:
        rt.trigger(system, stream)
    return list(conn.streams)
