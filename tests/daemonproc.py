"""`syncd` run as a user runs it: a subprocess, its JSON log collected as it comes, waited on.

The one helper every test that starts a daemon uses (forms, peers down, shutdown, logs, systemd):
start it, wait for a condition with the log's tail in the failure, read its HTTP API, stop it
with SIGTERM (timed) or SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import requests

REPO = Path(__file__).resolve().parents[1]


class SyncdProcess:
    """`python -m syncd.cli -c CONFIG --log-format json ARGS…` (ARGS default: run)."""

    def __init__(self, cfg: Path, *args: str, port: int | None = None, env: dict[str, str] | None = None,
                 log_format: str = "json") -> None:
        self.cfg = cfg
        self.args = args or ("run",)
        self.url = f"http://127.0.0.1:{port}" if port is not None else ""
        self.env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
        self.log_format = log_format
        self.log: list[dict[str, Any]] = []          # the JSON lines of its log
        self.raw_log: list[str] = []                 # every line of its stderr
        self.http = requests.Session()
        self._drained = threading.Event()
        self.start()

    def start(self) -> None:
        self._drained.clear()
        self.proc = subprocess.Popen([sys.executable, "-m", "syncd.cli", "-c", str(self.cfg), "--log-format",
                                      self.log_format, *self.args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=self.env, cwd=str(REPO))
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.raw_log.append(line)
            if line.startswith("{"):
                try:
                    self.log.append(json.loads(line))
                except ValueError:
                    pass
        self._drained.set()

    def tail(self, n: int = 8) -> list[str]:
        return [x.rstrip() for x in self.raw_log[-n:]]

    def wait(self, pred: Callable[[], Any], what: str, timeout: float = 60.0, *, every: float = 0.05) -> Any:
        """The first truthy value of `pred` (an HTTP error counts as not yet); fails naming `what`
        with the log's tail, or at once when the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"syncd exited ({self.proc.returncode}) waiting for {what}: {self.tail()}"
            try:
                got = pred()
            except requests.RequestException:
                got = None
            if got:
                return got
            time.sleep(every)
        raise AssertionError(f"not reached in {timeout:g} s: {what}; log tail: {self.tail()}")

    def ready(self, timeout: float = 30.0) -> None:
        """Its HTTP endpoint answers /healthz."""
        self.wait(lambda: requests.get(self.url + "/healthz", timeout=2).status_code == 200, "/healthz answers",
                  timeout)

    def get(self, path: str) -> Any:
        # one connection per call, closed by us: a kept-alive one would leave the daemon's port in
        # TIME_WAIT when it exits (tests check the port is free after a stop)
        return requests.get(self.url + path, timeout=5).json()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.log if e.get("event") == name]

    def stop(self, bound: float = 15.0, *, must: bool = False) -> float:
        """SIGTERM; seconds it took to exit. Past `bound` it is killed — and that fails when `must`."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(bound)
            except subprocess.TimeoutExpired:
                self.kill9()
                if must:
                    raise AssertionError(f"SIGTERM did not stop syncd within {bound:g} s; log tail: {self.tail()}")
        self._drained.wait(5)
        return time.monotonic() - t0

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._drained.wait(5)


__all__ = ["SyncdProcess", "REPO"]
