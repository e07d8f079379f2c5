"""One place that runs streams and pushes: used by the scheduler, the CLI and the tests."""

from __future__ import annotations

import datetime as dt
import traceback
from dataclasses import dataclass, field
from typing import Callable, Mapping

import structlog

from syncd.connector import Connector, traits
from syncd.errors import TransientError
from syncd.mapping import Mapper
from syncd.pipeline import outbox
from syncd.pipeline.counts import Counts
from syncd.pipeline.engine import Engine, IntakeHook, RuleHook
from syncd.pipeline.push import Pusher, PushPolicy
from syncd.store import Store
from syncd.store.presence import Presence

log = structlog.get_logger("syncd.sync")

Progress = Callable[..., None]         # progress(n) or progress(n, total=T)


@dataclass
class Syncer:
    store: Store
    mapper: Mapper
    connectors: Mapping[str, Connector]
    rules: RuleHook | None = None
    worker: str = "w"
    policy: PushPolicy = field(default_factory=PushPolicy)
    intake: IntakeHook | None = None     # routing of arrived mail (syncd/pipeline/route_mail.py)
    presence: Presence | None = None     # this process among the instances (see Pusher)

    def __post_init__(self) -> None:
        self.engine = Engine(self.store, self.mapper, rules=self.rules, intake=self.intake)
        self.pusher = Pusher(self.store, self.mapper, self.connectors, worker=self.worker, policy=self.policy,
                             presence=self.presence)
        # system -> streams whose first read creates of that system wait for (Traits.first_read)
        self._first_read = {name: {s for ss in traits(c).first_read.values() for s in ss}
                            for name, c in self.connectors.items()}

    @property
    def name(self) -> str:
        """The name this process works under (its presence's, else `worker`)."""
        return self.presence.name if self.presence is not None else self.worker

    def pull(self, system: str, stream: str, *, since: dt.datetime | None = None,
             progress: Progress | None = None) -> Counts:
        """Run one stream once: read batches from the cursor (or `since`), ingest each."""
        conn = self.connectors[system]
        run_id = self.store.start_run(system, stream, self.name)
        counts = Counts()
        error = None
        structlog.contextvars.bind_contextvars(integration=system, stream=stream, run_id=run_id)
        try:
            cursor = None if since else self.store.get_cursor(system, stream)
            for batch in conn.read(stream, cursor, since=since):
                counts.add(self.engine.ingest(system, batch, run_id=run_id))
                if self.pusher.stopping.is_set():   # shutdown: the next batch waits for next time
                    break
                if progress:
                    if batch.total is not None:
                        progress(len(batch.records), total=batch.total)   # type: ignore[call-arg]
                    else:
                        progress(len(batch.records))
        except TransientError as exc:
            counts.failed += 1
            error = f"{type(exc).__name__}: {exc}"
            log.warning("pull_failed", error=error)
        except Exception as exc:  # noqa: BLE001 - one stream failing never stops the others
            counts.failed += 1
            error = f"{type(exc).__name__}: {exc}"
            log.error("pull_crashed", error=error, tb=traceback.format_exc())
        finally:
            structlog.contextvars.unbind_contextvars("integration", "stream", "run_id")
        self.store.finish_run(run_id, counts.as_dict(), error)
        if error is None and stream in self._first_read.get(system, ()):
            with self.store.begin() as c:          # creates that waited for this stream's first read
                outbox.unblock(c, [stream], system=system)
        return counts

    def push(self, system: str, *, max_rows: int | None = None) -> Counts:
        run_id = self.store.start_run(system, "push", self.name)
        structlog.contextvars.bind_contextvars(integration=system, stream="push", run_id=run_id)
        error = None
        counts = Counts()
        try:
            counts = self.pusher.push(system, max_rows=max_rows)
        except Exception as exc:  # noqa: BLE001 - recorded as a failed run; the other systems go on
            counts.failed += 1
            error = f"{type(exc).__name__}: {exc}"
            log.error("push_crashed", error=error, tb=traceback.format_exc())
        finally:
            structlog.contextvars.unbind_contextvars("integration", "stream", "run_id")
        self.store.finish_run(run_id, counts.as_dict(), error)
        return counts

    def pass_once(self, systems: list[str] | None = None) -> Counts:
        """Pull every stream of every system, then push to every system."""
        total = Counts()
        names = systems or list(self.connectors)
        for name in names:
            for stream in self.connectors[name].streams:
                total.add(self.pull(name, stream))
        for name in self.connectors:
            total.add(self.push(name))
        return total

    def until_quiet(self, systems: list[str] | None = None, max_passes: int = 10) -> int:
        """Repeat passes until one plans and pushes nothing; returns the number of passes."""
        for i in range(1, max_passes + 1):
            c = self.pass_once(systems)
            if c.planned == 0 and c.pushed == 0 and c.created == 0 and c.updated == 0:
                return i
        return max_passes
