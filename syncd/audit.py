"""`syncd audit`: are the systems in step? Every bound record read back and compared with syncd's.

Each record syncd has bound in a system is read again through that system's connector (`fetch`,
the connector's own read path), mapped to canonical fields like a pull, and compared field by
field with what syncd holds for it: the golden record as that system reads it back (the mapping's
round trip). Only the fields syncd writes to that system are compared (its map's `push`/`both`
fields, not `create_only` ones), only records the map applies to (`only_when`).

What a peer always does to a value is not drift: a phone in another spelling (canonical E.164 on
both sides), money with another scale, a list in another order, an empty value against a missing
one. A difference that a queued write explains is counted as pending, not drift. Every other
difference is drift, with its likely cause:

- `outside`   — edited in the system after syncd last read it (the record is newer than what syncd
                holds of it): the next pull takes it in;
- `applied`   — syncd wrote one value and the system holds another (a peer that changed it on the
                way, or a write that was lost after it was confirmed);
- `roundtrip` — the mapping cannot write this value so that it reads back the same;
- `disagree`  — syncd's record and the system differ and nothing is queued to bring them in step;
- `gone`      — the record is no longer there.

`repair`: an `outside` record is taken in as a pull would (the conflict policies decide); for the
others the system's shadow is set to what it holds and the write is planned through the outbox,
so the pusher brings it to syncd's record under the usual policies. Systems whose connector cannot
read a record back (1C sends to syncd; a CommerceML site exports only what changed) are listed as
unreadable, never silently skipped.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable, Mapping, Sequence

import structlog
from sqlalchemy import select, update

from syncd import schema
from syncd.connector import Batch, RawRecord
from syncd.errors import BadInput
from syncd.mapping import Mapper
from syncd.mapping.model import EntityMap
from syncd.pipeline import outbox, plan
from syncd.pipeline.canonical import to_canonical
from syncd.schema import Ref
from syncd.store import Store, utcnow
from syncd.store import tables as t

log = structlog.get_logger("syncd.audit")

CHUNK = 200
CAUSES = {
    "outside": "edited in the system after syncd last read it",
    "applied": "the system holds another value than syncd wrote",
    "roundtrip": "the mapping cannot write this value so that it reads back the same",
    "disagree": "syncd's record and the system differ and no write is queued",
    "gone": "the record is no longer in the system",
    "unreadable": "the record cannot be read as the mapping expects",
}
LAST_KEY = "audit:last"            # kv: the last audit's summary (stats, metrics, the page)


@dataclass(frozen=True)
class Drift:
    system: str
    entity_type: str
    entity_id: str
    external_id: str
    field: str
    held: Any                       # what syncd holds (as the system reads it back)
    found: Any                      # what the system holds
    cause: str

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["held"], d["found"] = _plain(self.held), _plain(self.found)
        d["why"] = CAUSES.get(self.cause, self.cause)
        return d


@dataclass
class Report:
    checked: dict[str, int] = field(default_factory=dict)        # system -> records compared
    drift: list[Drift] = field(default_factory=list)
    pending: dict[str, int] = field(default_factory=dict)        # system -> differences a queued write explains
    unreadable: dict[str, str] = field(default_factory=dict)     # system -> why it cannot be read back
    repaired: int = 0
    seconds: float = 0.0

    @property
    def drifted_records(self) -> int:
        return len({(d.system, d.entity_id) for d in self.drift})

    def as_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "drift_records": self.drifted_records,
                "drift": [d.as_dict() for d in self.drift], "pending": self.pending,
                "unreadable": self.unreadable, "repaired": self.repaired, "seconds": round(self.seconds, 3)}


def audit(store: Store, mapper: Mapper, connectors: Mapping[str, Any], *, systems: Sequence[str] | None = None,
          since: dt.datetime | None = None, sample: int | None = None, repair: bool = False,
          ingest: Callable[[str, Batch], Any] | None = None,
          progress: Callable[[int], None] | None = None) -> Report:
    """Compare every bound record (or a random `sample` of them per system) with its system."""
    t0 = time.monotonic()
    report = Report()
    for system in systems or sorted(connectors):
        conn = connectors.get(system)
        fetch = getattr(conn, "fetch", None)
        readable = frozenset(getattr(conn, "fetchable", ()))
        maps = [m for m in mapper.ms.maps if m.system == system and m.direction in ("pull", "both")
                and any(fm.direction != "pull" for fm in m.fields.values())]
        if not maps:
            continue
        if fetch is None or not readable:
            report.unreadable[system] = getattr(conn, "unreadable_why", None) or \
                "its connector cannot read a record back by its id"
            continue
        todo: list[tuple[EntityMap, str, str]] = []
        for em in maps:
            if em.kind not in readable:
                report.unreadable[f"{system}.{em.kind}"] = "its connector cannot read this kind back"
                continue
            todo += [(em, ext, eid) for ext, eid in _bound(store, system, em.entity, since)]
        if sample is not None and len(todo) > sample:
            todo = random.sample(todo, sample)           # the scheduled audit: a sample per run
        for em in maps:
            bound = [(ext, eid) for m, ext, eid in todo if m is em]
            for i in range(0, len(bound), CHUNK):
                chunk = bound[i:i + CHUNK]
                _compare_chunk(store, mapper, em, system, chunk, fetch, report, repair, ingest)
                if progress:
                    progress(len(chunk))
    report.seconds = time.monotonic() - t0
    return report


def _bound(store: Store, system: str, entity_type: str, since: dt.datetime | None) -> list[tuple[str, str]]:
    """(external id, entity id) of the records bound in `system` (the record writes go to)."""
    b, e = t.bindings.c, t.entities.c
    q = (select(b.external_id, b.entity_id).join(t.entities, e.id == b.entity_id)
         .where(b.system == system, b.type == entity_type, b.alias.is_(False), e.hold.is_(None)))
    if since is not None:
        q = q.where(e.updated_at >= since)
    with store.read() as c:
        return [(str(x), str(y)) for x, y in c.execute(q.order_by(b.external_id))]


def _compare_chunk(store: Store, mapper: Mapper, em: EntityMap, system: str, chunk: list[tuple[str, str]],
                   fetch: Callable[[str, list[str]], Iterable[RawRecord]], report: Report, repair: bool,
                   ingest: Callable[[str, Batch], Any] | None) -> None:
    by_ext = dict(chunk)
    recs = {r.external_id: r for r in fetch(em.kind, list(by_ext))}
    eids = sorted(set(by_ext.values()))
    with store.read() as c:
        golden = {i: schema.decode(f) for i, f in c.execute(select(t.entities.c.id, t.entities.c.fields)
                                                             .where(t.entities.c.id.in_(eids)))}
        shadows = {i: (schema.decode(f), v) for i, f, v in c.execute(
            select(t.shadows.c.entity_id, t.shadows.c.fields, t.shadows.c.source_version)
            .where(t.shadows.c.entity_id.in_(eids), t.shadows.c.system == system))}
        queued = {k[0] for k, row in outbox.open_writes(c, eids).items() if k[1] == system}
        queued |= {a for a, s in outbox.dead_writes(c, eids) if s == system}
        refs = _ref_index(c, system, recs.values(), mapper)
    fields = [n for n, fm in em.fields.items() if fm.direction != "pull" and not fm.create_only]
    to_shadow: dict[str, dict[str, Any]] = {}
    to_ingest: list[RawRecord] = []
    for ext, eid in chunk:
        g = golden.get(eid, {})
        if not g or not plan.wants(em, g):
            continue
        report.checked[system] = report.checked.get(system, 0) + 1
        rec = recs.get(ext)
        if rec is None:
            report.drift.append(Drift(system, em.entity, eid, ext, "*", "present", None, "gone"))
            continue
        try:
            _etype, found = to_canonical(mapper, system, rec)
        except BadInput as exc:
            report.drift.append(Drift(system, em.entity, eid, ext, "*", None, str(exc), "unreadable"))
            continue
        found = {k: _resolve(k, v, refs) for k, v in found.items()}
        shadow, version = shadows.get(eid, ({}, None))
        for name in fields:
            if name not in found:
                continue
            held = mapper.roundtrip(em, name, g.get(name))
            if same(name, held, found[name]):
                continue
            if eid in queued:
                report.pending[system] = report.pending.get(system, 0) + 1
                continue
            if version and rec.version and _newer(rec.version, version):
                cause = "outside"
            elif not same(name, held, g.get(name)):
                cause = "roundtrip"
            elif same(name, shadow.get(name), held):
                cause = "applied"
            else:
                cause = "disagree"
            report.drift.append(Drift(system, em.entity, eid, ext, name, held, found[name], cause))
            if cause == "outside":
                if rec not in to_ingest:
                    to_ingest.append(rec)
            else:
                to_shadow.setdefault(eid, dict(shadow))[name] = found[name]
    if repair:
        report.repaired += _repair(store, mapper, system, to_shadow, to_ingest, ingest)


def _repair(store: Store, mapper: Mapper, system: str, to_shadow: dict[str, dict[str, Any]],
            to_ingest: list[RawRecord], ingest: Callable[[str, Batch], Any] | None) -> int:
    n = 0
    if to_shadow:
        with store.begin() as c:
            for eid, fields in to_shadow.items():
                c.execute(update(t.shadows).where(t.shadows.c.entity_id == eid, t.shadows.c.system == system)
                          .values(fields=schema.encode(fields), updated_at=utcnow()))
            ents = {i: _Planned(i, typ, schema.decode(f), h) for i, typ, f, h in c.execute(
                select(t.entities.c.id, t.entities.c.type, t.entities.c.fields, t.entities.c.hold)
                .where(t.entities.c.id.in_(sorted(to_shadow))))}
            n += plan.plan_entities(c, mapper, ents, sorted(ents), origin="audit")
    if to_ingest and ingest is not None:
        ingest(system, Batch("audit", list(to_ingest)))
        n += len(to_ingest)
    return n


@dataclass
class _Planned:
    id: str
    type: str
    golden: dict[str, Any]
    hold: str | None


def _ref_index(conn: Any, system: str, recs: Iterable[RawRecord], mapper: Mapper) -> dict[tuple[str, str], str]:
    """(entity type, external id in `system`) -> entity id, for the links the records hold."""
    wanted: set[tuple[str, str]] = set()
    for r in recs:
        em = mapper.entity_map(system, r.kind)
        if em is None:
            continue
        try:
            _e, f = mapper.to_canonical(system, r.kind, r.fields)
        except (BadInput, KeyError):
            continue
        for name, v in f.items():
            if v is not None and schema.has_refs(name):
                wanted |= {(x.entity, x.external_id) for x in schema.refs_of(name, v) if isinstance(x, Ref)}
    out: dict[tuple[str, str], str] = {}
    exts = sorted({e for _t, e in wanted})
    for i in range(0, len(exts), 400):
        for typ, ext, eid in conn.execute(select(t.bindings.c.type, t.bindings.c.external_id, t.bindings.c.entity_id)
                                          .where(t.bindings.c.system == system,
                                                 t.bindings.c.external_id.in_(exts[i:i + 400]))):
            out[(typ, ext)] = eid
    return out


def _resolve(name: str, value: Any, refs: dict[tuple[str, str], str]) -> Any:
    if value is None or not schema.has_refs(name):
        return value
    return schema.map_refs(name, value, lambda _t, r: refs.get((r.entity, r.external_id), f"?{r.external_id}")
                           if isinstance(r, Ref) else r)


def _newer(a: str, b: str) -> bool:
    from syncd.pipeline.resolve import version_key

    return version_key(a) > version_key(b)


# -- what a peer always does to a value is not drift -------------------------------------------

def same(name: str, a: Any, b: Any) -> bool:
    """Equal once what peers always normalise is taken out: blank vs missing, money scale, list
    order, case and spacing of text, phone spelling (the last ten digits)."""
    return _norm(name, a) == _norm(name, b)


def _norm(name: str, v: Any) -> Any:
    if _blank(v):
        return None
    if isinstance(v, (list, tuple)):
        members = [_norm_member(name, m) for m in v]
        return tuple(sorted(members, key=repr))
    return _norm_scalar(name, v)


def _norm_member(name: str, m: Any) -> Any:
    if isinstance(m, Mapping):
        return tuple(sorted((k, _norm_scalar(f"{name}.{k}", x)) for k, x in m.items() if not _blank(x)))
    return _norm_scalar(name, m)


def _norm_scalar(name: str, v: Any) -> Any:
    if _blank(v):
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float, Decimal)):
        return _num(v)
    s = " ".join(str(v).split())
    digits = "".join(c for c in s if c.isdigit())
    if "phone" in name and len(digits) >= 10:
        return digits[-10:]
    try:
        if s and s.replace(".", "", 1).replace("-", "", 1).isdigit():
            return _num(Decimal(s))
    except InvalidOperation:
        pass
    return s.casefold()


def _num(v: Any) -> Decimal:
    return Decimal(str(v)).normalize()


def _blank(v: Any) -> bool:
    return v is None or v == "" or (isinstance(v, (list, tuple, dict, set)) and not v)


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()
    return v


# -- the last audit, for stats, metrics and the page ---------------------------------------------

def remember(store: Store, report: Report, *, sample: bool) -> None:
    store.kv_set(LAST_KEY, {"at": utcnow().isoformat(), "sample": sample, "checked": sum(report.checked.values()),
                            "drift_records": report.drifted_records, "drift_fields": len(report.drift),
                            "by_system": {s: len({d.entity_id for d in report.drift if d.system == s})
                                          for s in report.checked},
                            "unreadable": report.unreadable, "seconds": round(report.seconds, 3)})


def last(store: Store) -> dict[str, Any] | None:
    return store.kv_get(LAST_KEY, None)


__all__ = ["audit", "Report", "Drift", "CAUSES", "same", "remember", "last"]
