"""One batch's state, and the only code that changes it in the store.

Every stage of the engine (`syncd.pipeline.engine` lists them) takes a `Batch`: the transaction,
the system the records came from, what was loaded in bulk (bindings, entities) and what will be
written in bulk at the end (new bindings, the change log, entities). Stages return what the next
one needs; what they change in the store goes through the methods here, so it is written in a few
set-based statements per batch and a stage never writes a row another stage then overwrites.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple, Sequence

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection

from syncd import schema
from syncd.connector import RawRecord
from syncd.mapping import Mapper
from syncd.pipeline import match
from syncd.pipeline.counts import Counts
from syncd.store import Store, new_id, utcnow
from syncd.store import tables as t
from syncd.store.db import dialect_insert

CHUNK = 400


@dataclass
class Ent:
    """An entity as a batch holds it: its golden record and where each field came from."""

    id: str
    type: str
    golden: dict[str, Any]
    versions: dict[str, list[Any]]
    new: bool = False
    dirty: bool = False
    hold: str | None = None          # review | quarantine | merged (see tables.entities)


class Identified(NamedTuple):
    """A record and the entity it is (stage identify's output)."""

    eid: str
    rec: RawRecord
    etype: str
    fields: dict[str, Any]           # canonical, links resolved to entity ids
    created: bool                    # a new entity (or a held one standing for the record)


@dataclass
class RuleEffects:
    """What rules decided for one entity: field updates (origin `rules`) and new entities."""

    updates: dict[str, Any] = field(default_factory=dict)
    # (entity type, fields) or (entity type, fields, id) when the decider links to it (route_mail)
    creates: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass
class RuleInput:
    entity_type: str
    entity_id: str
    golden: dict[str, Any]
    changed: dict[str, Any]          # field -> new value, this batch
    system: str
    created: bool
    conn: Connection


RuleHook = Callable[[RuleInput], RuleEffects | None]
# an intake stage (syncd/pipeline/route_mail.py): called with the batch, its entities, the ids of
# the entities the batch created (in batch order) and the phone region; decides with
# `Batch.apply_decided` and returns the entities it touched
IntakeHook = Callable[[Any, dict[str, Any], list[str], str], set[str]]


@dataclass(frozen=True)
class Setup:
    """What every batch of one engine shares."""

    store: Store
    mapper: Mapper
    region: str
    rules: RuleHook | None = None
    intake: IntakeHook | None = None


def chunks(seq: Sequence[Any], n: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def iso(d: dt.datetime | None) -> str | None:
    return d.isoformat() if d else None


class BindingRace(Exception):
    """A record this batch bound was bound to another entity by a concurrent transaction (a push
    confirm of the record syncd created, read back here before that confirm committed): the batch
    is taken in again from the start, and then sees the binding."""


class Batch:
    """State of one batch: what was loaded in bulk, and what will be written in bulk."""

    def __init__(self, setup: Setup, conn: Connection, system: str, run_id: str | None,
                 stream: str | None) -> None:
        self.setup, self.conn, self.system, self.run_id, self.stream = setup, conn, system, run_id, stream
        self.store = setup.store
        self.mapper = setup.mapper
        self.ms = setup.mapper.ms
        self.region = setup.region
        self.now = utcnow()
        self.now_iso = self.now.isoformat()
        self.counts = Counts()
        self.bind_cache: dict[tuple[str, str], str] = {}
        self.aliases: set[tuple[str, str]] = set()        # (type, external id) of alias records
        self.new_bindings: list[dict[str, Any]] = []
        # entities that got a record of this system in this batch: writes to this system that
        # waited for the entity to exist here (a create whose answer was lost, read back) go on
        self.bound_here: set[str] = set()
        self.changelog: list[dict[str, Any]] = []
        # (type, external id) -> the entity a person said the record is ("new": a new one)
        self.forced: dict[tuple[str, str], str | None] = {}
        self.adopted: list[tuple[str, str]] = []        # (stub, entity it joined): identify.join_stub
        self.new_ents: dict[str, Ent] = {}

    def entity_type(self, kind: str | None) -> str | None:
        em = self.mapper.entity_map(self.system, kind) if kind else None
        return em.entity if em is not None and em.direction != "push" else None

    # -- bindings -------------------------------------------------------------------------------
    def load_bindings(self, wanted: set[tuple[str, str]]) -> None:
        exts = sorted({ext for _, ext in wanted})
        types = sorted({typ for typ, _ in wanted})
        for chunk in chunks(exts):
            # system, type, external id: the whole primary key, so an index probe per id
            rows = self.conn.execute(select(t.bindings.c.type, t.bindings.c.external_id, t.bindings.c.entity_id,
                                            t.bindings.c.alias)
                                     .where(t.bindings.c.system == self.system, t.bindings.c.type.in_(types),
                                            t.bindings.c.external_id.in_(chunk)))
            for typ, ext, eid, alias in rows:
                self.bind_cache[(typ, ext)] = eid
                if alias:
                    self.aliases.add((typ, ext))

    def bind(self, etype: str, ext: str, eid: str, *, system: str | None = None, how: str = "read",
             alias: bool = False) -> None:
        """Bind a record of this system (or, `system` given, the record of another system that
        this one names as its source — so when that record is read it joins the same entity).
        `alias`: a second record of this system for the entity (a statement, RawRecord.statement)."""
        if system is None:
            self.bind_cache[(etype, ext)] = eid
            self.bound_here.add(eid)
            if alias:
                self.aliases.add((etype, ext))
        # the source record counts as the entity's first (its key names the entity elsewhere)
        when = self.now if system is None else self.now - dt.timedelta(milliseconds=1)
        self.new_bindings.append(dict(system=system or self.system, type=etype, external_id=ext, entity_id=eid,
                                      created_at=when, how=how, alias=alias))

    def bound_elsewhere(self, eid: str | None, etype: str) -> bool:
        """Whether the entity has a record of this system already (bound before or in this batch)."""
        if eid is None:
            return False
        if any(b["entity_id"] == eid for b in self.new_bindings):
            return True
        return self.conn.execute(select(t.bindings.c.external_id).where(
            t.bindings.c.system == self.system, t.bindings.c.type == etype,
            t.bindings.c.entity_id == eid)).first() is not None

    # -- entities -------------------------------------------------------------------------------
    def new_entity(self, etype: str, hold: str | None = None) -> str:
        eid = new_id()
        self.new_ents[eid] = Ent(eid, etype, {}, {}, new=True, dirty=True, hold=hold)
        return eid

    def load_entities(self, ids: list[str]) -> dict[str, Ent]:
        out: dict[str, Ent] = {}
        wanted = sorted(set(ids) - set(self.new_ents))
        for chunk in chunks(wanted):
            for row in self.conn.execute(select(t.entities.c.id, t.entities.c.type, t.entities.c.fields,
                                                t.entities.c.versions, t.entities.c.hold)
                                         .where(t.entities.c.id.in_(chunk))):
                out[row.id] = Ent(row.id, row.type, schema.decode(row.fields), json.loads(row.versions),
                                  hold=row.hold)
        return out

    def log_change(self, eid: str, origin: str, fields: dict[str, Any], *, system: str | None = None,
                   rec: RawRecord | None = None) -> None:
        """A change-log row: a record's change as read (`rec`), or syncd's own decision (`origin`)."""
        self.changelog.append(dict(entity_id=eid, system=system or origin, origin=origin,
                                   fields=schema.encode(fields),
                                   source_version=rec.version if rec else None,
                                   source_time=rec.source_time if rec else None, observed_at=self.now,
                                   run_id=self.run_id))

    def apply_decided(self, ents: dict[str, Ent], eid: str | None, effects: RuleEffects,
                      origin: str) -> set[str]:
        """Field updates and new entities decided by syncd itself (rules, timers, metrics).

        They are changes like any other, with their origin in the change log, so they are planned
        to the systems and never read back as somebody's edit. Returns the entities touched.
        """
        touched: set[str] = set()
        if eid is not None and effects.updates:
            ent = ents[eid]
            upd = {k: schema.normalize(k, v) for k, v in effects.updates.items()}
            upd = {k: v for k, v in upd.items() if ent.golden.get(k) != v}
            if upd:
                ent.golden.update(upd)
                for k in upd:
                    ent.versions[k] = [origin, self.now_iso, self.run_id]
                ent.dirty = True
                touched.add(eid)
                self.log_change(eid, origin, upd)
        for etype, fields, *given in effects.creates:
            neid = given[0] if given else new_id()     # a stage that links to it names it first
            golden = {k: schema.normalize(k, v) for k, v in fields.items()}
            ents[neid] = Ent(neid, etype, golden, {k: [origin, self.now_iso, self.run_id] for k in golden},
                             new=True, dirty=True)
            self.log_change(neid, origin, golden)
            touched.add(neid)
        return touched

    def flush_entities(self, ents: dict[str, Ent]) -> None:
        """Write what the batch changed: entities, bindings, the change log, match keys."""
        new = [dict(id=e.id, type=e.type, fields=schema.encode(e.golden), versions=json.dumps(e.versions),
                    created_at=self.now, updated_at=self.now, hold=e.hold) for e in ents.values() if e.new]
        upd = [dict(b_id=e.id, fields=schema.encode(e.golden), versions=json.dumps(e.versions),
                    updated_at=self.now, hold=e.hold) for e in ents.values() if e.dirty and not e.new]
        if new:
            self.conn.execute(insert(t.entities), new)
        if upd:
            self.conn.execute(update(t.entities).where(t.entities.c.id == bindparam("b_id")).values(
                fields=bindparam("fields"), versions=bindparam("versions"), hold=bindparam("hold"),
                updated_at=bindparam("updated_at")), upd)
        if self.new_bindings:
            insert_bindings(self.conn, self.new_bindings)
            self.new_bindings = []
        if self.changelog:
            self.conn.execute(insert(t.changelog), self.changelog)
            self.changelog = []
        # match keys follow the golden record (a held entity has none: nothing may match it)
        dirty = [e for e in ents.values() if e.dirty and not e.hold and self.ms.identity.get(e.type)]
        if dirty:
            old_ids = [e.id for e in dirty if not e.new]
            for chunk in chunks(old_ids):
                self.conn.execute(delete(t.match_keys).where(t.match_keys.c.entity_id.in_(chunk)))
            rows = [dict(type=e.type, key=k, entity_id=e.id) for e in dirty
                    for k in match.keys_for(e.type, e.golden, self.ms.identity.get(e.type), self.region)]
            if rows:
                self.conn.execute(insert(t.match_keys), rows)
        for e in ents.values():
            e.new = e.dirty = False


def insert_bindings(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert bindings; one a concurrent transaction made for the same entity is fine, one it made
    for another entity means this batch decided on stale reads (BindingRace)."""
    b = t.bindings.c
    stmt = dialect_insert(conn, t.bindings).on_conflict_do_nothing(
        index_elements=[b.system, b.type, b.external_id]).returning(b.system, b.type, b.external_id)
    for chunk in chunks(rows):
        made = {tuple(r) for r in conn.execute(stmt, list(chunk))}     # only the rows inserted come back
        if len(made) == len(chunk):
            continue                      # nobody else bound them
        for r in chunk:
            if (r["system"], r["type"], r["external_id"]) in made:
                continue
            have = conn.execute(select(t.bindings.c.entity_id).where(
                t.bindings.c.system == r["system"], t.bindings.c.type == r["type"],
                t.bindings.c.external_id == r["external_id"])).scalar()
            if have != r["entity_id"]:
                raise BindingRace(f"{r['system']} {r['type']} {r['external_id']} was bound to {have} meanwhile")


__all__ = ["Batch", "BindingRace", "Ent", "Identified", "IntakeHook", "RuleEffects", "RuleHook", "RuleInput",
           "Setup", "chunks", "insert_bindings", "iso"]
