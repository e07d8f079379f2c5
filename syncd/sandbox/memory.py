"""An in-memory system for the engine's tests, the benchmark and experiments.

`MemorySystem` is the "remote" side (it survives a connector being rebuilt, as a real peer
survives a daemon restart); `MemoryConnector` talks to it like any connector: streams with a
cursor, writes that stamp and look up the external key before creating, and fault injection.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict

from syncd.connector import (Batch, BaseConnector, ConnectorType, Health, RawRecord, StreamSpec, WriteOp,
                             WriteResult)
from syncd.errors import PermanentError, TransientError

STAMP = "_stamp"
# the record another system holds for this one, as this one says (Bitrix24's ORIGINATOR_ID/ORIGIN_ID),
# "system:key": written by an update that names it (WriteOp.names), read back as RawRecord.origin
ORIGIN = "_origin"


# One clock for every in-memory system, as if they shared a wall clock: a `timed` system reports
# when each record last changed, so the `newest` policy can compare edits made in two systems.
_CLOCK = itertools.count(1)
_EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _tick() -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=next(_CLOCK))


class SimulatedCrash(BaseException):
    """Raised after a remote write succeeded, before syncd could commit: the process 'dies'."""


@dataclass
class MemorySystem:
    name: str
    kinds: tuple[str, ...] = ("person", "order")
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    versions: dict[tuple[str, str], int] = field(default_factory=dict)
    creates: int = 0
    writes: int = 0
    # next writes' faults, in order: "transient" (503, nothing written), "permanent" (400),
    # "lost" (written, then the answer is lost: a timeout), "bug" (an unexpected exception, nothing
    # written), "crash_after" (written, then the process dies before syncd can commit)
    faults: list[str] = field(default_factory=list)
    read_fault: str | None = None                       # every read fails: "transient" | "bug"
    timed: bool = False                                 # records carry their change time (source_time)
    times: dict[tuple[str, str], dt.datetime] = field(default_factory=dict)
    _seq: Any = field(default_factory=lambda: itertools.count(1))
    _lock: Any = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._epoch = uuid.uuid4().hex[:6]
        for k in self.kinds:
            self.objects.setdefault(k, {})

    def edit(self, kind: str, ext: str, **fields: Any) -> str:
        """What a person does in the system's UI: create or change an object."""
        with self._lock:
            obj = self.objects[kind].setdefault(ext, {})
            obj.update(fields)
            self.versions[(kind, ext)] = next(self._seq)
            self.times[(kind, ext)] = _tick()
            return ext

    def new_id(self, kind: str) -> str:
        # unique across processes: a rebuilt system never reuses an id an old store has bound
        return f"{self.name}-{kind}-{self._epoch}-{next(self._seq)}"

    def changed_since(self, kind: str, cursor: int) -> list[tuple[int, str]]:
        with self._lock:
            return sorted((v, ext) for (k, ext), v in self.versions.items() if k == kind and v > cursor)


class MemorySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kinds: list[str] = ["person", "order"]
    batch_size: int = 500
    seed: int = 0                 # people created at start, as if typed in by users
    write_delay: float = 0.0      # seconds per write (to have work in flight in tests)
    read_delay: float = 0.0       # seconds per batch read
    read_fault: str | None = None  # every read fails: "transient" or "bug" (an unexpected error)
    password: str | None = None   # unused; lets tests check that secrets never reach logs


