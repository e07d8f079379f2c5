"""APScheduler 3.x: one job per (integration, stream) from config, plus a push job per system.

Jobs coalesce, never overlap (`max_instances=1`) and tolerate a late start (misfire grace).
Webhooks call `trigger(system, stream)` to run a stream's job now instead of at its next tick.
A daily `retention` job purges what is older than `retention_days` (syncd.store.retention).

At `info` a run is logged only when it did something (one `run` line with its non-zero counts);
job starts and empty polls are not news (`debug`).

A system whose live check has not answered yet is held: its streams are not pulled and nothing is
pushed to it (`ready(system)` says when it may go; `release(system)` runs its streams at once).
A system an operator paused (the status page; `Runtime.set_paused`) is skipped the same way until
resumed. Every few minutes the lag of each system is sampled for the page's 24-hour chart.

Jobs run on daemon threads: a run stuck in a peer call (a socket that never answers) must not keep
the process alive after SIGTERM. `stop(grace)` waits that long for the runs in hand, then gives up
on them — nothing is lost (a batch commits whole with its cursor or not at all; a claimed write is
taken again after its claim expires).
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from apscheduler.executors.pool import BasePoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from syncd.config import parse_duration
from syncd.daemon.runtime import Runtime

log = structlog.get_logger("syncd.scheduler")


RETENTION_EVERY = 86400.0          # seconds between purges
RETENTION_FIRST = 600.0           # the first purge waits until start-up traffic has settled
SWEEP_EVERY = 30.0                # seconds between checks of "nothing blocked on what is there"
GONE_EVERY = 5.0                  # seconds between looks for claims of instances that are gone
AUDIT_FIRST = 300.0               # the first scheduled audit waits for start-up traffic to settle


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


class DaemonThreadPool:
    """The part of `concurrent.futures.Executor` APScheduler uses, on daemon threads.

    The standard pool's threads are joined at interpreter exit, so one run blocked in a socket
    read would hold the process (and its port) for as long as the peer keeps silent.
    """

    def __init__(self, max_workers: int = 10) -> None:
        self.max_workers = max_workers
        self._work: queue.Queue[Any] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        f: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._work.put((f, fn, args, kwargs))
            if self._work.qsize() > self._idle and len(self._threads) < self.max_workers:
                t = threading.Thread(target=self._worker, name=f"job-{len(self._threads) + 1}", daemon=True)
                self._threads.append(t)
                t.start()
        return f

    def _worker(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            item = self._work.get()
            with self._lock:
                self._idle -= 1
            if item is None:
                return
            f, fn, args, kwargs = item
            if not f.set_running_or_notify_cancel():
                continue
            try:
                f.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the future, as the stdlib pool does
                f.set_exception(exc)

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        for _ in threads:
            self._work.put(None)
        if wait:
            for t in threads:
                t.join()


# APScheduler's own loggers are shared by anyone in the process; ours are private, so quieting them
# changes nothing for other users of `apscheduler.*` (the JSON log still carries run context):
# "skipped: maximum number of running instances reached" is our design (max_instances=1), and
# "Running job …" / "executed successfully" on every tick is noise — failures are logged by us.
_SCHEDULER_LOG = logging.getLogger("syncd.scheduler.apscheduler")
_SCHEDULER_LOG.setLevel(logging.ERROR)
_JOBS_LOG = logging.getLogger("syncd.scheduler.jobs")
_JOBS_LOG.setLevel(logging.WARNING)


class DaemonPoolExecutor(BasePoolExecutor):
    def __init__(self, max_workers: int = 10) -> None:
        super().__init__(DaemonThreadPool(max_workers))

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self._logger = _JOBS_LOG


class Scheduler:
    def __init__(self, runtime: Runtime, *, ready: Callable[[str], bool] | None = None) -> None:
        self.rt = runtime
        self.ready = ready or (lambda system: True)
        self.sched = BackgroundScheduler(timezone="UTC", executors={"default": DaemonPoolExecutor(10)},
                                         logger=_SCHEDULER_LOG,
                                         job_defaults={"coalesce": True, "max_instances": 1,
                                                       "misfire_grace_time": 60})
        self._stopping = False
        self._stop_event = threading.Event()       # ends a purge between two batches
        self._busy: dict[int, str] = {}            # thread id -> what it runs (for a stop that gives up)
        self._again: set[str] = set()              # stream jobs triggered while they ran: run once more
        self._pushing = False                      # the push job runs (_push_soon then asks for one more)
        self._push_more = False
        self._idle = threading.Condition()
        runtime.trigger_hook = self.trigger

    def _enter(self, what: str) -> None:
        with self._idle:
            self._busy[threading.get_ident()] = what

    def _leave(self) -> None:
        with self._idle:
            self._busy.pop(threading.get_ident(), None)
            self._idle.notify_all()

    def _may_run(self, system: str) -> bool:
        return not self._stopping and self.ready(system) and not self.rt.is_paused(system)

    def _run_stream(self, system: str, stream: str) -> None:
        if not self._may_run(system):
            return
        jid = job_id(system, stream)
        while True:
            with self._idle:
                self._again.discard(jid)
            self._enter(f"pull {system}/{stream}")
            try:
                counts = self.rt.run_stream(system, stream)
                log_run(system, stream, counts)
            except Exception as exc:  # noqa: BLE001 - a failed run is recorded; the schedule goes on
                log.error("job_failed", system=system, stream=stream, error=f"{type(exc).__name__}: {exc}")
                counts = None
            finally:
                self._leave()
            # what was pulled is pushed without waiting for the push tick — by the push job, so this
            # stream's next poll never waits for writes queued at a portal's rate limit
            if counts is not None and (counts.planned or counts.created or counts.updated):
                self._push_soon()
            with self._idle:
                again = jid in self._again and not self._stopping
            if not again:
                return        # a trigger that came while this run read (a portal event) runs it once more

    def _push_soon(self) -> None:
        """Run the push job now. It never overlaps itself: while one runs (a CRM's writes waiting at
        its rate limit), it goes round once more when it ends instead of waiting for its next tick."""
        if self._stopping:
            return
        with self._idle:
            if self._pushing:
                self._push_more = True
                return
        try:
            self.sched.modify_job("push", next_run_time=dt.datetime.now(dt.UTC))
            self.sched.wakeup()
        except Exception:  # noqa: BLE001 - not set up (tests drive _run_stream alone): push inline
            self._push(None)

    def _push(self, system: str | None) -> None:
        if self._stopping:
            return
        with self._idle:
            self._pushing = system is None
        try:
            while True:
                for name in [system] if system else list(self.rt.connectors):
                    if not self._may_run(name):
                        continue
                    self._enter(f"push {name}")
                    try:
                        log_run(name, "push", self.rt.push(name))
                    except Exception as exc:  # noqa: BLE001
                        log.error("push_failed", system=name, error=f"{type(exc).__name__}: {exc}")
                    finally:
                        self._leave()
                with self._idle:
                    more, self._push_more = self._push_more and system is None and not self._stopping, False
                if not more:
                    return
        finally:
            with self._idle:
                if system is None:
                    self._pushing = False

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
                               misfire_grace_time=int(job.misfire_grace), next_run_time=dt.datetime.now(dt.UTC))
        # streams without a job line still run, at the connector's default interval
        for name, conn in self.rt.connectors.items():
            for stream, spec in conn.streams.items():
                if (name, stream) not in configured and spec.default_interval > 0:
                    self.sched.add_job(self._run_stream, IntervalTrigger(seconds=spec.default_interval),
                                       args=(name, stream), id=job_id(name, stream),
                                       next_run_time=dt.datetime.now(dt.UTC))
        self.sched.add_job(self._push, IntervalTrigger(seconds=self.rt.settings.daemon.push_interval),
                           args=(None,), id="push")
        if self.rt.rules_tick is not None:
            self.sched.add_job(self._tick, IntervalTrigger(seconds=self.rt.settings.daemon.rules_interval),
                               id="rules:tick")
        self.sched.add_job(self._sweep, IntervalTrigger(seconds=SWEEP_EVERY), id="outbox:sweep",
                           next_run_time=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=SWEEP_EVERY))
        self.sched.add_job(self._reclaim_gone, IntervalTrigger(seconds=GONE_EVERY), id="outbox:gone",
                           next_run_time=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=GONE_EVERY))
        every = self.rt.settings.daemon.audit_interval
        if every > 0:
            self.sched.add_job(self._audit, IntervalTrigger(seconds=every), id="audit",
                               next_run_time=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=min(every, AUDIT_FIRST)))
        from syncd.daemon.glance import SAMPLE_EVERY

        self.sched.add_job(self._sample_lag, IntervalTrigger(seconds=SAMPLE_EVERY), id="lag:sample",
                           next_run_time=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30))
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
            if not self.rt.lease(lease, RETENTION_EVERY / 2):
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

    def _sweep(self) -> None:
        """The outbox invariant: nothing blocked on a record that is there (syncd.pipeline.outbox)."""
        if self._stopping:
            return
        try:
            if self.rt.sweep_outbox():
                self._push(None)
        except Exception as exc:  # noqa: BLE001 - checked again at the next tick
            log.warning("outbox_sweep_failed", error=f"{type(exc).__name__}: {exc}")

    def _reclaim_gone(self) -> None:
        """Another instance was killed: its claimed writes go again now (syncd.daemon.runtime)."""
        if self._stopping:
            return
        try:
            if self.rt.reclaim_gone():
                self._push_soon()
        except Exception as exc:  # noqa: BLE001 - looked at again at the next tick
            log.warning("reclaim_gone_failed", error=f"{type(exc).__name__}: {exc}")

    def _audit(self) -> None:
        """A sample of bound records read back and compared (one instance per tick)."""
        if self._stopping:
            return
        lease = "job:audit"
        every = self.rt.settings.daemon.audit_interval
        self._enter("audit")
        try:
            if not self.rt.lease(lease, every * 0.8):
                return
            found = self.rt.audit(sample=self.rt.settings.daemon.audit_sample)
            if found.drift:
                log.warning("drift", records=found.drifted_records, fields=len(found.drift),
                            note="syncd audit lists them; syncd audit --repair brings them back in step")
        except Exception as exc:  # noqa: BLE001 - the next tick audits again
            log.warning("audit_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._leave()

    def _sample_lag(self) -> None:
        """One point of each system's lag for the status page's chart (one instance per tick)."""
        if self._stopping:
            return
        from syncd.daemon.glance import SAMPLE_EVERY, sample_lag

        lease = "job:lag:sample"
        try:
            if not self.rt.lease(lease, SAMPLE_EVERY * 0.8):
                return
            sample_lag(self.rt.store, list(self.rt.connectors))
        except Exception as exc:  # noqa: BLE001 - a missing point on a chart; sync goes on
            log.warning("lag_sample_failed", error=f"{type(exc).__name__}: {exc}")

    def _tick(self) -> None:
        if self._stopping:
            return
        self._enter("rules tick")
        try:
            acted = self.rt.tick_rules()
        except Exception as exc:  # noqa: BLE001
            log.error("rules_tick_failed", error=f"{type(exc).__name__}: {exc}")
            acted = 0
        finally:
            self._leave()
        if acted:
            self._push(None)

    def start(self) -> None:
        self.setup()
        self.sched.start()

    def trigger(self, system: str, stream: str) -> None:
        if self._stopping:
            return
        jid = job_id(system, stream)
        job = self.sched.get_job(jid)
        if job is None:
            log.warning("trigger_unknown_job", system=system, stream=stream)
            return
        with self._idle:
            # a run in hand may have read past what the event is about: it runs once more when done
            # (APScheduler skips a run of a job that is running); a run that starts clears this
            self._again.add(jid)
        job.modify(next_run_time=dt.datetime.now(dt.UTC))
        self.sched.wakeup()

    def release(self, system: str) -> None:
        """A held system may go: run its streams now (they were skipped while it was held)."""
        conn = self.rt.connectors.get(system)
        for stream in (conn.streams if conn is not None else ()):
            if self.sched.get_job(job_id(system, stream)) is not None:     # push-only streams have none
                self.trigger(system, stream)

    def running(self) -> list[str]:
        with self._idle:
            return sorted(self._busy.values())

    def stop(self, grace: float | None = None) -> list[str]:
        """Stop scheduling and wait up to `grace` seconds (None: as long as it takes) for the runs
        and pushes in hand; returns what was still running when it gave up."""
        self._stopping = True
        self._stop_event.set()
        if self.sched.running:
            self.sched.shutdown(wait=False)
        deadline = None if grace is None else time.monotonic() + grace
        with self._idle:
            while self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._idle.wait(left)
            return sorted(self._busy.values())
