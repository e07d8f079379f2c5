"""The Asterisk Manager Interface (AMI) face of the PBX sandbox: a TCP server on an asyncio loop in a
daemon thread, and the renderer that turns a `Call` into the events Asterisk 18/20 (chan_pjsip, app_dial,
basic bridge, cdr_manager) emits. Facts and their sources: the package docstring."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from syncd.sandbox.pbx.scenario import INBOUND, Call, Pbx

# main/manager.c perms[] (Asterisk 20): bit per class; "all" = every bit
PERMS: dict[str, int] = {
    "system": 1 << 0, "call": 1 << 1, "log": 1 << 2, "verbose": 1 << 3, "command": 1 << 4,
    "agent": 1 << 5, "user": 1 << 6, "config": 1 << 7, "dtmf": 1 << 8, "reporting": 1 << 9,
    "cdr": 1 << 10, "dialplan": 1 << 11, "originate": 1 << 12, "agi": 1 << 13, "cc": 1 << 15,
    "aoc": 1 << 16, "test": 1 << 17, "security": 1 << 18, "message": 1 << 19,
}
ALL = 0x7FFFFFFF
TRUE_WORDS = {"yes", "true", "y", "t", "1", "on"}
FALSE_WORDS = {"no", "false", "n", "f", "0", "off"}

STATES = {0: "Down", 1: "Rsrvd", 2: "OffHook", 3: "Dialing", 4: "Ring", 5: "Ringing", 6: "Up", 7: "Busy"}
CAUSES = {0: "Unknown", 16: "Normal Clearing", 17: "User busy", 19: "User alerting, no answer"}
AMI_VERSIONS = {"16": "5.0.5", "18": "7.0.3", "20": "9.0.0"}   # include/asterisk/manager.h AMI_VERSION

Headers = list[tuple[str, str]]


def strings_to_mask(value: str) -> int:
    """manager.c strings_to_mask: digits, on/off words, or a comma list of class names; -1 if empty."""
    value = (value or "").strip()
    if not value:
        return -1
    if value.isdigit():
        return int(value)
    if value.lower() in FALSE_WORDS:
        return 0
    if value.lower() in TRUE_WORDS:
        return ALL
    mask = 0
    for word in value.split(","):
        word = word.strip().lower()
        mask |= ALL if word == "all" else PERMS.get(word, 0)
    return mask


def privilege(category: str) -> str:
    """manager.c authority_to_str: the class names whose bit is set, then "all"."""
    return f"{category},all"


# -- rendering a call ------------------------------------------------------------------------------
@dataclass
class Chan:
    name: str
    state: int
    cid_num: str
    cid_name: str
    conn_num: str
    conn_name: str
    context: str
    exten: str
    uniqueid: str
    linkedid: str
    priority: int = 1
    language: str = "en"
    accountcode: str = ""

    def headers(self, prefix: str = "") -> Headers:
        """ast_manager_build_channel_state_string_prefix (main/manager_channels.c)."""
        return [(prefix + k, v) for k, v in (
            ("Channel", self.name), ("ChannelState", str(self.state)),
            ("ChannelStateDesc", STATES[self.state]),
            ("CallerIDNum", self.cid_num or "<unknown>"), ("CallerIDName", self.cid_name or "<unknown>"),
            ("ConnectedLineNum", self.conn_num or "<unknown>"),
            ("ConnectedLineName", self.conn_name or "<unknown>"),
            ("Language", self.language), ("AccountCode", self.accountcode), ("Context", self.context),
            ("Exten", self.exten), ("Priority", str(self.priority)), ("Uniqueid", self.uniqueid),
            ("Linkedid", self.linkedid))]


@dataclass
class AmiEvent:
    name: str
    category: str            # the class that decides who gets it (eventmask) and its Privilege line
    headers: Headers
    at: datetime | None = None

    def render(self) -> bytes:
        lines = [f"Event: {self.name}", f"Privilege: {privilege(self.category)}"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def get(self, key: str) -> str | None:
        return next((v for k, v in self.headers if k == key), None)


def _bridge(uid: str, n: int) -> Headers:
    """ast_manager_build_bridge_state_string_prefix (main/manager_bridges.c) for app_dial's basic bridge."""
    return [("BridgeUniqueid", uid), ("BridgeType", "basic"), ("BridgeTechnology", "simple_bridge"),
            ("BridgeCreator", "<unknown>"), ("BridgeName", "<unknown>"), ("BridgeNumChannels", str(n)),
            ("BridgeVideoSourceMode", "none")]


