"""The pure parts of the calls connector: the Zadarma adapter table against the PBX sandbox's own
notifications and signatures, the AMI events -> call events, merging a call's events."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from connectors.calls.ami import AmiEvents, parse_block
from connectors.calls.events import Calls, from_json
from connectors.calls.vendors import ZADARMA, signature_ok, to_event
from syncd.sandbox.pbx import Call, Pbx, call_events, notifications, signed_string, zadarma_signature

TZ = ZoneInfo("Europe/Moscow")
NOW = dt.datetime(2024, 5, 1, 7, 0, tzinfo=dt.UTC)


def _placed(call: Call) -> tuple[Pbx, Call]:
    pbx = Pbx()
    pbx.place(call)
    return pbx, call


def test_zadarma_notifications_become_one_answered_call() -> None:
    pbx, call = _placed(Call.inbound("+79123456701", "101", talk_seconds=42))
    calls = Calls("pbx")
    last = None
    for form in notifications(pbx, call):
        assert signature_ok(ZADARMA, form, zadarma_signature(signed_string(form), "s3"), "s3")
        assert not signature_ok(ZADARMA, form, zadarma_signature(signed_string(form), "other"), "s3")
        ev = to_event(ZADARMA, form, TZ, NOW)
        assert ev is not None and ev.call_id == call.ids["pbx_call_id"]
        last = calls.record(ev)
    assert last is not None
    f = last.fields
    assert (f["direction"], f["caller"], f["extension"], f["duration"], f["status"]) == (
        "in", "+79123456701", "101", 42, "answered")
    assert f["started_at"] == call.start


def test_zadarma_outgoing_and_missed() -> None:
    pbx, out = _placed(Call.outbound("102", "+74951112233", talk_seconds=5))
    end = to_event(ZADARMA, notifications(pbx, out)[-2 if out.ids["call_id_with_rec"] else -1], TZ, NOW)
    assert end is not None and end.fields["direction"] == "out" and end.fields["called"] == "+74951112233"
    pbx, missed = _placed(Call.inbound("+79123456701", "101", answered=False))
    end = to_event(ZADARMA, notifications(pbx, missed)[-1], TZ, NOW)
    assert end is not None and end.fields["status"] == "missed" and end.fields["duration"] == 0


def test_a_late_event_never_overwrites_the_end() -> None:
    calls = Calls("pbx")
    end = from_json({"call_id": "c1", "event": "end", "status": "answered", "duration": 9,
                     "at": "2024-05-01T10:01:00+03:00"}, TZ, NOW)
    answer = from_json({"call_id": "c1", "event": "answer", "extension": "101",
                        "at": "2024-05-01T10:00:10+03:00"}, TZ, NOW)
    r1, r2 = calls.record(end), calls.record(answer)
    assert r2.version is not None and r1.version is not None and r2.version < r1.version   # the engine drops it
    assert r2.fields["status"] == "answered" and r2.fields["extension"] == "101"


def test_ami_dialbegin_and_cdr() -> None:
    pbx, call = _placed(Call.inbound("+79123456701", "101", talk_seconds=30))
    conv = AmiEvents(TZ, 5)
    got = []
    for e in call_events(pbx, call):
        block = parse_block("\r\n".join([f"Event: {e.name}"] + [f"{k}: {v}" for k, v in e.headers]))
        ev = conv.convert(block, NOW)
        if ev is not None:
            got.append(ev)
    assert [g.stage for g in got] == ["start", "end"]
    assert {g.call_id for g in got} == {call.ids["linkedid"]}
    assert got[0].fields["extension"] == "101" and got[0].fields["direction"] == "in"
    assert (got[1].fields["duration"], got[1].fields["status"]) == (30, "answered")
