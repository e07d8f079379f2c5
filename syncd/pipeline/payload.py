"""Stage 8a: what a claimed write sends, decided when it is sent.

For each claimed outbox row: the golden record against the target's shadow gives the fields
that differ (all fields on create) — so a write never carries a value older than one syncd has
recorded, and changes queued one after another go out as one write. Links are translated to the
target's ids; a link the target cannot take yet makes the write wait (`Blocked`), or, where it may,
go without that link and wait for it afterwards (`Ready.deferred`).

Pure decisions over rows loaded in bulk: one read transaction per claim.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from sqlalchemy import select
from sqlalchemy.engine import Connection

from syncd import schema
from syncd.connector import Traits, WriteOp
from syncd.errors import PermanentError
from syncd.mapping import Mapper
from syncd.pipeline import outbox, plan
from syncd.store import tables as t

CHUNK = 400


def external_key(entity_id: str) -> str:
    """syncd's own key: the stamp of a record that came from no system (a rule's task), and the
    key earlier versions stamped on every create (still looked up, so none is made twice)."""
    return f"syncd-{entity_id}"


def natural_key(origin: tuple[str, str] | None, entity_id: str, natural: frozenset[str] = frozenset()) -> str:
    """The key a create carries: made from the record the entity came from, so it is readable and
    the same whichever syncd made it — that record's own id when its system's ids are documents'
    ids (a shop order's Ид in 1C: "1001"), else named with its system ("crm-15"); syncd's own key
    only where there is no such record."""
    if origin is None:
        return external_key(entity_id)
    return origin[1] if origin[0] in natural else f"{origin[0]}-{origin[1]}"


@dataclass(frozen=True)
class Embedded:
    """A linked record created in the target inside this write (a new customer inside its order)."""

    entity_id: str
    entity_type: str
    external_id: str
    sent: dict[str, Any]


@dataclass(frozen=True)
class Ready:
    op: WriteOp
    sent: dict[str, Any]                           # canonical fields the target holds after the write
    deferred: tuple[str, str, str] | None = None   # (entity, why, detail) of a link left out for now
    embedded: tuple[Embedded, ...] = ()


@dataclass(frozen=True)
class Nothing:
    reason: str                                    # nothing to send: the target is in step


@dataclass(frozen=True)
class Blocked:
    on: str                                        # entity the write waits for (read: a stream)
    why: str                                       # create | confirm | held | dead | record | read
    detail: str
    plan: outbox.Intent | None = None              # the write that entity itself needs, if none is queued


@dataclass(frozen=True)
class Failed:
    error: Exception


Outcome = Ready | Nothing | Blocked | Failed


@dataclass
class _Target:
    """A linked entity as the write to one system sees it."""

    id: str
    type: str
    hold: str | None
    merged_into: str | None
    golden: dict[str, Any]
    created_at: dt.datetime | None


class _Block(Exception):
    def __init__(self, on: str, why: str, detail: str, intent: outbox.Intent | None = None) -> None:
        super().__init__(detail)
        self.on, self.why, self.detail, self.intent = on, why, detail, intent


@dataclass
class _Loaded:
    ents: dict[str, _Target] = field(default_factory=dict)
    binds: dict[tuple[str, str, str], str] = field(default_factory=dict)   # (eid, system, type) -> ext
    hows: dict[tuple[str, str], str | None] = field(default_factory=dict)  # (eid, system) -> bindings.how
    first: dict[str, tuple[str, str]] = field(default_factory=dict)        # eid -> its first record
    made: dict[str, tuple[str, str]] = field(default_factory=dict)         # eid -> first record syncd made
    natural: frozenset[str] = frozenset()
    shadows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    held: dict[str, set[str]] = field(default_factory=dict)
    open: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    dead: set[tuple[str, str]] = field(default_factory=set)
    read: set[tuple[str, str]] = field(default_factory=set)      # (system, stream) read through once


def _chunks(seq: Sequence[Any]) -> Any:
    for i in range(0, len(seq), CHUNK):
        yield seq[i:i + CHUNK]


def _load_entities(conn: Connection, ids: set[str], into: _Loaded) -> None:
    want = sorted(ids - set(into.ents))
    for chunk in _chunks(want):
        for row in conn.execute(select(t.entities.c.id, t.entities.c.type, t.entities.c.fields, t.entities.c.hold,
                                       t.entities.c.merged_into, t.entities.c.created_at)
                                .where(t.entities.c.id.in_(chunk))):
            into.ents[row.id] = _Target(row.id, row.type, row.hold, row.merged_into, schema.decode(row.fields),
                                        row.created_at)


def _load_bindings(conn: Connection, ids: set[str], into: _Loaded) -> None:
    for chunk in _chunks(sorted(ids)):
        rows = conn.execute(select(t.bindings.c.entity_id, t.bindings.c.system, t.bindings.c.type,
                                   t.bindings.c.external_id, t.bindings.c.how)
                            .where(t.bindings.c.entity_id.in_(chunk), t.bindings.c.alias.is_(False))
                            .order_by(t.bindings.c.created_at.desc(), t.bindings.c.system.desc()))
        for eid, system, typ, ext, how in rows:
            into.binds[(eid, system, typ)] = ext      # oldest last: the earliest binding wins
            into.hows[(eid, system)] = how
            into.first[eid] = (system, ext)
            if how == "created":
                into.made[eid] = (system, ext)


def load(conn: Connection, rows: Sequence[dict[str, Any]]) -> _Loaded:
    """Everything the decisions for these rows read, in a few set-based queries."""
    out = _Loaded()
    eids = {r["entity_id"] for r in rows}
    _load_entities(conn, eids, out)
    # linked entities (and what they were merged into)
    refs: set[str] = set()
    for e in out.ents.values():
        if e.golden.get("notice.subject"):
            refs.add(str(e.golden["notice.subject"]))    # what a notice is about (see _news)
        for name, value in e.golden.items():
            if value is not None and schema.is_field(name) and schema.has_refs(name):
                refs.update(str(r) for r in schema.refs_of(name, value))
    for _ in range(4):                                # merged chains are short
        _load_entities(conn, refs, out)
        nxt = {e.merged_into for e in out.ents.values() if e.merged_into and e.merged_into not in out.ents}
        if not nxt:
            break
        refs = nxt  # type: ignore[assignment]
    all_ids = set(out.ents)
    _load_bindings(conn, all_ids, out)
    for chunk in _chunks(sorted(eids)):
        for eid, system, fields in conn.execute(select(t.shadows.c.entity_id, t.shadows.c.system,
                                                       t.shadows.c.fields).where(t.shadows.c.entity_id.in_(chunk))):
            out.shadows[(eid, system)] = schema.decode(fields)
        for eid, name in conn.execute(select(t.conflicts.c.entity_id, t.conflicts.c.field)
                                      .where(t.conflicts.c.status == "open", t.conflicts.c.entity_id.in_(chunk))):
            out.held.setdefault(eid, set()).add(name)
    out.open = outbox.open_writes(conn, sorted(all_ids))
    out.dead = outbox.dead_writes(conn, sorted(all_ids - eids))
    return out


def build(conn: Connection, mapper: Mapper, rows: Sequence[dict[str, Any]], traits: Traits, *,
          now: dt.datetime, link_wait: float, natural: frozenset[str] = frozenset()) -> list[Outcome]:
    """Decide each claimed row's write against what the store holds now. `natural`: the systems
    whose ids are documents' own ids (kept as they are in keys)."""
    data = load(conn, rows)
    data.natural = natural
    streams = {s for ss in (*traits.first_read.values(), *traits.reads.values()) for s in ss}
    for system in {r["system"] for r in rows} if streams else ():
        data.read |= {(system, s) for s in streams if outbox.stream_read(conn, system, s)}
    return [_decide(mapper, row, data, traits, now=now, link_wait=link_wait) for row in rows]


def _resolve(data: _Loaded, tid: str) -> _Target | None:
    seen = 0
    target = data.ents.get(tid)
    while target is not None and target.hold == "merged" and target.merged_into and seen < 8:
        target = data.ents.get(target.merged_into)
        seen += 1
    return target


def _translator(mapper: Mapper, data: _Loaded, system: str, traits: Traits, *, wait_over: bool,
                origin: str) -> Callable[[str, Any], Any]:
    """A linked entity's id in `system`; raises _Block when the link cannot be written yet;
    returns None when it never can (the target does not take that kind of record)."""

    def fn(ttype: str, value: Any) -> Any:
        target = _resolve(data, str(value))
        if target is None:
            return None
        ext = data.binds.get((target.id, system, ttype))
        if ext is not None:
            return ext
        if target.hold in ("review", "quarantine"):
            raise _Block(target.id, "held", f"the linked {ttype} {target.id} is held for {target.hold}")
        tm = mapper.push_map(system, ttype)
        creatable = tm is not None and tm.create and plan.wants(tm, target.golden)
        if (tm is not None and traits.keys_are_ids and traits.embeds_links and tm.kind in traits.embedded_kinds
                and plan.wants(tm, target.golden)):
            # it travels inside this record and is created with it (whatever its map's `create`
            # says: the target makes it from the record it travels in) — once syncd has read it
            if target.golden:
                return _key_of(data, target.id, system)
            if wait_over:
                return None
            raise _Block(target.id, "record", f"waiting for the linked {ttype} {target.id} to be read "
                                               "from its system")
        row = data.open.get((target.id, system))
        if row is not None and row["status"] in ("pending", "sending") and traits.keys_are_ids:
            return row["external_key"] or _key_of(data, target.id, system)
        if row is not None:
            raise _Block(target.id, "create", f"waiting for {ttype} {target.id} to be created in {system}")
        if (target.id, system) in data.dead:
            raise _Block(target.id, "dead", f"the write of the linked {ttype} {target.id} to {system} "
                                             "is a dead letter (replay it)")
        if not creatable:
            return None                        # it will never be there: the link is left out
        if not target.golden:
            if wait_over:
                return None                    # its record never came: go without the link
            raise _Block(target.id, "record", f"waiting for the linked {ttype} {target.id} to be read "
                                               "from its system")
        intent = outbox.Intent(target.id, target.type, system, "create", f"link:{origin}", {})
        if traits.keys_are_ids:
            raise _Block(target.id, "create", f"planned {ttype} {target.id} for {system}", intent)
        raise _Block(target.id, "create", f"waiting for {ttype} {target.id} to be created in {system}", intent)

    return fn


def _key_of(data: _Loaded, eid: str, system: str) -> str:
    origin = data.first.get(eid)
    return natural_key(origin if origin is None or origin[0] != system else None, eid, data.natural)


def _translate(fields: dict[str, Any], fn: Callable[[str, Any], Any]
               ) -> tuple[dict[str, Any], dict[str, _Block], set[str]]:
    """(fields with links translated, field -> its block, fields whose link is left out)."""
    out: dict[str, Any] = {}
    blocks: dict[str, _Block] = {}
    omitted: set[str] = set()
    for name, value in fields.items():
        if value is None or not schema.has_refs(name):
            out[name] = value
            continue
        try:
            mapped = schema.map_refs(name, value, fn)
        except _Block as b:
            blocks[name] = b
            continue
        if schema.field_spec(name).type == "ref" and mapped is None:
            omitted.add(name)
            continue
        if schema.field_spec(name).type == "items":
            # a member link the target cannot take is dropped from that member
            mapped = tuple(schema.FrozenDict({k: v for k, v in el.items() if v is not None}) for el in mapped)
        out[name] = mapped
    return out, blocks, omitted


def _decide(mapper: Mapper, row: dict[str, Any], data: _Loaded, traits: Traits, *,
            now: dt.datetime, link_wait: float) -> Outcome:
    eid, system, etype = row["entity_id"], row["system"], row["entity_type"]
    ent = data.ents.get(eid)
    if ent is None:
        return Nothing("the record is gone")
    if ent.hold:
        return Nothing(f"the record is held ({ent.hold})")
    em = mapper.push_map(system, etype)
    if em is None:
        return Failed(PermanentError(f"no push mapping for {etype} in {system}", connector=system))
    ext = data.binds.get((eid, system, etype))
    create = ext is None
    if create and ent.golden.get("notice.on") == "created":
        news = _news(data, ent, system)
        if news is not None:
            return news
    if create and not em.create:
        return Nothing(f"{system} does not take new {em.kind} records (create = false)")
    if create and em.kind in traits.embedded_kinds:
        return Nothing(f"a new {em.kind} reaches {system} inside the first record that links to it")
    if not plan.wants(em, ent.golden):
        return Nothing(f"only_when of {system}.{em.kind} does not hold")
    if create:
        unread = [s for s in traits.first_read.get(em.kind, ()) if (system, s) not in data.read]
        if unread:
            # first contact: what people made in that system before syncd is read (and bound by its
            # keys) before syncd makes a record of its own there — never a second contact of a client
            return Blocked(unread[0], "read", f"a new {em.kind} waits until syncd has read {system}'s "
                                              f"{unread[0]} once through (a record made there before is bound, "
                                              "not made twice)")
    shadow = data.shadows.get((eid, system), {}) if not create else None
    held = data.held.get(eid, set())
    changed = plan.plan_fields(mapper, em, ent.golden, shadow, held)
    names = None if create else _names(data, eid, system, em.kind, traits)
    if not changed and names is None:
        return Nothing("the target is in step")
    # the whole record as the target should hold it (`WriteOp.full`): an update of a deal's rows sets
    # them whole, its delivery row included, even when only the goods changed
    whole = {**plan.plan_fields(mapper, em, ent.golden, None, held), **changed}   # (a cleared value too)
    wait_over = row.get("claimed_from") == "blocked" and row.get("blocked_why") == "record"
    fn = _translator(mapper, data, system, traits, wait_over=wait_over, origin=row.get("origin") or "")
    full, blocks, omitted = _translate(whole, fn)
    sent_names = set(whole) if traits.whole_records or create else set(changed)
    # a link that cannot be written yet matters only where it is sent
    blocks = {n: b for n, b in blocks.items() if n in sent_names}
    deferred: _Block | None = None
    for name, b in blocks.items():
        fm = em.fields.get(name)
        optional = fm is not None and fm.optional
        if create and not optional and name in sent_names:
            return Blocked(b.on, b.why, b.detail, b.intent)
        deferred = deferred or b
    sent_names -= set(blocks) | omitted
    if not sent_names and names is None:
        assert deferred is not None
        return Blocked(deferred.on, deferred.why, deferred.detail, deferred.intent)
    sent = {k: ent.golden[k] for k in sent_names}
    translated = {k: full[k] for k in sent_names}
    origin = data.first.get(eid)
    if origin is not None and origin[0] == system:
        origin = None                      # (it came from this very system: nothing to name)
    key = row.get("external_key") or natural_key(origin, eid, data.natural)
    links, embedded = _links(mapper, data, system, full, whole) if traits.embeds_links else ({}, ())
    op = WriteOp(op_id=row["idempotency_key"], system=system, kind=em.kind, op="create" if create else "update",
                 entity=etype, entity_id=eid, external_id=ext,
                 fields=mapper.from_canonical(em, translated, create=create), external_key=key,
                 attempt=row["attempts"], full=mapper.from_canonical(em, full, create=create), links=links,
                 origin=origin, also_known_as=(external_key(eid),) if origin else (), names=names,
                 unsent=create and not row.get("attempts") and row.get("claimed_from") != "sending"
                 and bool(traits.reads.get(em.kind)) and all((system, s) in data.read for s in traits.reads[em.kind]))
    dfr = (deferred.on, deferred.why, deferred.detail) if deferred is not None else None
    return Ready(op, sent, dfr, embedded)


def _names(data: _Loaded, eid: str, system: str, kind: str, traits: Traits) -> tuple[str, str] | None:
    """The record syncd made from this system's record in another system, when this record can say
    so and names nothing yet (a deal by phone names its shop order); None otherwise. A record that
    names a source already — another integration's, or the one syncd told it — is never rewritten,
    and only a record people made there is told (one syncd created or found carries syncd's key)."""
    if kind not in traits.names_sources:
        return None
    came_from, made = data.first.get(eid), data.made.get(eid)
    if came_from is None or came_from[0] != system or made is None or made[0] == system:
        return None
    if data.hows.get((eid, system)) in ("created", "found", "stamp", "origin"):
        return None
    if schema.NAMED_SOURCE in data.shadows.get((eid, system), {}):
        return None
    return made


def _news(data: _Loaded, ent: _Target, system: str) -> Outcome | None:
    """A notice "a new deal": it waits until its subject is in `system`, and goes only if syncd
    created it there — a deal adopted there (the shop's own integration made it, a re-install read
    it back) is not news. None: it may go."""
    subject = _resolve(data, str(ent.golden.get("notice.subject") or ""))
    if subject is None:
        return Nothing("the record the notice is about is gone")
    if (subject.id, system) not in data.hows:
        return Blocked(subject.id, "create", f"the notice waits for {subject.type} {subject.id} to reach {system}")
    how = data.hows[(subject.id, system)]
    if how == "created":
        return None
    row = data.open.get((subject.id, system))
    if how == "stamp" and row is not None:
        # read back (by its stamp) while syncd's create of it is open (in flight, or retried after
        # an answer that never came): its confirm says whose it is
        return Blocked(subject.id, "confirm", f"the notice waits for the confirm of {subject.type} {subject.id} "
                                              f"in {system}")
    return Nothing(f"{subject.type} {subject.id} was in {system} before syncd ({how or 'bound earlier'}): "
                   "not new, no notice")


def _links(mapper: Mapper, data: _Loaded, system: str, full: dict[str, Any], whole: dict[str, Any]
           ) -> tuple[dict[str, tuple[str, dict[str, Any]]], tuple[Embedded, ...]]:
    """The records a document embeds: linked entity's id in the target -> (kind, its fields); and
    those of them the target does not have yet (created there by this write)."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    new: list[Embedded] = []
    for name, value in whole.items():
        if value is None or name not in full or schema.field_spec(name).type != "ref":
            continue
        target = _resolve(data, str(value))
        ext = full[name]
        if target is None or ext is None:
            continue
        tm = mapper.push_map(system, target.type)
        if tm is None:
            continue
        fields = plan.plan_fields(mapper, tm, target.golden, None, set())
        fields = {k: v for k, v in fields.items() if not schema.has_refs(k)}   # one level deep
        out[str(ext)] = (tm.kind, mapper.from_canonical(tm, fields, create=False))
        if (target.id, system, target.type) not in data.binds:
            new.append(Embedded(target.id, target.type, str(ext), fields))
    return out, tuple(new)


__all__ = ["Ready", "Embedded", "Nothing", "Blocked", "Failed", "Outcome", "build", "external_key"]