def call_events(pbx: Pbx, call: Call) -> list[AmiEvent]:
    """The AMI events of one call, in the order Asterisk emits them (see the package docstring)."""
    assert call.start is not None
    ids, ext = call.ids, pbx.extensions[call.extension]
    fmt = "%Y-%m-%d %H:%M:%S"             # cdr_manager.c DATE_FORMAT "%Y-%m-%d %T", server local time
    t0, t_ans, t_end = call.start, call.answer_at, call.end_at
    if call.direction == INBOUND:
        a = Chan(ids["channel"], 4, call.from_number, call.caller_name, "", "", pbx.inbound_context, call.did,
                 ids["uniqueid"], ids["linkedid"])
        b = Chan(ids["peer_channel"], 0, ext.number, ext.name, call.from_number, call.caller_name,
                 pbx.internal_context, call.did, ids["peer_uniqueid"], ids["linkedid"])
        dialstring = ext.number
        appdata = f"{pbx.tech}/{ext.number},{pbx.dial_timeout}"
        src, dst, dcontext = call.from_number, call.did, pbx.inbound_context
        clid_name, clid_num = call.caller_name, call.from_number
    else:
        a = Chan(ids["channel"], 4, ext.number, ext.name, "", "", pbx.internal_context, call.to_extension,
                 ids["uniqueid"], ids["linkedid"])
        b = Chan(ids["peer_channel"], 0, call.to_extension, "", ext.number, ext.name, pbx.internal_context,
                 call.to_extension, ids["peer_uniqueid"], ids["linkedid"])
        dialstring = f"{call.to_extension}@{pbx.trunk}"
        appdata = f"{pbx.tech}/{call.to_extension}@{pbx.trunk},{pbx.dial_timeout}"
        src, dst, dcontext = ext.number, call.to_extension, pbx.internal_context
        clid_name, clid_num = ext.name, ext.number
    ev: list[AmiEvent] = []

    def add(name: str, category: str, headers: Headers, at: datetime | None = None) -> None:
        ev.append(AmiEvent(name, category, headers, at or t0))

    add("Newchannel", "call", a.headers())
    add("Newexten", "dialplan", a.headers() + [("Extension", a.exten), ("Application", "Dial"),
                                               ("AppData", appdata)])
    add("Newchannel", "call", b.headers())
    add("DialBegin", "call", a.headers() + b.headers("Dest") + [("DialString", dialstring)])
    bridge_uid = str(uuid.uuid5(uuid.NAMESPACE_OID, ids["linkedid"]))   # a UUID, like ast_uuid_generate
    if call.busy:
        add("DialEnd", "call", a.headers() + b.headers("Dest") + [("DialStatus", "BUSY")])
        b.state = 0
        add("Hangup", "call", b.headers() + [("Cause", "17"), ("Cause-txt", CAUSES[17])])
        add("Hangup", "call", a.headers() + [("Cause", "17"), ("Cause-txt", CAUSES[17])])
        disposition = "BUSY"
    else:
        b.state = 5
        add("Newstate", "call", b.headers())
        if call.answered:
            b.state = 6
            add("Newstate", "call", b.headers(), t_ans)
            add("DialEnd", "call", a.headers() + b.headers("Dest") + [("DialStatus", "ANSWER")], t_ans)
            a.state = 6
            add("Newstate", "call", a.headers(), t_ans)
            add("BridgeCreate", "call", _bridge(bridge_uid, 0), t_ans)
            add("BridgeEnter", "call", _bridge(bridge_uid, 1) + b.headers(), t_ans)
            add("BridgeEnter", "call", _bridge(bridge_uid, 2) + a.headers(), t_ans)
            # the company's side hangs up first
            first, second = (b, a) if call.direction == INBOUND else (a, b)
            add("BridgeLeave", "call", _bridge(bridge_uid, 1) + first.headers(), t_end)
            add("Hangup", "call", first.headers() + [("Cause", "16"), ("Cause-txt", CAUSES[16])], t_end)
            add("BridgeLeave", "call", _bridge(bridge_uid, 0) + second.headers(), t_end)
            add("BridgeDestroy", "call", _bridge(bridge_uid, 0), t_end)
            add("Hangup", "call", second.headers() + [("Cause", "16"), ("Cause-txt", CAUSES[16])], t_end)
            disposition = "ANSWERED"
        else:
            add("DialEnd", "call", a.headers() + b.headers("Dest") + [("DialStatus", "NOANSWER")], t_end)
            add("Hangup", "call", b.headers() + [("Cause", "0"), ("Cause-txt", CAUSES[0])], t_end)
            add("Hangup", "call", a.headers() + [("Cause", "16"), ("Cause-txt", CAUSES[16])], t_end)
            disposition = "NO ANSWER"
    clid = f'"{clid_name}" <{clid_num}>' if clid_name else clid_num
    duration = int((t_end - t0).total_seconds())
    billsec = int((t_end - t_ans).total_seconds()) if t_ans else 0
    add("Cdr", "cdr", [
        ("AccountCode", ""), ("Source", src), ("Destination", dst), ("DestinationContext", dcontext),
        ("CallerID", clid), ("Channel", a.name), ("DestinationChannel", b.name),
        ("LastApplication", "Dial"), ("LastData", appdata),
        ("StartTime", pbx.local(t0).strftime(fmt)),
        ("AnswerTime", pbx.local(t_ans).strftime(fmt) if t_ans else ""),
        ("EndTime", pbx.local(t_end).strftime(fmt)),
        ("Duration", str(duration)), ("BillableSeconds", str(billsec)), ("Disposition", disposition),
        ("AMAFlags", "DOCUMENTATION"), ("UniqueID", a.uniqueid), ("UserField", "")], t_end)
    return ev


