"""The PBX sandbox: its AMI face checked by panoramisk 1.4 running unchanged, its Zadarma webhooks
checked by a local HTTP receiver that recomputes the documented signature."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from syncd.sandbox.pbx import AmiFaults, Call, CloudFaults, PbxHandle, start

panoramisk = pytest.importorskip("panoramisk")
from panoramisk import Manager  # noqa: E402

CALLER = "+79161234567"
SECRET = "zadarma-test-secret"


# -- a webhook receiver --------------------------------------------------------------------------------
class Receiver:
    def __init__(self, statuses: list[int] | None = None) -> None:
        self.posts: list[dict[str, Any]] = []
        self.statuses = list(statuses or [])     # answered in turn, then 200
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # zd_echo check
                echo = parse_qs(urlparse(self.path).query).get("zd_echo", [""])[0]
                self._answer(200, echo.encode())

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                rec.posts.append({"content_type": self.headers["Content-Type"],
                                  "signature": self.headers.get("Signature"),
                                  "form": {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}})
                self._answer(rec.statuses.pop(0) if rec.statuses else 200, b"")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/zadarma"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[str]:
        return [p["form"]["event"] for p in self.posts]


def expected_signature(form: dict[str, str], secret: str) -> str:
    """Zadarma's documented check: base64_encode(hash_hmac('sha1', <fields>, secret)) (hex digest)."""
    fields = {"NOTIFY_START": ("caller_id", "called_did", "call_start"),
              "NOTIFY_INTERNAL": ("caller_id", "called_did", "call_start"),
              "NOTIFY_END": ("caller_id", "called_did", "call_start"),
              "NOTIFY_ANSWER": ("caller_id", "destination", "call_start"),
              "NOTIFY_OUT_START": ("internal", "destination", "call_start"),
              "NOTIFY_OUT_END": ("internal", "destination", "call_start"),
              "NOTIFY_RECORD": ("pbx_call_id", "call_id_with_rec")}[form["event"]]
    hexdigest = hmac.new(secret.encode(), "".join(form[f] for f in fields).encode(), hashlib.sha1).hexdigest()
    return base64.b64encode(hexdigest.encode()).decode()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def h(receiver: Receiver) -> Iterator[PbxHandle]:
    handle = start(auth_fail_delay=0.05, webhook_url=receiver.url, webhook_secret=SECRET)
    yield handle
    handle.stop()


# -- AMI with panoramisk ---------------------------------------------------------------------------------
async def _login(h: PbxHandle, secret: str | None = None, **kw: Any) -> tuple[Manager, list[Any], Any]:
    manager = Manager(host="127.0.0.1", port=h.ami_port, username=h.extra["ami_username"],
                      secret=secret or h.extra["ami_secret"], ping_delay=60, reconnect_timeout=60, **kw)
    events: list[Any] = []
    manager.register_event("*", lambda m, e: events.append(e))
    await manager.connect()
    resp = await asyncio.wait_for(manager.authenticated_future, 5)
    return manager, events, resp


async def _until(events: list[Any], name: str, count: int = 1, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while sum(1 for e in events if e.event == name) < count:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), timeout)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_login_fullybooted_ping_unknown_action(h: PbxHandle) -> None:
    async def main() -> None:
        manager, events, resp = await _login(h)
        assert resp.response == "Success" and resp.message == "Authentication accepted"
        assert manager.protocol.version == "7.0.3"          # Asterisk 18's AMI_VERSION
        await _until(events, "FullyBooted")
        fb = next(e for e in events if e.event == "FullyBooted")
        assert fb.privilege == "system,all" and fb.status == "Fully Booted"
        pong = await manager.send_action({"Action": "Ping"})
        assert pong.response == "Success" and pong.ping == "Pong"
        sec, _, usec = pong.timestamp.partition(".")
        assert sec.isdigit() and len(usec) == 6
        assert pong.actionid.startswith("action/")             # ActionID echoed (panoramisk matched it)
        bad = await manager.send_action({"Action": "NoSuchThing"})
        assert bad.response == "Error"
        assert bad.message == ("Invalid/unknown command: NoSuchThing. "
                               "Use Action: ListCommands to show available commands.")
        off = await manager.send_action({"Action": "Events", "EventMask": "off"})
        assert off.response == "Success" and off.events == "Off"
        bye = await manager.send_action({"Action": "Logoff"})
        assert bye.response == "Goodbye" and bye.message == "Thanks for all the fish."
        manager.close()
    run(main())


