"""`syncd run`: HTTP server + scheduler until SIGTERM, with systemd notification.

Shutdown order on SIGTERM/SIGINT: tell systemd STOPPING=1, stop scheduling and wait for the
runs and pushes in flight (each batch commits whole or not at all; a claimed write either
completes or stays claimed and is taken again after `claim_ttl`), stop HTTP, close the store.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import structlog
import uvicorn

from syncd.config import Settings
from syncd.daemon.notify import notify, watchdog_interval
from syncd.daemon.runtime import Runtime
from syncd.daemon.scheduler import Scheduler

log = structlog.get_logger("syncd.daemon")


def _http_app(rt: Runtime) -> Any:
    from syncd.daemon.http import create_app

    return create_app(rt)


class Daemon:
    def __init__(self, settings: Settings, *, runtime: Runtime | None = None) -> None:
        self.settings = settings
        self.rt = runtime or Runtime(settings)
        self.scheduler = Scheduler(self.rt)
        host, _, port = settings.daemon.listen.rpartition(":")
        self.server = uvicorn.Server(uvicorn.Config(_http_app(self.rt), host=host, port=int(port),
                                                    log_level="warning", access_log=False, lifespan="off"))
        self.stop_event = threading.Event()
        self._http_thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, _, port = self.settings.daemon.listen.rpartition(":")
        if self.server.started and self.server.servers:
            port = str(self.server.servers[0].sockets[0].getsockname()[1])   # listen on :0
        return f"http://{host}:{port}"

    def check_mappings(self) -> None:
        """An unknown stage, status or field in a mapping stops the start, naming file and key.

        A system that cannot be reached right now is only warned about: the daemon starts and
        retries it on schedule.
        """
        from syncd.errors import ConfigError
        from syncd.mapping.live import check_live

        problems = []
        for key, problem in check_live(self.rt.mapper, self.rt.connectors):
            if problem.startswith("cannot read the live schema"):
                log.warning("live_schema_unavailable", key=key, problem=problem)
            else:
                problems.append(f"{key}: {problem}")
        if problems:
            raise ConfigError("mappings do not match the live systems:\n  " + "\n  ".join(problems),
                              key="mappings")

    def start(self) -> None:
        self.check_mappings()
        self._http_thread = threading.Thread(target=self.server.run, name="http", daemon=True)
        self._http_thread.start()
        while not self.server.started:
            if not self._http_thread.is_alive():
                raise RuntimeError(f"HTTP server could not listen on {self.settings.daemon.listen}")
            self.stop_event.wait(0.02)
        self.scheduler.start()
        notify("READY=1\nSTATUS=syncing")
        log.info("daemon_started", url=self.url, instance=self.rt.instance,
                 systems=sorted(self.rt.connectors))

    def stop(self) -> None:
        notify("STOPPING=1")
        log.info("daemon_stopping")
        self.rt.syncer.pusher.stopping.set()
        self.scheduler.stop(wait=True)
        self.server.should_exit = True
        if self._http_thread:
            self._http_thread.join(10)
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