# -- faults ----------------------------------------------------------------------------------------
@dataclass
class AmiFaults:
    """Applied to every call until changed. ``duplicate``: event names sent twice in a row;
    ``swap``: pairs of event names whose first occurrences trade places; ``drop_after``: after this many
    events of the next call (or after the first event of that name) every session's connection is
    closed, and the rest of the call is lost to them (Asterisk keeps nothing for a gone session)."""

    duplicate: list[str] = field(default_factory=list)
    swap: list[tuple[str, str]] = field(default_factory=list)
    drop_after: int | str | None = None

    def apply(self, events: list[AmiEvent]) -> tuple[list[AmiEvent], int | None]:
        out: list[AmiEvent] = []
        for e in events:
            out.append(e)
            if e.name in self.duplicate:
                out.append(e)
        for x, y in self.swap:
            ix = next((i for i, e in enumerate(out) if e.name == x), None)
            iy = next((i for i, e in enumerate(out) if e.name == y), None)
            if ix is not None and iy is not None:
                out[ix], out[iy] = out[iy], out[ix]
        cut: int | None = None
        if isinstance(self.drop_after, int):
            cut = self.drop_after
        elif isinstance(self.drop_after, str):
            cut = next((i + 1 for i, e in enumerate(out) if e.name == self.drop_after), None)
        return out, cut


# -- the server ------------------------------------------------------------------------------------
@dataclass
class AmiUser:
    username: str
    secret: str
    read: int = ALL


class _Session:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.authenticated = False
        self.username = ""
        self.send_events = ALL
        self.read = ALL
        self.closed = False

    def write(self, data: bytes) -> None:
        if not self.closed and not self.writer.is_closing():
            self.writer.write(data)