def test_wrong_secret_fails_and_closes(h: PbxHandle) -> None:
    async def main() -> None:
        lost = asyncio.Event()
        manager, events, resp = await _login(h, secret="wrong", on_disconnect=lambda m, exc: lost.set())
        assert resp.response == "Error" and resp.message == "Authentication failed"
        assert manager.authenticated is False
        await asyncio.wait_for(lost.wait(), 5)                # the server closed the connection
        assert not any(e.event == "FullyBooted" for e in events)
        manager.close()
    run(main())


CHANNEL_KEYS = ["Event", "Privilege", "Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum",
                "CallerIDName", "ConnectedLineNum", "ConnectedLineName", "Language", "AccountCode", "Context",
                "Exten", "Priority", "Uniqueid", "Linkedid"]


def test_answered_call_events(h: PbxHandle) -> None:
    pbx = h.extra["state"]

    async def main() -> None:
        manager, events, _ = await _login(h)
        await _until(events, "FullyBooted")
        call = await asyncio.to_thread(pbx.call, CALLER, "101", answered=True, talk_seconds=42,
                                       caller_name="Иван Кузнецов")
        await _until(events, "Cdr")
        manager.close()
        ev = [e for e in events if e.event != "FullyBooted"]
        assert [e.event for e in ev] == [
            "Newchannel", "Newexten", "Newchannel", "DialBegin", "Newstate", "Newstate", "DialEnd", "Newstate",
            "BridgeCreate", "BridgeEnter", "BridgeEnter", "BridgeLeave", "Hangup", "BridgeLeave",
            "BridgeDestroy", "Hangup", "Cdr"]
        trunk, ext = call.ids["channel"], call.ids["peer_channel"]
        assert trunk.startswith("PJSIP/trunk-") and ext.startswith("PJSIP/101-")
        first = ev[0]
        assert [k for k in first.keys() if k != "content"] == CHANNEL_KEYS   # panoramisk adds "content"
        assert (first.privilege, first.channel, first.channelstate, first.channelstatedesc) == (
            "call,all", trunk, "4", "Ring")
        assert (first.calleridnum, first.calleridname, first.connectedlinenum) == (
            CALLER, "Иван Кузнецов", "<unknown>")
        assert (first.context, first.exten, first.priority) == ("from-trunk", "74951234567", "1")
        assert first.uniqueid == first.linkedid == call.ids["uniqueid"]
        assert ev[1].privilege == "dialplan,all" and ev[1].application == "Dial"
        newb = ev[2]
        assert (newb.channel, newb.channelstatedesc, newb.calleridnum, newb.calleridname) == (
            ext, "Down", "101", "Анна Смирнова")
        assert newb.connectedlinenum == CALLER and newb.linkedid == call.ids["uniqueid"]
        begin = ev[3]
        assert (begin.channel, begin.destchannel, begin.dialstring) == (trunk, ext, "101")
        assert begin.destuniqueid == call.ids["peer_uniqueid"] and begin.destlinkedid == call.ids["uniqueid"]
        assert [(e.channel, e.channelstatedesc) for e in (ev[4], ev[5])] == [(ext, "Ringing"), (ext, "Up")]
        end = ev[6]
        assert (end.dialstatus, end.destchannelstate, end.destchannelstatedesc) == ("ANSWER", "6", "Up")
        assert (ev[7].channel, ev[7].channelstate) == (trunk, "6")
        assert ev[8].bridgetype == "basic" and ev[8].bridgenumchannels == "0"
        assert [(e.channel, e.bridgenumchannels) for e in ev[9:11]] == [(ext, "1"), (trunk, "2")]
        assert len({e.bridgeuniqueid for e in ev[8:15] if e.bridgeuniqueid}) == 1
        hangups = [e for e in ev if e.event == "Hangup"]
        assert [(e.channel, e.cause, e["Cause-txt"]) for e in hangups] == [
            (ext, "16", "Normal Clearing"), (trunk, "16", "Normal Clearing")]
        cdr = ev[-1]
        assert cdr.privilege == "cdr,all"
        assert (cdr.source, cdr.destination, cdr.destinationcontext) == (CALLER, "74951234567", "from-trunk")
        assert cdr.callerid == f'"Иван Кузнецов" <{CALLER}>'
        assert (cdr.channel, cdr.destinationchannel, cdr.lastapplication) == (trunk, ext, "Dial")
        assert (cdr.disposition, cdr.duration, cdr.billableseconds) == ("ANSWERED", "47", "42")
        assert cdr.uniqueid == call.ids["uniqueid"] and cdr.amaflags == "DOCUMENTATION"
        local = pbx.local(call.start)
        assert cdr.starttime == local.strftime("%Y-%m-%d %H:%M:%S")
        assert cdr.answertime == pbx.local(call.answer_at).strftime("%Y-%m-%d %H:%M:%S")
        assert cdr.endtime == pbx.local(call.end_at).strftime("%Y-%m-%d %H:%M:%S")
    run(main())


def test_missed_busy_and_outbound_calls(h: PbxHandle) -> None:
    pbx = h.extra["state"]

    async def main() -> None:
        manager, events, _ = await _login(h, events="call,cdr")      # no system/dialplan classes
        await asyncio.sleep(0.1)
        missed = await asyncio.to_thread(pbx.call, CALLER, "102", answered=False)
        await _until(events, "Cdr", 1)
        busy = await asyncio.to_thread(pbx.place, Call.inbound(CALLER, "101", busy=True))
        await _until(events, "Cdr", 2)
        out = await asyncio.to_thread(pbx.call, "101", "+74951112233", direction="outbound", talk_seconds=10)
        await _until(events, "Cdr", 3)
        manager.close()
        names = [e.event for e in events]
        assert "FullyBooted" not in names and "Newexten" not in names      # eventmask honoured
        cut1, cut2 = names.index("Cdr") + 1, names.index("Cdr", names.index("Cdr") + 1) + 1
        m, b, o = events[:cut1], events[cut1:cut2], events[cut2:]
        assert [e.event for e in m] == ["Newchannel", "Newchannel", "DialBegin", "Newstate", "DialEnd",
                                        "Hangup", "Hangup", "Cdr"]
        assert m[4].dialstatus == "NOANSWER" and m[4].destchannelstatedesc == "Ringing"
        assert [(e.channel, e.cause) for e in m[5:7]] == [(missed.ids["peer_channel"], "0"),
                                                          (missed.ids["channel"], "16")]
        assert (m[-1].disposition, m[-1].answertime, m[-1].billableseconds, m[-1].duration) == (
            "NO ANSWER", "", "0", "5")
        assert [e.event for e in b] == ["Newchannel", "Newchannel", "DialBegin", "DialEnd", "Hangup", "Hangup",
                                        "Cdr"]
        assert b[3].dialstatus == "BUSY" and b[4]["Cause-txt"] == "User busy" and b[-1].disposition == "BUSY"
        assert b[-1].uniqueid == busy.ids["uniqueid"]
        assert o[0].channel == out.ids["channel"] and o[0].channel.startswith("PJSIP/101-")
        assert (o[0].calleridnum, o[0].exten, o[0].context) == ("101", "+74951112233", "from-internal")
        assert next(e for e in o if e.event == "DialBegin").dialstring == "+74951112233@trunk"
        assert next(e for e in o if e.event == "DialEnd").dialstatus == "ANSWER"
        ocdr = o[-1]
        assert (ocdr.source, ocdr.destination, ocdr.disposition, ocdr.billableseconds) == (
            "101", "+74951112233", "ANSWERED", "10")
        assert ocdr.destinationchannel.startswith("PJSIP/trunk-")
    run(main())


