"""Prometheus view of the daemon's statistics (`/metrics`), computed at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from syncd.daemon.i18n import to_datetime
from syncd.daemon.runtime import Runtime
from syncd.store import utcnow
from syncd.store.stats import COUNT_KEYS

log = structlog.get_logger("syncd.http")


class StatsCollector(Collector):
    """Prometheus view of `runtime.stats()`, computed at scrape time."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("syncd_up", "1 when the daemon can read its database")
        try:
            st = self.rt.stats()
        except Exception as exc:  # noqa: BLE001 - a scrape reports, it does not raise
            log.warning("metrics_stats_failed", error=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        uptime = GaugeMetricFamily("syncd_uptime_seconds", "Seconds since the daemon started")
        uptime.add_metric([], max(0.0, (utcnow() - self.rt.started_at).total_seconds()))
        yield uptime
        info = GaugeMetricFamily("syncd_instance_info", "The instance name", labels=["instance"])
        info.add_metric([self.rt.instance], 1)
        yield info

        integ = st.get("integrations", {})
        records = CounterMetricFamily("syncd_records", "Records by result since the daemon started",
                                      labels=["integration", "result"])
        day = GaugeMetricFamily("syncd_records_last_24h", "Records by result in the last 24 hours",
                                labels=["integration", "result"])
        pending = GaugeMetricFamily("syncd_outbox_pending", "Writes waiting in the outbox", labels=["integration"])
        dead = GaugeMetricFamily("syncd_outbox_dead", "Dead-lettered writes", labels=["integration"])
        blocked = GaugeMetricFamily("syncd_outbox_blocked", "Writes waiting for a record they link to",
                                    labels=["integration"])
        waiting = GaugeMetricFamily("syncd_outbox_waiting_peer",
                                    "Writes waiting for their system to fetch them (1C's next exchange)",
                                    labels=["integration"])
        lag = GaugeMetricFamily("syncd_lag_seconds", "Age of the oldest pending write (0 when in step)",
                                labels=["integration"])
        quar = GaugeMetricFamily("syncd_quarantine_open", "Open quarantine items", labels=["integration"])
        review = GaugeMetricFamily("syncd_review_open", "Open identify reviews", labels=["integration"])
        last = GaugeMetricFamily("syncd_last_run_timestamp_seconds", "When the last run finished (or started)",
                                 labels=["integration"])
        last_ok = GaugeMetricFamily("syncd_last_success_timestamp_seconds", "When the last successful run ended",
                                    labels=["integration"])
        last_failed = GaugeMetricFamily("syncd_last_run_failed", "1 when the last run failed",
                                        labels=["integration"])
        for name, it in integ.items():
            for k in COUNT_KEYS:
                records.add_metric([name, k], float(it.get("counts", {}).get(k, 0)))
                day.add_metric([name, k], float(it.get("last_24h", {}).get(k, 0)))
            ob = it.get("outbox", {})
            pending.add_metric([name], float(ob.get("pending", 0)))
            dead.add_metric([name], float(ob.get("dead", 0)))
            blocked.add_metric([name], float(ob.get("blocked", 0)))
            if "waiting" in ob:
                waiting.add_metric([name], float(ob["waiting"]))
            if it.get("lag_seconds") is not None:
                lag.add_metric([name], float(it["lag_seconds"]))
            quar.add_metric([name], float(it.get("quarantine_open", 0)))
            review.add_metric([name], float(it.get("review_open", 0)))
            lr = it.get("last_run")
            if lr:
                ts = _ts(lr.get("finished_at") or lr.get("started_at"))
                if ts is not None:
                    last.add_metric([name], ts)
                last_failed.add_metric([name], 1.0 if lr.get("result") == "failed" else 0.0)
            ts = _ts(it.get("last_ok_at"))
            if ts is not None:
                last_ok.add_metric([name], ts)
        yield from (records, day, pending, blocked, dead, waiting, lag, quar, review, last, last_ok, last_failed)
        conflicts = GaugeMetricFamily("syncd_conflicts_open", "Open field conflicts")
        conflicts.add_metric([], float(st.get("totals", {}).get("conflicts_open", 0)))
        yield conflicts
        stale = GaugeMetricFamily("syncd_outbox_blocked_stale",
                                  "Writes blocked on a record that exists (0 unless a wake-up was missed)")
        stale.add_metric([], float(st.get("totals", {}).get("outbox_blocked_stale", 0)))
        yield stale
        drift = GaugeMetricFamily("syncd_drift_records",
                                  "Records the last audit found out of step with a system", labels=["integration"])
        for name, it in st.get("integrations", {}).items():
            drift.add_metric([name], float(it.get("drift_records", 0)))
        yield drift
        repaired = CounterMetricFamily("syncd_outbox_blocked_stale_repaired",
                                       "Blocked writes the outbox sweep woke since the daemon started")
        repaired.add_metric([], float(st.get("totals", {}).get("outbox_blocked_stale_repaired", 0)))
        yield repaired


def _ts(v: Any) -> float | None:
    if not v:
        return None
    when = to_datetime(v)
    return when.timestamp() if when is not None else None


__all__ = ["StatsCollector"]
