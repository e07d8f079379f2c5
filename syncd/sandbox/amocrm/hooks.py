"""Account webhooks: form bodies in PHP bracket notation (``leads[status][0][old_status_id]=…``), POSTed
from a background thread to every subscribed destination, best effort; each delivery goes to the
request log (kind "webhook").

One change -> one POST per subscribed webhook holding every action it subscribed to (a status change
is ``leads[update]`` and ``leads[status]`` in the same body); a batch write of N records posts them as
``[0]`` … ``[N-1]`` of one body. Failed deliveries are logged and not retried (amoCRM retries and
eventually disables the hook; not modelled).
"""

from __future__ import annotations

import queue
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

from syncd.sandbox.amocrm.records import Event
from syncd.sandbox.amocrm.state import SINGULAR, Account, Hook

SETTINGS = ("status_lead",) + tuple(f"{action}_{entity}" for entity in SINGULAR.values()
                                   for action in ("add", "update", "delete", "responsible", "note"))
USER_AGENT = "amoCRM-WebHook-client/1.0"


def _flatten(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _flatten(f"{prefix}[{k}]", v)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _flatten(f"{prefix}[{i}]", v)]
    if isinstance(value, bool):
        return [(prefix, "1" if value else "0")]
    return [(prefix, "" if value is None else str(value))]


def payload(acc: Account, ev: Event) -> dict[str, Any]:
    """An entity as webhooks show it: the old API's names (date_create, last_modified, custom_fields)."""
    if ev.action == "note":
        note = ev.data["note"]
        return {"note": {"id": note["id"], "element_id": note["entity_id"], "element_type": ev.etype,
                         "note_type": note["note_type"], "text": note["params"].get("text", ""),
                         "created_by": note["created_by"], "date_create": note["created_at"],
                         "account_id": acc.id}}
    r = ev.data
    d: dict[str, Any] = {"id": r["id"], "name": r["name"]}
    if ev.etype == "leads":
        d.update(status_id=r["status_id"], price=r["price"], pipeline_id=r["pipeline_id"])
    else:
        d["type"] = SINGULAR[ev.etype]
    d.update(ev.extra)
    d.update(responsible_user_id=r["responsible_user_id"], last_modified=r["updated_at"],
             modified_user_id=r["updated_by"], created_user_id=r["created_by"], date_create=r["created_at"],
             account_id=acc.id, created_at=r["created_at"], updated_at=r["updated_at"])
    fields = []
    for e in r.get("custom_fields_values") or []:
        f: dict[str, Any] = {"id": e["field_id"], "name": e["field_name"]}
        if e.get("field_code"):
            f["code"] = e["field_code"]
        f["values"] = [{"value": v["value"], **({"enum": v["enum_id"]} if "enum_id" in v else {})}
                       for v in e["values"]]
        fields.append(f)
    if fields:
        d["custom_fields"] = fields
    return d


def body_for(acc: Account, hook: Hook, events: list[Event]) -> str | None:
    pairs: list[tuple[str, str]] = []
    index: dict[tuple[str, str], int] = {}
    for ev in events:
        if f"{ev.action}_{SINGULAR[ev.etype]}" not in hook.settings:
            continue
        i = index[(ev.etype, ev.action)] = index.get((ev.etype, ev.action), -1) + 1
        pairs += _flatten(f"{ev.etype}[{ev.action}][{i}]", payload(acc, ev))
    if not pairs:
        return None
    pairs += [("account[subdomain]", acc.subdomain), ("account[id]", str(acc.id)),
              ("account[_links][self]", acc.base_url)]
    return urlencode(pairs)


class Dispatcher:
    """Queues bodies at the moment of the change (under the account lock) and posts them in order."""

    def __init__(self, acc: Account, timeout: float = 5.0) -> None:
        self.acc, self.timeout = acc, timeout
        self._queue: queue.Queue[tuple[Hook, str]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def emit(self, events: list[Event]) -> int:
        if not events:
            return 0
        with self.acc.lock:
            bodies = [(h, b) for h in self.acc.hooks.values() if (b := body_for(self.acc, h, events))]
        with self._lock:
            if bodies and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._loop, name="amocrm-webhooks", daemon=True)
                self._thread.start()
            for item in bodies:
                self._queue.put(item)
        return len(bodies)

    def _loop(self) -> None:
        while True:
            hook, body = self._queue.get()
            entry: dict[str, Any] = {"kind": "webhook", "ts": self.acc.now(), "method": "POST",
                                     "path": hook.destination, "hook_id": hook.id, "body": body}
            req = urllib.request.Request(hook.destination, data=body.encode(), method="POST", headers={
                "Content-Type": "application/x-www-form-urlencoded", "User-Agent": USER_AGENT})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    entry["status"] = resp.status
            except urllib.error.HTTPError as e:
                entry.update(status=e.code, error=f"HTTP {e.code}")
            except OSError as e:      # refused, timed out: best effort, logged
                entry.update(status=None, error=repr(e))
            finally:
                self.acc.record(entry)
                self._queue.task_done()

    def wait(self, timeout: float = 10.0) -> bool:
        """Block until every queued delivery was attempted (for tests)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks
