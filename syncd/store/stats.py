"""Statistics per integration for /stats, /metrics, the status page and `syncd stats`."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Collection

from sqlalchemy import func, select

from syncd.store import tables as t
from syncd.store.store import Store, _aware, utcnow

COUNT_KEYS = ("created", "updated", "skipped", "failed", "conflicts", "quarantined", "review", "pushed", "dead",
              "blocked", "uncreated")


def _sum(into: dict[str, int], counts: dict[str, Any]) -> None:
    for k in COUNT_KEYS:
        into[k] = into.get(k, 0) + int(counts.get(k, 0) or 0)


def collect(store: Store, systems: list[str], started_at: dt.datetime | None = None,
            downloads: Collection[str] = ()) -> dict[str, Any]:
    """`downloads`: systems that fetch their writes when they connect (1C): their open writes wait
    for the peer (`outbox.waiting`, with since when and the peer's last exchange), apart from
    writes syncd is late with; their lag is the age of the oldest one the peer left at its last
    exchange."""
    now = utcnow()
    day_ago = now - dt.timedelta(hours=24)
    started_at = started_at or now
    out: dict[str, Any] = {"generated_at": now.isoformat(), "started_at": started_at.isoformat(),
                           "integrations": {}, "totals": {}}
    with store.read() as c:
        outbox: dict[str, dict[str, int]] = {}
        for system, status, n in c.execute(select(t.outbox.c.system, t.outbox.c.status, func.count())
                                           .group_by(t.outbox.c.system, t.outbox.c.status)):
            outbox.setdefault(system, {})[status] = n
        oldest: dict[str, dt.datetime] = {}
        for system, ts in c.execute(select(t.outbox.c.system, func.min(t.outbox.c.created_at))
                                    .where(t.outbox.c.status.in_(("pending", "sending")))
                                    .group_by(t.outbox.c.system)):
            oldest[system] = _aware(ts)  # type: ignore[assignment]
        quarantine = dict(c.execute(select(t.quarantine.c.system, func.count())
                                    .where(t.quarantine.c.status == "open").group_by(t.quarantine.c.system)).all())
        review = dict(c.execute(select(t.review.c.system, func.count())
                                .where(t.review.c.status == "open").group_by(t.review.c.system)).all())
        open_conflicts = c.execute(select(func.count()).select_from(t.conflicts)
                                   .where(t.conflicts.c.status == "open")).scalar() or 0
        runs = c.execute(select(t.runs.c.system, t.runs.c.stream, t.runs.c.started_at, t.runs.c.finished_at,
                                t.runs.c.status, t.runs.c.counts, t.runs.c.error)
                         .where(t.runs.c.started_at >= min(day_ago, started_at))
                         .order_by(t.runs.c.started_at)).all()
        last_runs: dict[str, dict[str, Any]] = {}
        for system in systems:
            row = c.execute(select(t.runs).where(t.runs.c.system == system, t.runs.c.stream != "push")
                            .order_by(t.runs.c.started_at.desc()).limit(1)).mappings().first()
            if row:
                last_runs[system] = dict(row)
            ok = c.execute(select(func.max(t.runs.c.finished_at)).where(
                t.runs.c.system == system, t.runs.c.status == "ok", t.runs.c.stream != "push")).scalar()
            last_runs.setdefault(system, {})["last_ok"] = _aware(ok)
    totals_since: dict[str, int] = {}
    totals_day: dict[str, int] = {}
    per: dict[str, dict[str, Any]] = {s: {"since_start": {}, "last_24h": {}} for s in systems}
    waiting_total = {"documents": 0}
    for system, _stream, st, _fin, _status, counts, _err in runs:
        counts = json.loads(counts or "{}")
        st = _aware(st)
        bucket = per.setdefault(system, {"since_start": {}, "last_24h": {}})
        if st >= day_ago:
            _sum(bucket["last_24h"], counts)
            _sum(totals_day, counts)
        if st >= started_at:
            _sum(bucket["since_start"], counts)
            _sum(totals_since, counts)
    for system in systems:
        lr = last_runs.get(system, {})
        ob = outbox.get(system, {})
        lag = None
        waiting: dict[str, Any] | None = None
        if system in downloads:
            exchanged = store.kv_get(f"conn:{system}:last_exchange")
            seen = dt.datetime.fromtimestamp(exchanged, dt.UTC) if exchanged else None
            waiting = {"documents": ob.get("pending", 0) + ob.get("sending", 0),
                       "since": _iso(oldest.get(system)), "last_exchange": _iso(seen)}
            ob = {k: v for k, v in ob.items() if k not in ("pending", "sending")}
            # late only with what the peer could have taken at its last exchange
            lag = 0.0
            if system in oldest and seen is not None and oldest[system] < seen:
                lag = max(0.0, (now - oldest[system]).total_seconds())
            waiting_total["documents"] += waiting["documents"]
        elif system in oldest:
            lag = max(0.0, (now - oldest[system]).total_seconds())
        elif lr.get("last_ok"):
            lag = 0.0
        out["integrations"][system] = {
            "last_run": None if "id" not in lr else {
                "stream": lr["stream"], "started_at": _iso(lr["started_at"]),
                "finished_at": _iso(lr["finished_at"]), "result": lr["status"], "error": lr["error"],
                "counts": json.loads(lr["counts"] or "{}")},
            "last_ok_at": _iso(lr.get("last_ok")),
            "counts": {k: per[system]["since_start"].get(k, 0) for k in COUNT_KEYS},
            "last_24h": {k: per[system]["last_24h"].get(k, 0) for k in COUNT_KEYS},
            "lag_seconds": lag,
            "outbox": {"pending": ob.get("pending", 0) + ob.get("sending", 0), "blocked": ob.get("blocked", 0),
                       "dead": ob.get("dead", 0), "done": ob.get("done", 0)},
            "quarantine_open": quarantine.get(system, 0),
            "review_open": review.get(system, 0),
        }
        if waiting is not None:
            out["integrations"][system]["outbox"]["waiting"] = waiting["documents"]
            out["integrations"][system]["waiting_peer"] = waiting
    warnings = store.kv_get("rules:warnings", {}) or {}
    out["rules"] = {"warnings": int(warnings.get("total", 0)), "by_rule": warnings.get("by_rule", {}),
                    "last": warnings.get("last", [])[:5]}
    out["totals"] = {"since_start": {k: totals_since.get(k, 0) for k in COUNT_KEYS},
                     "last_24h": {k: totals_day.get(k, 0) for k in COUNT_KEYS},
                     "conflicts_open": open_conflicts,
                     "quarantine_open": sum(quarantine.values()),
                     "review_open": sum(review.values()),
                     "outbox_pending": sum(v.get("pending", 0) + v.get("sending", 0) for s, v in outbox.items()
                                           if s not in downloads),
                     "outbox_waiting": waiting_total["documents"],
                     "outbox_blocked": sum(v.get("blocked", 0) for v in outbox.values()),
                     "outbox_dead": sum(v.get("dead", 0) for v in outbox.values())}
    return out


def _iso(v: Any) -> str | None:
    v = _aware(v)
    return v.isoformat() if v else None
