"""Outbound events: the portal POSTs `ONCRM…` events (form-encoded, `auth[application_token]`) to
`/hooks/bitrix24/<system>`; a verified event triggers a pull of its stream, debounced."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

import structlog

from connectors.bitrix24.settings import Bitrix24Settings
from connectors.bitrix24.values import EVENT_STREAMS
from syncd.connector import ConnectorContext, Route

log = structlog.get_logger("syncd.bitrix24")


class Events:
    name: str
    settings: Bitrix24Settings
    ctx: ConnectorContext | None
    _lock: threading.Lock
    _dirty_requisites: set[str]
    _debounce: dict[str, threading.Timer]

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
        stream = next((s for k, s in EVENT_STREAMS.items() if event.startswith(f"ONCRM{k}")), None)
        if stream is None:
            return JSONResponse({"ok": True, "ignored": event})
        eid = form.get("data[FIELDS][ID]")
        if event.startswith("ONCRMREQUISITE") and eid:
            # an address edit fires this without touching DATE_MODIFY: remember the requisite
            with self._lock:
                self._dirty_requisites.add(str(eid))
        self._schedule(stream)
        log.info("portal_event", system=self.name, bx_event=event, id=eid, stream=stream)
        return JSONResponse({"ok": True, "stream": stream})

    def _schedule(self, stream: str) -> None:
        """Debounce: events within `event_debounce` seconds make one pull of the stream."""
        with self._lock:
            if stream in self._debounce:
                return
            t = threading.Timer(self.settings.event_debounce, self._fire, args=(stream,))
            t.daemon = True
            self._debounce[stream] = t
        t.start()

    def _fire(self, stream: str) -> None:
        with self._lock:
            self._debounce.pop(stream, None)
        if self.ctx is not None:
            try:
                self.ctx.trigger(stream)
            except Exception as exc:  # noqa: BLE001 - a failed trigger waits for the next poll
                log.warning("trigger_failed", system=self.name, stream=stream, error=str(exc))
