"""What the status page shows at a glance, besides `/stats`: throughput and lag over the last 24 h,
the recent runs without the noise of empty ones, and when a peer that calls syncd (1C) last did.

Throughput comes from the runs table (each run's counts, bucketed by hour). Lag has no history in
the store, so the daemon samples it every few minutes (`sample_lag`, a scheduler job) into one
key/value row that keeps 24 h of points per system: small, shared by instances on one database,
and kept across restarts.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from syncd.store import Store, utcnow
from syncd.store import tables as t

LAG_KEY = "page:lag_history"
HOURS = 24
SAMPLE_EVERY = 300.0              # seconds between lag samples
IN_KEYS = ("created", "updated")  # records taken in from a system
OUT_KEYS = ("pushed",)            # writes made to it


def _aware(v: Any) -> dt.datetime | None:
    if v is None:
        return None
    return v if v.tzinfo is not None else v.replace(tzinfo=dt.UTC)


# -- throughput -----------------------------------------------------------------------------------
@dataclass
class Throughput:
    """Per hour of the last 24 h (oldest first): records in, writes out, failures."""

    start: dt.datetime
    records_in: list[int] = field(default_factory=lambda: [0] * HOURS)
    records_out: list[int] = field(default_factory=lambda: [0] * HOURS)
    failed: list[int] = field(default_factory=lambda: [0] * HOURS)

    @property
    def total(self) -> list[int]:
        return [a + b for a, b in zip(self.records_in, self.records_out)]


def throughput(store: Store, systems: list[str], now: dt.datetime | None = None) -> dict[str, Throughput]:
    now = now or utcnow()
    end = now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    start = end - dt.timedelta(hours=HOURS)
    out = {s: Throughput(start) for s in systems}
    with store.read() as c:
        rows = c.execute(select(t.runs.c.system, t.runs.c.started_at, t.runs.c.counts)
                         .where(t.runs.c.started_at >= start)).all()
    for system, started, counts in rows:
        tp = out.get(system)
        if tp is None:
            continue
        i = int(((_aware(started) or start) - start).total_seconds() // 3600)
        if not 0 <= i < HOURS:
            continue
        cs = json.loads(counts or "{}")
        tp.records_in[i] += sum(int(cs.get(k, 0) or 0) for k in IN_KEYS)
        tp.records_out[i] += sum(int(cs.get(k, 0) or 0) for k in OUT_KEYS)
        tp.failed[i] += int(cs.get("failed", 0) or 0) + int(cs.get("dead", 0) or 0)
    return out


# -- lag ------------------------------------------------------------------------------------------
def current_lag(store: Store, systems: list[str], now: dt.datetime | None = None) -> dict[str, float]:
    """Age of each system's oldest write waiting to be sent (0 when none), as /stats counts it."""
    now = now or utcnow()
    with store.read() as c:
        oldest = dict(c.execute(select(t.outbox.c.system, func.min(t.outbox.c.created_at))
                                .where(t.outbox.c.status.in_(("pending", "sending")))
                                .group_by(t.outbox.c.system)).all())
    return {s: max(0.0, (now - _aware(oldest[s])).total_seconds()) if oldest.get(s) else 0.0  # type: ignore[operator]
            for s in systems}


def sample_lag(store: Store, systems: list[str], now: dt.datetime | None = None) -> dict[str, list[list[float]]]:
    """Add one lag point per system to the history and drop points older than 24 h."""
    now = now or utcnow()
    lag = current_lag(store, systems, now)
    ts = now.timestamp()
    cutoff = ts - HOURS * 3600
    hist: dict[str, list[list[float]]] = store.kv_get(LAG_KEY, {}) or {}
    for s in systems:
        points = [p for p in hist.get(s, []) if p[0] >= cutoff]
        points.append([round(ts, 1), round(lag[s], 1)])
        hist[s] = points
    for s in [s for s in hist if s not in systems]:
        del hist[s]
    store.kv_set(LAG_KEY, hist)
    return hist


def lag_history(store: Store, systems: list[str], now: dt.datetime | None = None) -> dict[str, list[tuple[float, float]]]:
    """(unix time, lag seconds) points of the last 24 h per system, oldest first."""
    now = now or utcnow()
    cutoff = now.timestamp() - HOURS * 3600
    hist = store.kv_get(LAG_KEY, {}) or {}
    return {s: [(float(p[0]), float(p[1])) for p in hist.get(s, []) if p[0] >= cutoff] for s in systems}


# -- peers that call syncd ------------------------------------------------------------------------
def last_exchanges(store: Store, systems: list[str]) -> dict[str, float]:
    """When each push-based peer last called syncd (the 1C connector keeps `last_exchange`)."""
    keys = {f"conn:{s}:last_exchange": s for s in systems}
    with store.read() as c:
        rows = c.execute(select(t.kv.c.key, t.kv.c.value).where(t.kv.c.key.in_(list(keys)))).all()
    out: dict[str, float] = {}
    for key, raw in rows:
        try:
            v = json.loads(raw)
        except ValueError:
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[keys[key]] = float(v)
    return out


# -- recent runs ----------------------------------------------------------------------------------
def _empty(run: dict[str, Any]) -> bool:
    """Nothing happened: no error and no count but `skipped` (own writes read back)."""
    if run.get("error") or run.get("status") == "running":
        return False
    return not any(v for k, v in (run.get("counts") or {}).items() if k != "skipped")


@dataclass
class Folded:
    """The runs that did nothing, as one line."""

    runs: list[dict[str, Any]]

    @property
    def first(self) -> dt.datetime | None:
        return self.runs[-1].get("started_at") if self.runs else None

    @property
    def last(self) -> dt.datetime | None:
        return self.runs[0].get("started_at") if self.runs else None

    @property
    def streams(self) -> list[tuple[str, int]]:
        """("system/stream", how many) by number of runs, most first."""
        seen: dict[str, int] = {}
        for r in self.runs:
            name = f"{r.get('system')}/{r.get('stream')}"
            seen[name] = seen.get(name, 0) + 1
        return sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))


def fold_runs(runs: list[dict[str, Any]], limit: int = 25) -> list[dict[str, Any] | Folded]:
    """Runs newest first: the ones that did something each on a line (at most `limit`), and one line
    first for all those that did nothing in the same span (push ticks with nothing to send, polls
    without changes) — the noise of a daemon that polls every minute."""
    busy: list[dict[str, Any]] = []
    idle: list[dict[str, Any]] = []
    for r in runs:
        if _empty(r):
            idle.append(r)
        elif len(busy) < limit:
            busy.append(r)
    if len(busy) == limit and busy[-1].get("started_at") is not None:
        oldest = busy[-1]["started_at"]
        idle = [r for r in idle if r.get("started_at") is None or r["started_at"] >= oldest]
    return ([Folded(idle)] if idle else []) + list(busy)
