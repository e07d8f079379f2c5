"""A call event in syncd's own terms, syncd's documented JSON format, and how events of one call
become one record.

syncd's JSON format (POST /hooks/calls/<system>, Content-Type application/json), for any PBX::

    {"call_id": "abc-1",              # the PBX's id of the call, the same in all its events (required)
     "event": "start",                # start | answer | end | record (required)
     "direction": "in",               # in | out
     "caller": "+7 912 345-67-01",    # any spelling; matched by E.164
     "called": "74951234567",
     "extension": "101",              # the company's extension on the call
     "duration": 42,                  # end: talk seconds
     "status": "answered",            # end: answered | missed | busy | failed
     "recording_url": "https://…",    # end or record
     "at": "2024-05-01T10:00:00+03:00"}   # when the event happened (default: when it arrived)

Every event is stored as a record of kind "call" keyed by the call id, carrying every field known
of the call so far; its version is (event time, stage), so an event delivered twice changes
nothing and one that arrives late (an `answer` after the `end`) is older than what is stored and
is dropped by the engine: the call's final state is never overwritten back.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Mapping

from syncd.connector import RawRecord

KIND = "call"
# an event's place in a call's life: later stages win over earlier ones delivered late
STAGES = {"start": 0, "answer": 1, "end": 2, "record": 3}
STATUSES = ("answered", "missed", "busy", "failed")
# syncd's JSON: body key -> the record's field
JSON_FIELDS = {"direction": "direction", "caller": "caller", "called": "called", "extension": "extension",
               "duration": "duration", "status": "status", "recording_url": "recording"}


class BadEvent(ValueError):
    """A post that is not a call event (answered 400 naming what is wrong)."""


@dataclass
class CallEvent:
    call_id: str
    stage: str                          # start | answer | end | record
    at: dt.datetime                     # when it happened (orders the events of one call)
    fields: dict[str, Any] = field(default_factory=dict)   # the record's fields this event states

    @property
    def version(self) -> str:
        # ISO UTC time, then the stage: text order is time order, and one moment's stages in order
        return f"{self.at.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%S.%f}Z#{STAGES[self.stage]}"


def _time(value: Any, tz: dt.tzinfo) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=tz)
    text = str(value).strip().replace(" ", "T", 1)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    got = dt.datetime.fromisoformat(text)
    return got if got.tzinfo else got.replace(tzinfo=tz)


def from_json(body: Mapping[str, Any], tz: dt.tzinfo, now: dt.datetime) -> CallEvent:
    """syncd's JSON format -> a CallEvent; BadEvent for what cannot be one."""
    call_id = str(body.get("call_id") or "").strip()
    if not call_id:
        raise BadEvent("call_id is missing")
    stage = str(body.get("event") or "").strip().lower()
    if stage not in STAGES:
        raise BadEvent(f"event must be one of {', '.join(STAGES)}")
    fields: dict[str, Any] = {}
    for key, name in JSON_FIELDS.items():
        v = body.get(key)
        if v not in (None, ""):
            fields[name] = v
    if "direction" in fields and fields["direction"] not in ("in", "out"):
        raise BadEvent("direction must be in or out")
    if "status" in fields and fields["status"] not in STATUSES:
        raise BadEvent(f"status must be one of {', '.join(STATUSES)}")
    if "duration" in fields:
        try:
            fields["duration"] = int(float(fields["duration"]))
        except (TypeError, ValueError):
            raise BadEvent("duration must be a number of seconds") from None
    try:
        at = _time(body["at"], tz) if body.get("at") else now
    except ValueError:
        raise BadEvent("at must be an ISO 8601 time") from None
    if stage == "start":
        fields.setdefault("started_at", at)
    return CallEvent(call_id, stage, at, fields)


class Calls:
    """What this process knows of each recent call, to give every record the call's fields so far.

    Only a convenience: a record lacking a field says nothing about it (the engine keeps what an
    earlier record of the call stated), so a restart that forgets this costs nothing."""

    def __init__(self, system: str, keep: int = 10_000) -> None:
        self.system, self.keep = system, keep
        self._known: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, ev: CallEvent) -> RawRecord:
        with self._lock:
            prev = self._known.get(ev.call_id)
            if prev is None:
                merged = dict(ev.fields)
                version = ev.version
            elif ev.version >= prev[0]:
                merged, version = {**prev[1], **ev.fields}, ev.version
            else:
                # a late event fills only what the newer ones did not say
                merged, version = {**ev.fields, **prev[1]}, prev[0]
            self._known[ev.call_id] = (version, merged)
            self._known.move_to_end(ev.call_id)
            while len(self._known) > self.keep:
                self._known.popitem(last=False)
        fields = {**merged, "id": ev.call_id, "source": self.system}
        # the record's version is the event's own: a late event is older than what is stored
        return RawRecord(KIND, ev.call_id, fields, version=ev.version, source_time=ev.at, partial=True)
