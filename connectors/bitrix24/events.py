"""Outbound events: the portal POSTs `ONCRM…` events (form-encoded, `auth[application_token]`) to
`/hooks/bitrix24/<system>`; a verified event triggers a read of its stream, debounced.

An event names one record (`data[FIELDS][ID]`). Once a stream has been read through by this
process, the read an event triggers fetches just the records the events named — their fields and,
for deals, their product rows in one `batch` call — instead of scanning the stream's overlap
window again; the scheduled polls still scan (an event the portal never delivered is found there).

Most events a busy portal posts are the echo of syncd's own writes (a deal it made fires
ONCRMDEALADD, and ONCRMDEALUPDATE for its product rows). The writes tell the events what they sent
(`_note_written`: one expected event per command, for `echo_window` seconds); when an event's
debounce ends, an event that such a write accounts for is an echo and waits `echo_delay`, read
then with whatever else is due; any other event — a manager's edit, even of a record syncd has just
written — is read at once. Echoes cost the portal's rate budget one request per `echo_delay`, not
one per write; an unexpected echo only costs a read; nothing an event names is left unread.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

import structlog

from connectors.bitrix24.settings import Bitrix24Settings
from connectors.bitrix24.values import EVENT_STREAMS, STREAMS
from syncd.connector import ConnectorContext, Route

log = structlog.get_logger("syncd.bitrix24")

WROTE_MAX = 20_000         # records whose expected echoes are remembered
TARGETED = ("ADD", "UPDATE")   # events whose record is read by its ID (a delete has nothing to read)


class Events:
    name: str
    settings: Bitrix24Settings
    ctx: ConnectorContext | None
    _lock: threading.Lock
    _dirty_requisites: set[str]
    _debounce: dict[str, tuple[float, threading.Timer]]   # stream -> (due, armed timer)
    # stream -> events not read yet: [record ID, ADD|UPDATE, arrived, due (None: not looked at yet)]
    _event_ids: dict[str, list[list[Any]]]
    _scan_due: set[str]                         # streams an event without a readable ID asks to scan
    _targeted: set[str]                         # streams whose next read is the one their events triggered
    _wrote: "OrderedDict[tuple[str, str], list[tuple[str, float]]]"   # (kind, ID) -> expected echoes

    def http_routes(self) -> Sequence[Route]:
        return (Route(f"/hooks/bitrix24/{self.name}", self._event_endpoint, ("POST",)),)

    async def _event_endpoint(self, request: Any) -> Any:
        from starlette.responses import JSONResponse
        body = (await request.body()).decode("utf-8", "replace")
        form = dict(parse_qsl(body, keep_blank_values=True))
        got = form.get("auth[application_token]", "")
        # any of the configured tokens (one per outgoing webhook / application), compared in constant
        # time each, all of them always
        ok = [secrets.compare_digest(got, w) for w in self.settings.application_tokens()] if got else []
        if not any(ok):
            log.warning("event_rejected", system=self.name, reason="application_token mismatch")
            return JSONResponse({"error": "forbidden"}, status_code=403)
        event = form.get("event", "").upper()
        entity = next((k for k in EVENT_STREAMS if event.startswith(f"ONCRM{k}")), None)
        if entity is None:
            return JSONResponse({"ok": True, "ignored": event})
        stream = EVENT_STREAMS[entity]
        eid = form.get("data[FIELDS][ID]")
        if event.startswith("ONCRMREQUISITE") and eid:
            # an address edit fires this without touching DATE_MODIFY: remember the requisite
            with self._lock:
                self._dirty_requisites.add(str(eid))
        # the record itself is read by its ID only for ADD/UPDATE of the stream's own kind; a
        # requisite, a bank detail or a delete asks for a scan
        what = event[len(f"ONCRM{entity}"):]
        own = STREAMS.get(stream, "").upper() == entity and what in TARGETED
        self._note(stream, str(eid) if own and eid and str(eid).isdigit() else None, what)
        log.info("portal_event", system=self.name, bx_event=event, id=eid, stream=stream)
        return JSONResponse({"ok": True, "stream": stream})

    # -- syncd's own writes -------------------------------------------------------------------------
    def _note_written(self, kind: str, ids: Sequence[str], events: Sequence[str]) -> None:
        """The writes: syncd sent commands to these records that fire `events` (ADD/UPDATE, one per
        command) — expected for `echo_window` seconds."""
        until = time.monotonic() + self.settings.echo_window
        with self._lock:
            for i in ids:
                key = (kind, str(i))
                self._wrote[key] = [e for e in self._wrote.get(key, []) if e[1] >= until - self.settings.echo_window]
                self._wrote[key] += [(ev, until) for ev in events]
                self._wrote.move_to_end(key)
            while len(self._wrote) > WROTE_MAX:
                self._wrote.popitem(last=False)

    def _echo(self, stream: str, eid: str, what: str, arrived: float) -> bool:
        """Does a write syncd sent account for this event? (consumes that expectation)"""
        got = self._wrote.get((STREAMS.get(stream, ""), eid))
        if not got:
            return False
        for j, (ev, until) in enumerate(got):
            if ev == what and until >= arrived:
                del got[j]
                return True
        return False

    # -- debounce -----------------------------------------------------------------------------------
    def _note(self, stream: str, eid: str | None, what: str = "") -> None:
        """Remember what the event asks to read; arm the stream's timer for `event_debounce`."""
        now = time.monotonic()
        with self._lock:
            if eid is None:
                self._scan_due.add(stream)
            else:
                self._event_ids.setdefault(stream, []).append([eid, what, now, None])
            self._arm(stream, now + self.settings.event_debounce)

    def _arm(self, stream: str, due: float) -> None:
        """(under the lock) The stream's timer fires at `due` at the latest."""
        armed = self._debounce.get(stream)
        if armed is not None and armed[0] <= due:
            return
        if armed is not None:
            armed[1].cancel()
        t = threading.Timer(max(0.0, due - time.monotonic()), self._fire, args=(stream,))
        t.daemon = True
        self._debounce[stream] = (due, t)
        t.start()

    def _schedule(self, stream: str) -> None:
        """A scan of the stream after `event_debounce` (events within it make one read)."""
        self._note(stream, None)

    def _fire(self, stream: str) -> None:
        """The debounce ended: an echo waits `echo_delay` from its arrival; anything else is read now
        (and every event pending rides along)."""
        with self._lock:
            armed = self._debounce.get(stream)
            if armed is not None and armed[1] is threading.current_thread():
                self._debounce.pop(stream, None)
            now = time.monotonic()
            pending = self._event_ids.get(stream, [])
            for e in pending:
                if e[3] is None:
                    echo = self._echo(stream, e[0], e[1], e[2])
                    e[3] = e[2] + (self.settings.echo_delay if echo else self.settings.event_debounce)
            due = min((e[3] for e in pending), default=math.inf)
            if stream not in self._scan_due and due > now + 0.05:
                if due < math.inf:
                    self._arm(stream, due)
                return
            self._targeted.add(stream)
        if self.ctx is not None:
            try:
                self.ctx.trigger(stream)
            except Exception as exc:  # noqa: BLE001 - a failed trigger waits for the next poll
                log.warning("trigger_failed", system=self.name, stream=stream, error=str(exc))

    def _event_read(self, stream: str, scanned: bool) -> list[str] | None:
        """At the start of a read: the IDs to read instead of a scan (this read was triggered by
        events naming only records of the stream, and the stream was read through before), else
        None — a scan, which sees what every pending event named, so those are forgotten."""
        with self._lock:
            targeted = stream in self._targeted
            self._targeted.discard(stream)
            pending = self._event_ids.pop(stream, [])
            if targeted and scanned and stream not in self._scan_due:
                return sorted({e[0] for e in pending}, key=int)   # all of them: the request is paid anyway
            self._scan_due.discard(stream)
            return None
