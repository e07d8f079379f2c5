"""APScheduler 3.x: one job per (integration, stream) from config, plus a push job per system.

Jobs coalesce, never overlap (`max_instances=1`) and tolerate a late start (misfire grace).
Webhooks call `trigger(system, stream)` to run a stream's job now instead of at its next tick.
A daily `retention` job purges what is older than `retention_days` (syncd.store.retention).

At `info` a run is logged only when it did something (one `run` line with its non-zero counts);
job starts and empty polls are not news (`debug`).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from syncd.config import parse_duration
from syncd.daemon.runtime import Runtime

log = structlog.get_logger("syncd.scheduler")


RETENTION_EVERY = 86400.0          # seconds between purges
RETENTION_FIRST = 600.0           # the first purge waits until start-up traffic has settled


def job_id(system: str, stream: str) -> str:
    return f"{system}:{stream}"


def log_run(system: str, stream: str, counts: Any) -> None:
    """One info line for a run that did something; an empty poll, or one that only skipped records
    it already had (its own writes read back), is debug."""
    done = {k: v for k, v in (counts.as_dict() if counts is not None else {}).items() if v}
    if set(done) - {"skipped"}:
        log.info("run", system=system, stream=stream, **done)
    else:
        log.debug("run_idle", system=system, stream=stream, **done)


class Scheduler:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.sched = BackgroundScheduler(timezone="UTC", job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": 60})
        self._stopping = False
        self._stop_event = threading.Event()       # ends a purge between two batches
        runtime.trigger_hook = self.trigger
        # "skipped: maximum number of running instances reached" is our design (max_instances=1), not news
        # (the executors' "Running job …" chatter is quieted in syncd.logs)
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)

    def _run_stream(self, system: str, stream: str) -> None:
        if self._stopping:
            return
        try:
            log_run(system, stream, self.rt.run_stream(system, stream))
        except Exception as exc:  # noqa: BLE001 - a failed run is recorded; the schedule goes on
            log.error("job_failed", system=system, stream=stream, error=f"{type(exc).__name__}: {exc}")
        # what was pulled is pushed without waiting for the push tick
        self._push(None)

    def _push(self, system: str | None) -> None:
        if self._stopping:
            return
        for name in [system] if system else list(self.rt.connectors):
            try:
                log_run(name, "push", self.rt.push(name))
            except Exception as exc:  # noqa: BLE001
                log.error("push_failed", system=name, error=f"{type(exc).__name__}: {exc}")

    def _trigger_for(self, every: str | None, cron: str | None) -> Any:
        if cron:
            return CronTrigger.from_crontab(cron, timezone="UTC")
        return IntervalTrigger(seconds=parse_duration(every or "60s"))

    def setup(self) -> None:
        configured = set()
        for i, job in enumerate(self.rt.settings.jobs):
            configured.add((job.system, job.stream))
            if job.system in self.rt.connectors and job.stream not in self.rt.connectors[job.system].streams:
                from syncd.errors import ConfigError
                raise ConfigError(f"system {job.system!r} has no stream {job.stream!r} (streams: "
                                  f"{', '.join(self.rt.connectors[job.system].streams)})",
                                  file=str(self.rt.settings.path or "") or None, key=f"jobs[{i}].stream")
            self.sched.add_job(self._run_stream, self._trigger_for(job.every, job.cron),
                               args=(job.system, job.stream), id=job_id(job.system, job.stream),
                               misfire_grace_time=int(job.misfire_grace), next_run_time=dt.datetime.now(dt.timezone.utc))
        # streams without a job line still run, at the connector's default interval
        for name, conn in self.rt.connectors.items():
            for stream, spec in conn.streams.items():
                if (name, stream) not in configured and spec.default_interval > 0:
                    self.sched.add_job(self._run_stream, IntervalTrigger(seconds=spec.default_interval),
                                       args=(name, stream), id=job_id(name, stream),
                                       next_run_time=dt.datetime.now(dt.timezone.utc))
        self.sched.add_job(self._push, IntervalTrigger(seconds=self.rt.settings.daemon.push_interval),
                           args=(None,), id="push")
        if self.rt.rules_tick is not None:
            self.sched.add_job(self._tick, IntervalTrigger(seconds=self.rt.settings.daemon.rules_interval),
                               id="rules:tick")
        if self.rt.settings.daemon.retention_days > 0:
            first = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=RETENTION_FIRST)
            self.sched.add_job(self._retention, IntervalTrigger(seconds=RETENTION_EVERY), id="retention",
                               next_run_time=first, misfire_grace_time=int(RETENTION_EVERY))

    def _retention(self) -> None:
        """Purge old done writes, runs and change log, one short transaction per batch."""
        if self._stopping:
            return
        from syncd.store.retention import purge

        lease = "job:retention"
        try:
            if not self.rt.store.acquire_lease(lease, self.rt.instance, RETENTION_EVERY / 2):
                return            # another instance purges today
            try:
                out = purge(self.rt.store, dt.timedelta(days=self.rt.settings.daemon.retention_days),
                            stop=self._stop_event)
            finally:
                self.rt.store.release_lease(lease, self.rt.instance)
        except Exception as exc:  # noqa: BLE001 - retried tomorrow; sync goes on
            log.error("retention_failed", error=f"{type(exc).__name__}: {exc}")
            return
        if out.outbox or out.runs or out.changelog:
            log.info("retention", outbox=out.outbox, runs=out.runs, changelog=out.changelog,
                     batches=out.batches, seconds=round(out.seconds, 1))

    def _tick(self) -> None:
        if self._stopping:
            return
        try:
            if self.rt.tick_rules():
                self._push(None)
        except Exception as exc:  # noqa: BLE001
            log.error("rules_tick_failed", error=f"{type(exc).__name__}: {exc}")

    def start(self) -> None:
        self.setup()
        self.sched.start()

    def trigger(self, system: str, stream: str) -> None:
        job = self.sched.get_job(job_id(system, stream))
        if job is None:
            log.warning("trigger_unknown_job", system=system, stream=stream)
            return
        job.modify(next_run_time=dt.datetime.now(dt.timezone.utc))
        self.sched.wakeup()

    def stop(self, wait: bool = True) -> None:
        """Stop scheduling; with wait, in-flight runs and pushes finish first."""
        self._stopping = True
        self._stop_event.set()
        if self.sched.running:
            self.sched.shutdown(wait=wait)
