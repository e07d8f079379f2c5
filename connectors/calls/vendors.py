"""Cloud PBX webhook formats as adapter tables: one table per vendor, so another vendor is one more
table, not more code.

Zadarma ("notifications to an external server"; the vendor's PHP library zadarma/user-api-v1,
lib/Webhook/Notify*.php): form-encoded posts, field `event`, header `Signature` =
base64(hex(HMAC-SHA1(secret, the event's signed fields concatenated))); the URL is checked once
with GET ?zd_echo=<token>, which must be echoed.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Mapping

from connectors.calls.events import BadEvent, CallEvent, _time


@dataclass(frozen=True)
class EventSpec:
    stage: str                                   # start | answer | end | record
    direction: str | None                        # in | out, when the event tells
    fields: Mapping[str, str]                    # vendor field -> the record's field
    signed: tuple[str, ...] = ()                 # fields whose values, joined, are signed


@dataclass(frozen=True)
class Vendor:
    name: str
    event_field: str                             # the form field naming the event
    id_field: str                                # the call's id, the same in all its events
    time_field: str                              # the call's start, PBX local time
    events: Mapping[str, EventSpec]
    # status field's values -> answered | missed | busy | failed (anything else: failed)
    statuses: Mapping[str, str] = field(default_factory=dict)
    signature_header: str = "Signature"
    echo_param: str | None = None                # the URL check's query parameter, echoed back


_IN = ("caller_id", "called_did", "call_start")
_OUT = ("internal", "destination", "call_start")
ZADARMA = Vendor(
    "zadarma", "event", "pbx_call_id", "call_start",
    {
        "NOTIFY_START": EventSpec("start", "in", {"caller_id": "caller", "called_did": "called"}, _IN),
        "NOTIFY_INTERNAL": EventSpec("start", "in", {"caller_id": "caller", "called_did": "called",
                                                      "internal": "extension"}, _IN),
        "NOTIFY_ANSWER": EventSpec("answer", "in", {"caller_id": "caller", "destination": "extension"},
                                   ("caller_id", "destination", "call_start")),
        "NOTIFY_END": EventSpec("end", "in", {"caller_id": "caller", "called_did": "called", "internal": "extension",
                                              "duration": "duration", "disposition": "status"}, _IN),
        "NOTIFY_OUT_START": EventSpec("start", "out", {"internal": "extension", "destination": "called"}, _OUT),
        # its caller_id is the company's line: the caller of an outgoing call
        "NOTIFY_OUT_END": EventSpec("end", "out", {"caller_id": "caller", "internal": "extension",
                                                   "destination": "called", "duration": "duration",
                                                   "disposition": "status"}, _OUT),
        # the recording itself is fetched through Zadarma's API (pbx/record/request): not here
        "NOTIFY_RECORD": EventSpec("record", None, {}, ("pbx_call_id", "call_id_with_rec")),
    },
    statuses={"answered": "answered", "no answer": "missed", "noanswer": "missed", "busy": "busy",
              "cancel": "missed"},
    echo_param="zd_echo",
)

VENDORS: Mapping[str, Vendor] = {"zadarma": ZADARMA}


def signature_ok(vendor: Vendor, form: Mapping[str, str], got: str, secret: str) -> bool:
    spec = vendor.events.get(form.get(vendor.event_field, ""))
    if spec is None or not got:
        return False
    signed = "".join(form.get(f, "") for f in spec.signed)
    want = base64.b64encode(hmac.new(secret.encode(), signed.encode(), hashlib.sha1).hexdigest().encode()).decode()
    return hmac.compare_digest(got.strip(), want)


def to_event(vendor: Vendor, form: Mapping[str, str], tz: dt.tzinfo, now: dt.datetime) -> CallEvent | None:
    """The vendor's post -> a CallEvent; None for an event syncd has no use for; BadEvent when broken."""
    name = form.get(vendor.event_field, "")
    spec = vendor.events.get(name)
    if spec is None:
        return None
    call_id = (form.get(vendor.id_field) or "").strip()
    if not call_id:
        raise BadEvent(f"{vendor.id_field} is missing")
    fields: dict[str, object] = {}
    for src, dst in spec.fields.items():
        v = (form.get(src) or "").strip()
        if v:
            fields[dst] = v
    if spec.direction:
        fields["direction"] = spec.direction
    if "status" in fields:
        fields["status"] = vendor.statuses.get(str(fields["status"]).lower(), "failed")
    if "duration" in fields:
        try:
            fields["duration"] = int(float(str(fields["duration"])))
        except ValueError:
            raise BadEvent("duration is not a number") from None
    at = now
    if form.get(vendor.time_field):
        try:
            at = _time(form[vendor.time_field], tz)
        except ValueError:
            raise BadEvent(f"{vendor.time_field} is not a time") from None
        fields["started_at"] = at
    # one moment for all of a call's events (Zadarma sends its start time in each): the stage orders them
    return CallEvent(call_id, spec.stage, at, fields)