class MemoryConnector(BaseConnector):
    def __init__(self, name: str, system: MemorySystem, batch_size: int = 500, *,
                 write_delay: float = 0.0, read_delay: float = 0.0) -> None:
        self.name = name
        self.system = system
        self.batch_size = batch_size
        self.write_delay, self.read_delay = write_delay, read_delay
        self.streams = {k: StreamSpec(k, (k,)) for k in system.kinds}
        self.writes = frozenset(system.kinds)

    def health(self) -> Health:
        return Health(True, f"{sum(len(v) for v in self.system.objects.values())} objects")

    def read(self, stream: str, cursor: str | None, *, since: dt.datetime | None = None) -> Iterator[Batch]:
        if self.system.read_fault == "transient":
            raise TransientError("injected: the system does not answer", connector=self.name)
        if self.system.read_fault == "bug":
            raise RuntimeError("injected: an unexpected failure while reading")
        kind = stream
        changed = self.system.changed_since(kind, int(cursor or 0))
        for i in range(0, len(changed), self.batch_size):
            chunk = changed[i:i + self.batch_size]
            recs: list[Any] = []
            for ver, ext in chunk:
                obj = dict(self.system.objects[kind][ext])
                stamp = obj.pop(STAMP, None)
                origin = _origin(obj.pop(ORIGIN, None))
                when = self.system.times.get((kind, ext)) if self.system.timed else None
                recs.append(RawRecord(kind, ext, obj, version=str(ver), stamp=stamp, source_time=when, origin=origin))
            if self.read_delay:
                time.sleep(self.read_delay)
            yield Batch(stream, recs, cursor=str(chunk[-1][0]))

    @property
    def fetchable(self) -> frozenset[str]:          # type: ignore[override]
        return frozenset(self.system.kinds)

    def fetch(self, kind: str, external_ids: list[str]) -> Iterator[RawRecord]:
        for ext in external_ids:
            obj = self.system.objects.get(kind, {}).get(ext)
            if obj is None:
                continue
            obj = dict(obj)
            stamp = obj.pop(STAMP, None)
            origin = _origin(obj.pop(ORIGIN, None))
            ver = self.system.versions.get((kind, ext))
            yield RawRecord(kind, ext, obj, version=str(ver) if ver is not None else None, stamp=stamp,
                            source_time=self.system.times.get((kind, ext)) if self.system.timed else None,
                            origin=origin)

    def write(self, op: WriteOp) -> WriteResult:
        if self.write_delay:
            time.sleep(self.write_delay)
        s = self.system
        with s._lock:
            fault = s.faults.pop(0) if s.faults else None
        if fault == "transient":
            raise TransientError("injected 503", connector=self.name, op_id=op.op_id)
        if fault == "permanent":
            raise PermanentError("injected validation error", connector=self.name, op_id=op.op_id)
        if fault == "bug":
            raise ValueError("injected: a bug in the connector")
        with s._lock:
            s.writes += 1
            objs = s.objects[op.kind]
            ext = op.external_id
            found = False
            if op.op == "create":
                keys = (op.external_key, *op.also_known_as)
                ext = next((e for e, o in objs.items() if o.get(STAMP) in keys), None)
                found = ext is not None
                if ext is None:
                    ext = s.new_id(op.kind)
                    objs[ext] = {STAMP: op.external_key}
                    s.creates += 1
            assert ext is not None
            if ext not in objs:
                raise PermanentError(f"{op.kind} {ext} not found", connector=self.name)
            objs[ext].update(op.fields)
            if op.names is not None:
                objs[ext][ORIGIN] = f"{op.names[0]}:{op.names[1]}"
            ver = next(s._seq)
            s.versions[(op.kind, ext)] = ver
            s.times[(op.kind, ext)] = _tick()
        if fault == "crash_after":
            raise SimulatedCrash(f"crash after writing {op.kind} {ext}")
        if fault == "lost":
            raise TransientError(f"injected: answer lost after writing {op.kind} {ext}", connector=self.name)
        return WriteResult(ext, dict(op.fields), version=str(ver), found=found)


def _origin(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    system, _, key = value.partition(":")
    return system, key


_SYSTEMS: dict[str, MemorySystem] = {}


def _factory(name: str, settings: MemorySettings, ctx: Any) -> MemoryConnector:
    system = _SYSTEMS.get(name)
    if system is None:
        system = _SYSTEMS[name] = MemorySystem(name, tuple(settings.kinds), read_fault=settings.read_fault)
        for i in range(settings.seed):
            system.edit("person", f"{name}-seed-{i}", name=f"Клиент {i}", email=f"seed{i}@{name}.example.ru")
    return MemoryConnector(name, system, settings.batch_size, write_delay=settings.write_delay,
                           read_delay=settings.read_delay)


connector = ConnectorType("memory", MemorySettings, _factory, "in-memory system for tests and demos")
