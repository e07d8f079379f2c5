"""The mappings checked against each live system, in the background.

`syncd run` never waits on a peer to start: HTTP and the scheduler come up at once and each
system's live schema (`describe()`) is read on a thread of its own, so one silent peer delays
nobody else. Until its check answers, a system is held (nothing is pulled from it, nothing is
pushed to it), then:

- ``ok``: the system is released and its streams run at once;
- ``unreachable``: released too — its runs fail and are retried like any fault — and checked
  again later (30 s, doubling up to 5 min) until it answers;
- ``mismatch`` (a mapped field, stage or status the system does not have): the daemon stops with
  exit code 2 naming the mapping key and the problem, as an invalid config does at start.

The states are on ``/healthz`` and ``/stats`` (``checks``) and in the log (``live_check``).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from syncd.mapping.live import check_live
from syncd.store import utcnow

log = structlog.get_logger("syncd.livecheck")

UNREACHABLE = "cannot read the live schema"


@dataclass
class SystemCheck:
    state: str = "pending"               # pending | ok | unreachable | mismatch
    detail: str = ""
    problems: list[str] = field(default_factory=list)
    checked_at: dt.datetime | None = None
    attempts: int = 0

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "attempts": self.attempts,
                               "checked_at": self.checked_at.isoformat() if self.checked_at else None}
        if self.detail:
            out["detail"] = self.detail
        if self.problems:
            out["problems"] = list(self.problems)
        return out


class LiveCheck:
    def __init__(self, mapper: Any, connectors: dict[str, Any], *,
                 on_release: Callable[[str], None] = lambda system: None,
                 on_mismatch: Callable[[str, list[str]], None] = lambda system, problems: None,
                 names: Callable[[str], list[str]] = lambda system: [],
                 retry: float = 30.0, retry_max: float = 300.0) -> None:
        self.mapper, self.connectors = mapper, connectors
        self.names = names                  # config values given by name, resolved through this system
        self.on_release, self.on_mismatch = on_release, on_mismatch
        self.retry, self.retry_max = retry, retry_max
        self.checks = {name: SystemCheck() for name in connectors}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for name in self.connectors:
            t = threading.Thread(target=self._loop, args=(name,), name=f"live-check:{name}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self) -> None:
        self._stop.set()

    def ready(self, system: str) -> bool:
        """May the scheduler pull from / push to this system?"""
        with self._lock:
            c = self.checks.get(system)
            return c is None or c.state in ("ok", "unreachable")

    def view(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: c.view() for name, c in sorted(self.checks.items())}

    def summary(self) -> str:
        """"ok" when every system passed, else the worst state (mismatch > pending > unreachable)."""
        states = {c["state"] for c in self.view().values()}
        for s in ("mismatch", "pending", "unreachable"):
            if s in states:
                return s
        return "ok"

    # -- one system ----------------------------------------------------------------------------
    def _loop(self, system: str) -> None:
        delay = self.retry
        while not self._stop.is_set():
            state = self._check_once(system, delay)
            if state != "unreachable":
                return
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self.retry_max)

    def _check_once(self, system: str, next_in: float) -> str:
        named: list[str] = []
        try:
            # names first: the values they stand for are what the mappings are checked with
            named = self.names(system)
            found = check_live(self.mapper, {system: self.connectors[system]})
        except Exception as exc:  # noqa: BLE001 - a check reports, it does not take the daemon down
            found = [(f"systems.{system}", f"{UNREACHABLE}: {type(exc).__name__}: {exc}")]
        if self._stop.is_set():
            return "stopped"
        unreachable = [p for k, p in found if k == f"systems.{system}" and p.startswith(UNREACHABLE)]
        problems = named + [f"{k}: {p}" for k, p in found
                            if not (k == f"systems.{system}" and p.startswith(UNREACHABLE))]
        with self._lock:
            c = self.checks[system]
            first = c.state == "pending"
            c.attempts += 1
            c.checked_at = utcnow()
            if problems:
                c.state, c.detail, c.problems = "mismatch", "the mappings do not match the live system", problems
            elif unreachable:
                c.state, c.detail, c.problems = "unreachable", unreachable[0], []
            else:
                c.state, c.detail, c.problems = "ok", "", []
            state = c.state
        if state == "mismatch":
            log.error("live_check", system=system, state=state, problems=problems)
            self.on_mismatch(system, problems)
        elif state == "unreachable":
            log.warning("live_check", system=system, state=state, detail=unreachable[0],
                        next_check_in=next_in)
            if first:
                self.on_release(system)
        else:
            log.info("live_check", system=system, state=state)
            if first:
                self.on_release(system)
        return state


__all__ = ["LiveCheck", "SystemCheck"]