class AmiServer:
    """An AMI listener for `pbx`. ``start()`` runs it on its own event loop in a daemon thread."""

    def __init__(self, pbx: Pbx, host: str = "127.0.0.1", port: int = 0, *, users: Iterable[AmiUser] = (),
                 version: str = "18", auth_fail_delay: float = 1.0, pace: float = 0.0) -> None:
        self.pbx, self.host, self.port = pbx, host, port
        self.users = {u.username: u for u in users} or {"syncd": AmiUser("syncd", "syncd-secret")}
        self.ami_version = AMI_VERSIONS.get(version, version)
        self.auth_fail_delay, self.pace = auth_fail_delay, pace
        self.faults = AmiFaults()
        self.sessions: list[_Session] = []
        self.log: list[dict[str, Any]] = []     # {"t", "kind": "action"|"event"|"drop", ...}
        self.boot = time.time()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # lifecycle
    def start(self) -> AmiServer:
        ready = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            self._server = self.loop.run_until_complete(
                asyncio.start_server(self._serve, self.host, self.port))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

        self._thread = threading.Thread(target=run, name="pbx-ami", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("AMI sandbox did not start")
        self.pbx.listeners.insert(0, self)
        return self

    def stop(self) -> None:
        if self in self.pbx.listeners:
            self.pbx.listeners.remove(self)
        if self.loop and self.loop.is_running():
            async def shutdown() -> None:
                for s in list(self.sessions):
                    s.closed = True
                    s.writer.close()
                if self._server:
                    self._server.close()
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread:
            self._thread.join(5)

    def _record(self, kind: str, **kw: Any) -> None:
        with self._lock:
            self.log.append({"t": time.time(), "kind": kind, **kw})

    # events
    def emit(self, call: Call) -> None:
        """Send a call's events to every logged-in session whose eventmask takes them; returns once sent."""
        events, cut = self.faults.apply(call_events(self.pbx, call))
        assert self.loop is not None
        asyncio.run_coroutine_threadsafe(self._broadcast(events, cut), self.loop).result(30)

    async def _broadcast(self, events: list[AmiEvent], cut: int | None) -> None:
        for i, e in enumerate(events):
            if cut is not None and i >= cut:
                for s in list(self.sessions):
                    s.closed = True
                    s.writer.transport.abort()
                self._record("drop", after=i)
                return
            data = e.render()
            bit = PERMS[e.category]
            for s in list(self.sessions):
                if s.authenticated and s.send_events & bit and s.read & bit:
                    s.write(data)
            self._record("event", name=e.name, uniqueid=e.get("Uniqueid") or e.get("UniqueID"))
            for s in list(self.sessions):
                if not s.closed:
                    try:
                        await s.writer.drain()
                    except ConnectionError:
                        s.closed = True
            if self.pace:
                await asyncio.sleep(self.pace)

    # one connection
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s = _Session(writer)
        self.sessions.append(s)
        try:
            s.write(f"Asterisk Call Manager/{self.ami_version}\r\n".encode())
            while not s.closed:
                msg = await self._read_message(reader)
                if msg is None:
                    break
                if not await self._handle(s, msg):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            s.closed = True
            if s in self.sessions:
                self.sessions.remove(s)
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the transport may be gone already
                pass

    @staticmethod
    async def _read_message(reader: asyncio.StreamReader) -> list[tuple[str, str]] | None:
        headers: list[tuple[str, str]] = []
        while True:
            line = await reader.readline()
            if not line:
                return None
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if not text:
                if headers:
                    return headers
                continue
            key, _, value = text.partition(":")
            headers.append((key.strip(), value.strip()))

    @staticmethod
    def _get(msg: list[tuple[str, str]], key: str) -> str:
        return next((v for k, v in msg if k.lower() == key.lower()), "")

    def _respond(self, s: _Session, msg: list[tuple[str, str]], resp: str, message: str | None = None,
                 extra: Headers = ()) -> None:
        """astman_send_response_full: Response, ActionID (if given), then Message / extra headers."""
        lines = [f"Response: {resp}"]
        action_id = self._get(msg, "ActionID")
        if action_id:
            lines.append(f"ActionID: {action_id}")
        lines += [f"{k}: {v}" for k, v in extra]
        if message is not None:
            lines.append(f"Message: {message}")
        s.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def _handle(self, s: _Session, msg: list[tuple[str, str]]) -> bool:
        """process_message; False ends the session."""
        action = self._get(msg, "Action")
        self._record("action", action=action, actionid=self._get(msg, "ActionID"))
        if not action:
            self._respond(s, msg, "Error", "Missing action in request")
            return True
        act = action.lower()
        if not s.authenticated and act not in ("login", "logoff", "challenge"):
            self._respond(s, msg, "Error", "Permission denied")
            return True
        if act == "login":
            if s.authenticated:
                self._respond(s, msg, "Success", "Already authenticated")
                return True
            user = self.users.get(self._get(msg, "Username"))
            if user is None or user.secret != self._get(msg, "Secret"):
                await asyncio.sleep(self.auth_fail_delay)          # manager.c: sleep(1)
                self._respond(s, msg, "Error", "Authentication failed")
                await s.writer.drain()
                return False
            s.authenticated, s.username, s.read = True, user.username, user.read
            mask = strings_to_mask(self._get(msg, "Events"))
            if mask >= 0:
                s.send_events = mask
            self._respond(s, msg, "Success", "Authentication accepted")
            if s.send_events & PERMS["system"] and s.read & PERMS["system"]:
                up = int(time.time() - self.boot)
                s.write(AmiEvent("FullyBooted", "system", [("Uptime", str(up)), ("LastReload", str(up)),
                                                           ("Status", "Fully Booted")]).render())
            return True
        if act == "logoff":
            self._respond(s, msg, "Goodbye", "Thanks for all the fish.")
            await s.writer.drain()
            return False
        if act == "ping":
            now = time.time()
            self._respond(s, msg, "Success", extra=[("Ping", "Pong"),
                                                    ("Timestamp", f"{int(now)}.{int(now % 1 * 1e6):06d}")])
            return True
        if act == "events":
            mask = strings_to_mask(self._get(msg, "EventMask"))
            if mask < 0:
                self._respond(s, msg, "Error", "Invalid event mask")
            else:
                s.send_events = mask
                self._respond(s, msg, "Success", extra=[("Events", "On" if mask else "Off")])
            return True
        if act == "challenge":
            self._respond(s, msg, "Error", "Must specify AuthType")
            return True
        self._respond(s, msg, "Error", f"Invalid/unknown command: {action}. "
                                       "Use Action: ListCommands to show available commands.")
        return True
