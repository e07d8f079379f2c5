"""`GET /hooks/calls/route?caller=…`: the extension of the caller's own manager, for the PBX's
dialplan (Asterisk `CURL()`, a cloud PBX's "responsible manager" request).

Read from the store only: the caller's number gives person match keys (E.164, any spelling) ->
the one person syncd knows with it -> person.responsible; that user's extension and presence come
from the CRM's users, read in the background every `presence_ttl` seconds. Nothing on this path
calls the CRM. Empty answer (the PBX's queue): unknown number, several people with it, no manager,
a manager without an extension, or one who is absent (not present, or deactivated).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import select

from syncd import schema
from syncd.pipeline import link
from syncd.store import tables as t

log = structlog.get_logger("syncd.calls")


class Staff:
    """The CRM's users as the routing needs them: id -> (extension, present), kept fresh by a thread."""

    def __init__(self, describe: Callable[[], Any], ttl: float, name: str = "calls") -> None:
        self.describe, self.ttl, self.name = describe, ttl, name
        self._users: dict[str, dict[str, Any]] | None = None
        self._at = 0.0
        self._lock = threading.Lock()
        self._refreshing = False

    def refresh(self) -> None:
        try:
            users = dict(self.describe().users)
        except Exception as exc:  # noqa: BLE001 - keep what was read last; the queue takes calls meanwhile
            log.warning("calls_staff_refresh_failed", system=self.name, error=f"{type(exc).__name__}: {exc}")
            users = None
        with self._lock:
            if users is not None:
                self._users = users
            self._at = time.monotonic()
            self._refreshing = False

    def users(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            users, stale = self._users, time.monotonic() - self._at >= self.ttl
            start = stale and users is not None and not self._refreshing
            if start:
                self._refreshing = True
        if users is None:
            self.refresh()                # the first request after start waits once for the list
            with self._lock:
                return self._users or {}
        if start:                         # later ones never wait: the old list answers meanwhile
            threading.Thread(target=self.refresh, name=f"calls-staff-{self.name}", daemon=True).start()
        return users


def extension_for(ctx: Any, staff: Staff, caller: str) -> str:
    """The caller's manager's extension, or "" (see the module docstring)."""
    caller = (caller or "").strip()
    if not caller:
        return ""
    ms = ctx.mapper.ms
    with ctx.store.engine.connect() as conn:
        found = link.link_senders(conn, [("call", {"call.caller": caller, "call.direction": "in"})],
                                  ms.identity.get("person"), ms.region)[0]
        if found is None:
            return ""
        raw = conn.execute(select(t.entities.c.fields).where(t.entities.c.id == found)).scalar()
    manager = schema.decode(raw).get("person.responsible") if raw else None
    if not manager:
        return ""
    user = staff.users().get(str(manager))
    if not user or not user.get("active", True) or not user.get("present"):
        return ""
    return str(user.get("extension") or "")
