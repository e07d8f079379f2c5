"""A small Asterisk Manager Interface client on a plain socket: log in asking for call and cdr
events, turn DialBegin (the call starts) and Cdr (the call ended, with its disposition and talk
time) into CallEvents, reconnect with a growing pause when the PBX goes away.

Asterisk keeps nothing for a client that was away: a call that ended while syncd was disconnected
is not replayed (its CDR is in the PBX's CDR backend, not read here).
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import threading
from collections.abc import Callable
from typing import Any

import structlog

from connectors.calls.events import CallEvent, _time

log = structlog.get_logger("syncd.calls")

DISPOSITIONS = {"ANSWERED": "answered", "NO ANSWER": "missed", "BUSY": "busy", "FAILED": "failed",
                "CONGESTION": "failed"}


def parse_block(block: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in block.split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip(), value.strip())
    return out


def _endpoint(channel: str) -> str:
    """PJSIP/101-0000000a -> 101 (the extension a channel belongs to)."""
    m = re.match(r"^[^/]+/([^-@]+)", channel or "")
    return m.group(1) if m else ""


class AmiEvents:
    """AMI events -> CallEvents (pure; the client below feeds it)."""

    def __init__(self, tz: dt.tzinfo, extension_digits: int) -> None:
        self.tz, self.digits = tz, extension_digits

    def _internal(self, number: str) -> bool:
        d = re.sub(r"\D", "", number or "")
        return 0 < len(d) <= self.digits

    def convert(self, e: dict[str, str], now: dt.datetime) -> CallEvent | None:
        name = e.get("Event", "")
        if name == "DialBegin":
            call_id = e.get("Linkedid") or e.get("Uniqueid") or ""
            caller, dest = e.get("CallerIDNum", ""), e.get("DestCallerIDNum", "")
            if not call_id:
                return None
            if self._internal(caller):
                fields: dict[str, Any] = {"direction": "out", "caller": caller, "extension": caller, "called": dest}
            else:
                fields = {"direction": "in", "caller": caller, "called": e.get("Exten", ""),
                          "extension": dest or _endpoint(e.get("DestChannel", ""))}
            fields = {k: v for k, v in fields.items() if v}
            fields["started_at"] = now
            return CallEvent(call_id, "start", now, fields)
        if name == "Cdr":
            call_id = e.get("UniqueID") or ""
            if not call_id:
                return None
            src, dst = e.get("Source", ""), e.get("Destination", "")
            start = _time(e["StartTime"], self.tz) if e.get("StartTime") else now
            end = _time(e["EndTime"], self.tz) if e.get("EndTime") else now
            if self._internal(src):
                fields = {"direction": "out", "caller": src, "extension": src, "called": dst}
            else:
                fields = {"direction": "in", "caller": src, "called": dst,
                          "extension": _endpoint(e.get("DestinationChannel", ""))}
            fields = {k: v for k, v in fields.items() if v}
            fields.update(started_at=start, duration=int(e.get("BillableSeconds") or 0),
                          status=DISPOSITIONS.get(e.get("Disposition", "").upper(), "failed"))
            return CallEvent(call_id, "end", end, fields)
        return None


class AmiClient:
    """The connection thread: login, events, reconnect with backoff until `stop()`."""

    def __init__(self, host: str, port: int, user: str, secret: str, events: AmiEvents,
                 deliver: Callable[[CallEvent], None], *, backoff: float = 1.0, backoff_max: float = 60.0,
                 name: str = "calls") -> None:
        self.host, self.port, self.user, self.secret = host, port, user, secret
        self.events, self.deliver = events, deliver
        self.backoff, self.backoff_max, self.name = backoff, backoff_max, name
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self.connected = threading.Event()      # logged in now (tests and health read it)
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name=f"ami-{name}", daemon=True)

    def start(self) -> AmiClient:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        s = self._sock
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5.0)

    def _run(self) -> None:
        pause = self.backoff
        while not self._stop.is_set():
            try:
                self._session()
                pause = self.backoff                 # a session that logged in resets the pause
            except Exception as exc:  # noqa: BLE001 - the PBX away or refusing: try again later
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("ami_disconnected", system=self.name, error=self.last_error)
            self.connected.clear()
            if self._stop.wait(pause):
                return
            pause = min(pause * 2, self.backoff_max)

    def _session(self) -> None:
        with socket.create_connection((self.host, self.port), timeout=10.0) as s:
            self._sock = s
            s.settimeout(None)
            f = s.makefile("rb")
            greeting = f.readline().decode("utf-8", "replace")
            if not greeting.startswith("Asterisk Call Manager"):
                raise ConnectionError(f"not an AMI server: {greeting.strip()!r}")
            s.sendall((f"Action: Login\r\nActionID: login\r\nUsername: {self.user}\r\nSecret: {self.secret}\r\n"
                       "Events: call,cdr\r\n\r\n").encode())
            buf: list[str] = []
            while not self._stop.is_set():
                raw = f.readline()
                if not raw:
                    raise ConnectionError("the PBX closed the connection")
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line:
                    buf.append(line)
                    continue
                if not buf:
                    continue
                block = parse_block("\r\n".join(buf))
                buf = []
                if block.get("ActionID") == "login":
                    if block.get("Response") != "Success":
                        raise PermissionError(block.get("Message") or "AMI login refused")
                    self.connected.set()
                    log.info("ami_connected", system=self.name, host=self.host)
                    continue
                ev = self.events.convert(block, dt.datetime.now(dt.UTC))
                if ev is not None:
                    self.deliver(ev)
