"""`syncd run`: HTTP server + scheduler until SIGTERM, with systemd notification.

Start-up never waits on a peer: HTTP comes up first (READY=1 as soon as it accepts
connections), then the scheduler, and the mappings are checked against each live system in the
background (`livecheck`): a system is held until its check answers; an unreachable one is
reported and checked again; a mismatch stops the daemon with exit code 2.

Shutdown on SIGTERM/SIGINT: tell systemd STOPPING=1, stop scheduling, give the runs and pushes in
hand up to `STOP_GRACE` seconds (each batch commits whole or not at all; a claimed write either
completes or stays claimed and is taken again after `claim_ttl`), stop HTTP, close the store. A
run stuck in a peer call that never answers is abandoned, not waited for: the process ends within
about STOP_GRACE + HTTP_GRACE seconds and frees its port.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import structlog
import uvicorn

from syncd.config import Settings
from syncd.daemon.livecheck import LiveCheck
from syncd.daemon.notify import notify, watchdog_interval
from syncd.daemon.runtime import Runtime
from syncd.daemon.scheduler import Scheduler
from syncd.errors import ConfigError

log = structlog.get_logger("syncd.daemon")

STOP_GRACE = 5.0        # seconds the runs in hand get after SIGTERM
HTTP_GRACE = 2.0        # seconds open HTTP connections get to finish


def _http_app(rt: Runtime, checks: LiveCheck | None) -> Any:
    from syncd.daemon.http import create_app

    return create_app(rt, checks=checks)


class Daemon:
    def __init__(self, settings: Settings, *, runtime: Runtime | None = None) -> None:
        self.settings = settings
        self.rt = runtime or Runtime(settings)
        self.fatal: ConfigError | None = None
        self.stop_event = threading.Event()
        self.checks = LiveCheck(self.rt.mapper, self.rt.connectors, on_release=self._released,
                                on_mismatch=self._mismatch, names=self.rt.resolve_names)
        self.scheduler = Scheduler(self.rt, ready=self.checks.ready)
        host, _, port = settings.daemon.listen.rpartition(":")
        self.server = uvicorn.Server(uvicorn.Config(_http_app(self.rt, self.checks), host=host, port=int(port),
                                                    log_level="warning", access_log=False, lifespan="off",
                                                    timeout_graceful_shutdown=int(HTTP_GRACE)))
        self._http_thread: threading.Thread | None = None
        self._stopped = False

    @property
    def url(self) -> str:
        host, _, port = self.settings.daemon.listen.rpartition(":")
        if self.server.started and self.server.servers:
            port = str(self.server.servers[0].sockets[0].getsockname()[1])   # listen on :0
        return f"http://{host}:{port}"

    # -- live check callbacks --------------------------------------------------------------------
    def _released(self, system: str) -> None:
        self.scheduler.release(system)

    def _mismatch(self, system: str, problems: list[str]) -> None:
        """An unknown stage, status or field in a mapping stops the daemon, naming file and key."""
        self.fatal = ConfigError(f"mappings do not match the live system {system!r}:\n  " + "\n  ".join(problems),
                                 key="mappings")
        self.stop_event.set()

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._http_thread = threading.Thread(target=self.server.run, name="http", daemon=True)
        self._http_thread.start()
        while not self.server.started:
            if not self._http_thread.is_alive():
                raise RuntimeError(f"HTTP server could not listen on {self.settings.daemon.listen}")
            self.stop_event.wait(0.02)
        # the instance's name, and the claims its dead predecessor held (kill -9), before any work
        self.rt.syncer.pusher.start()
        self.scheduler.start()
        self.checks.start()
        notify("READY=1\nSTATUS=syncing")
        log.info("daemon_started", url=self.url, instance=self.rt.instance,
                 systems=sorted(self.rt.connectors))

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        notify("STOPPING=1")
        log.info("daemon_stopping")
        t0 = time.monotonic()
        self.rt.syncer.pusher.stopping.set()
        self.checks.stop()
        left = self.scheduler.stop(grace=STOP_GRACE)
        self.server.should_exit = True
        if self._http_thread:
            self._http_thread.join(HTTP_GRACE + 1.0)
        if left:
            # stuck in a peer call: nothing of it is committed, so nothing is lost by leaving it
            log.warning("stop_abandoned", running=left, waited=round(time.monotonic() - t0, 1))
        self.rt.close()
        log.info("daemon_stopped")

    def run_forever(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_event.set())
        self.start()
        interval = watchdog_interval()
        try:
            while not self.stop_event.wait(interval or 1.0):
                if interval:
                    notify("WATCHDOG=1")
        finally:
            self.stop()
        if self.fatal is not None:
            raise self.fatal