def test_ami_faults_duplicate_swap_and_drop(h: PbxHandle) -> None:
    pbx, ami = h.extra["state"], h.extra["ami"]

    async def main() -> None:
        lost = asyncio.Event()
        manager, events, _ = await _login(h, on_disconnect=lambda m, exc: lost.set())
        await _until(events, "FullyBooted")
        ami.faults = AmiFaults(duplicate=["Hangup"], swap=[("DialEnd", "Newstate")])
        await asyncio.to_thread(pbx.call, CALLER, "101", talk_seconds=5)
        await _until(events, "Cdr")
        names = [e.event for e in events if e.event != "FullyBooted"]
        assert names.count("Hangup") == 4
        assert names[3:5] == ["DialBegin", "DialEnd"]        # DialEnd came before the ringing Newstate
        dup = [e for e in events if e.event == "Hangup"]
        assert dup[0] == dup[1]
        events.clear()
        ami.faults = AmiFaults(drop_after="DialBegin")
        await asyncio.to_thread(pbx.call, CALLER, "101", talk_seconds=5)
        await asyncio.wait_for(lost.wait(), 5)
        assert [e.event for e in events] == ["Newchannel", "Newexten", "Newchannel", "DialBegin"]
        assert ami.log[-1]["kind"] == "drop"
        manager.close()
    run(main())


# -- Zadarma webhooks ------------------------------------------------------------------------------------
def test_webhooks_answered_inbound_fields_and_signature(h: PbxHandle, receiver: Receiver) -> None:
    pbx = h.extra["state"]
    call = pbx.call(CALLER, "101", answered=True, talk_seconds=42)
    assert receiver.events() == ["NOTIFY_START", "NOTIFY_INTERNAL", "NOTIFY_ANSWER", "NOTIFY_END",
                                 "NOTIFY_RECORD"]
    start_s = pbx.local(call.start).strftime("%Y-%m-%d %H:%M:%S")
    for p in receiver.posts:
        assert p["content_type"] == "application/x-www-form-urlencoded"
        assert p["signature"] == expected_signature(p["form"], SECRET)
        assert p["form"]["pbx_call_id"] == call.ids["pbx_call_id"]      # stable across the call
    start, internal, answer, end, record = (p["form"] for p in receiver.posts)
    assert start == {"event": "NOTIFY_START", "call_start": start_s, "pbx_call_id": call.ids["pbx_call_id"],
                     "caller_id": CALLER, "called_did": "74951234567"}
    assert internal["internal"] == "101"
    assert (answer["caller_id"], answer["destination"], answer["internal"]) == (CALLER, "101", "101")
    assert (end["duration"], end["disposition"], end["status_code"], end["is_recorded"]) == (
        "42", "answered", "16", "1")
    assert end["call_id_with_rec"] == record["call_id_with_rec"] == call.ids["call_id_with_rec"] != ""
    assert set(record) == {"event", "call_id_with_rec", "pbx_call_id"}
    # the recording: Zadarma's pbx/record/request -> link -> the file
    r = requests.get(f"{h.url}/v1/pbx/record/request/", params={"call_id": record["call_id_with_rec"]})
    assert r.status_code == 200 and r.json()["status"] == "success"
    f = requests.get(r.json()["link"])
    assert f.status_code == 200 and f.headers["content-type"] == "audio/mpeg" and f.content[:3] == b"ID3"
    # a forged signature does not verify
    assert expected_signature(start, "other-secret") != receiver.posts[0]["signature"]


