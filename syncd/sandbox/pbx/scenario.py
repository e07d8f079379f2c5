"""The PBX's model: extensions, scripted calls (`Call`) and the ids and times a call gets when it is placed.

A `Call` is a plain scenario object; `Pbx.place(call)` stamps it (start time, Asterisk uniqueids and channel
names, the cloud PBX's call ids) and hands it to the AMI server and the cloud sender, which render it in their
own protocol. Nothing here waits in real time: a call's times come from the PBX clock (`Pbx.now`, movable).
"""

from __future__ import annotations

import itertools
import secrets
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

INBOUND, OUTBOUND = "inbound", "outbound"
ANSWERED, NOANSWER, BUSY = "answered", "noanswer", "busy"


@dataclass
class Extension:
    number: str
    name: str = ""


@dataclass
class Call:
    """One scripted call.

    inbound:  ``from_number`` (an outside number) calls the company's ``did``; the PBX rings extension
              ``to_extension``.
    outbound: extension ``from_number`` dials the outside number ``to_extension`` (the name is kept for
              one signature: ``call(from_number, to_extension, ...)``; ``Call.outbound(ext, number)`` reads
              better).
    ``answered=False`` is a call nobody picked up (rang ``ring_seconds``, then Dial timed out); ``busy=True``
    a call the other side refused as busy (486 / Q.931 cause 17).
    """

    from_number: str
    to_extension: str
    answered: bool = True
    talk_seconds: int = 60
    direction: str = INBOUND
    busy: bool = False
    ring_seconds: int = 5
    caller_name: str = ""             # inbound: the outside caller's CallerID name ("" -> <unknown>)
    did: str = ""                     # inbound: the number dialed; "" -> the PBX's default DID
    recorded: bool = True             # answered calls are recorded (cloud: is_recorded / NOTIFY_RECORD)
    start: datetime | None = None     # None -> the PBX clock when placed
    # filled in by Pbx.place():
    ids: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def inbound(cls, caller: str, extension: str, **kw: Any) -> Call:
        return cls(caller, extension, direction=INBOUND, **kw)

    @classmethod
    def outbound(cls, extension: str, number: str, **kw: Any) -> Call:
        return cls(extension, number, direction=OUTBOUND, **kw)

    def __post_init__(self) -> None:
        if self.direction not in (INBOUND, OUTBOUND):
            raise ValueError(f"direction must be {INBOUND!r} or {OUTBOUND!r}, not {self.direction!r}")
        if self.busy:
            self.answered = False

    # -- derived ------------------------------------------------------------------------------------
    @property
    def outcome(self) -> str:
        return ANSWERED if self.answered else BUSY if self.busy else NOANSWER

    @property
    def extension(self) -> str:
        """The company's extension on this call (callee inbound, caller outbound)."""
        return self.to_extension if self.direction == INBOUND else self.from_number

    @property
    def outside_number(self) -> str:
        return self.from_number if self.direction == INBOUND else self.to_extension

    @property
    def ring(self) -> int:
        return 0 if self.busy else max(0, int(self.ring_seconds))

    @property
    def talk(self) -> int:
        return max(0, int(self.talk_seconds)) if self.answered else 0

    @property
    def answer_at(self) -> datetime | None:
        assert self.start is not None
        return self.start + timedelta(seconds=self.ring) if self.answered else None

    @property
    def end_at(self) -> datetime:
        assert self.start is not None
        return self.start + timedelta(seconds=self.ring + self.talk)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start"] = self.start.isoformat() if self.start else None
        d["outcome"] = self.outcome
        return d


class Pbx:
    """The shared state: extensions, the clock, id counters, and the two faces (AMI, cloud webhooks)."""

    def __init__(self, *, extensions: list[Extension] | None = None, did: str = "74951234567",
                 tz: str = "Europe/Moscow", trunk: str = "trunk", tech: str = "PJSIP",
                 inbound_context: str = "from-trunk", internal_context: str = "from-internal",
                 dial_timeout: int = 30) -> None:
        self.lock = threading.RLock()
        self.extensions: dict[str, Extension] = {}
        for ext in extensions if extensions is not None else [Extension("101", "Анна Смирнова"),
                                                               Extension("102", "Борис Петров")]:
            self.extensions[ext.number] = ext
        self.did, self.tz, self.trunk, self.tech = did, ZoneInfo(tz), trunk, tech
        self.inbound_context, self.internal_context, self.dial_timeout = (inbound_context, internal_context,
                                                                         dial_timeout)
        self.clock_offset = 0.0
        self._uid_seq = itertools.count(1)
        self._chan_seq = itertools.count(1)
        self._rec_seq = itertools.count(1000001)
        self.calls: list[Call] = []
        self.listeners: list[Any] = []      # objects with .emit(call) (AmiServer, CloudSender)

    # -- control ------------------------------------------------------------------------------------
    def add_extension(self, number: str, name: str = "") -> Extension:
        with self.lock:
            ext = self.extensions[str(number)] = Extension(str(number), name)
            return ext

    def now(self) -> datetime:
        return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=self.clock_offset)

    def local(self, t: datetime) -> datetime:
        return t.astimezone(self.tz)

    def place(self, call: Call) -> Call:
        """Stamp a call (ids, start) and hand it to every listener, in order: AMI first, then webhooks."""
        with self.lock:
            ext = call.extension
            if ext not in self.extensions:
                raise ValueError(f"extension {ext!r} is not defined; known: {sorted(self.extensions)}")
            if call.start is None:
                call.start = self.now()
            if not call.did:
                call.did = self.did
            epoch = int(call.start.timestamp())
            uid_a, uid_b = f"{epoch}.{next(self._uid_seq)}", f"{epoch}.{next(self._uid_seq)}"
            trunk_chan = f"{self.tech}/{self.trunk}-{next(self._chan_seq):08x}"
            ext_chan = f"{self.tech}/{ext}-{next(self._chan_seq):08x}"
            a, b = (trunk_chan, ext_chan) if call.direction == INBOUND else (ext_chan, trunk_chan)
            prefix = "in" if call.direction == INBOUND else "out"
            call.ids = {
                "uniqueid": uid_a, "peer_uniqueid": uid_b, "linkedid": uid_a,
                "channel": a, "peer_channel": b,
                "pbx_call_id": f"{prefix}_{secrets.token_hex(20)}",
                "call_id_with_rec": (f"{epoch}.{next(self._rec_seq)}" if call.answered and call.recorded
                                     else ""),
            }
            self.calls.append(call)
            listeners = list(self.listeners)
        for listener in listeners:
            listener.emit(call)
        return call

    def call(self, from_number: str, to_extension: str, answered: bool = True, talk_seconds: int = 60,
             direction: str = INBOUND, **kw: Any) -> Call:
        return self.place(Call(str(from_number), str(to_extension), answered=answered,
                               talk_seconds=talk_seconds, direction=direction, **kw))