def test_webhooks_missed_and_outbound(h: PbxHandle, receiver: Receiver) -> None:
    pbx = h.extra["state"]
    missed = pbx.call(CALLER, "102", answered=False)
    assert receiver.events() == ["NOTIFY_START", "NOTIFY_INTERNAL", "NOTIFY_END"]
    end = receiver.posts[-1]["form"]
    assert (end["disposition"], end["status_code"], end["duration"], end["is_recorded"],
            end["call_id_with_rec"]) == ("no answer", "19", "0", "0", "")
    assert end["pbx_call_id"] == missed.ids["pbx_call_id"] and end["pbx_call_id"].startswith("in_")
    receiver.posts.clear()
    out = pbx.call("101", "+74951112233", direction="outbound", talk_seconds=10)
    assert receiver.events() == ["NOTIFY_OUT_START", "NOTIFY_OUT_END", "NOTIFY_RECORD"]
    s, e = receiver.posts[0]["form"], receiver.posts[1]["form"]
    assert (s["internal"], s["destination"]) == ("101", "+74951112233")
    assert (e["disposition"], e["duration"], e["pbx_call_id"]) == ("answered", "10", out.ids["pbx_call_id"])
    assert all(p["signature"] == expected_signature(p["form"], SECRET) for p in receiver.posts)


def test_webhook_faults_duplicate_reorder_retry_and_zd_echo(h: PbxHandle, receiver: Receiver) -> None:
    pbx, cloud = h.extra["state"], h.extra["cloud"]
    assert cloud.verify_url() is True                                      # the zd_echo check
    cloud.faults = CloudFaults(duplicate=["NOTIFY_END"], swap=[("NOTIFY_START", "NOTIFY_END")])
    call = pbx.call(CALLER, "101", answered=False)
    assert receiver.events() == ["NOTIFY_END", "NOTIFY_INTERNAL", "NOTIFY_START", "NOTIFY_END"]
    assert receiver.posts[0] == receiver.posts[3]                          # same body, same signature
    assert {p["form"]["pbx_call_id"] for p in receiver.posts} == {call.ids["pbx_call_id"]}
    receiver.posts.clear()
    receiver.statuses = [500, 503]
    cloud.faults = CloudFaults(retries=2, retry_delay=0.01)
    pbx.call(CALLER, "102", answered=False)
    assert receiver.events() == ["NOTIFY_START"] * 3 + ["NOTIFY_INTERNAL", "NOTIFY_END"]
    starts = [entry for entry in cloud.log if entry.get("event") == "NOTIFY_START"][-3:]
    assert [(x["status"], x["attempt"]) for x in starts] == [(500, 1), (503, 2), (200, 3)]


def test_control_api(h: PbxHandle, receiver: Receiver) -> None:
    r = requests.post(f"{h.url}/_sandbox/extensions", json={"number": "103", "name": "Вера Козлова"})
    assert {"number": "103", "name": "Вера Козлова"} in r.json()
    r = requests.patch(f"{h.url}/_sandbox/faults", json={"cloud": {"duplicate": ["NOTIFY_START"]}})
    assert r.json()["cloud"]["duplicate"] == ["NOTIFY_START"]
    r = requests.post(f"{h.url}/_sandbox/calls", json={"from_number": CALLER, "to_extension": "103",
                                                       "answered": True, "talk_seconds": 7})
    assert r.status_code == 201 and r.json()["outcome"] == "answered"
    assert receiver.events()[:2] == ["NOTIFY_START", "NOTIFY_START"]
    assert requests.post(f"{h.url}/_sandbox/calls", json={"from_number": CALLER,
                                                          "to_extension": "999"}).status_code == 400
    log = requests.get(f"{h.url}/_sandbox/log").json()
    assert [x["name"] for x in log["ami"] if x["kind"] == "event"][-1] == "Cdr"
    assert [x["event"] for x in log["cloud"]][-1] == "NOTIFY_RECORD"
