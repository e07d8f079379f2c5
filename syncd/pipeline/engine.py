"""The engine: pull -> canonical -> identify -> record -> resolve -> (rules) -> plan, in bulk.

One batch of records from one system is processed in one transaction together with its cursor,
so a crash loses nothing and a re-read batch changes nothing (bindings and shadows absorb it).
Every stage loads what it needs for the whole batch with a few set-based queries; that is what
keeps the engine within a small factor of plain inserts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import structlog
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from syncd import schema
from syncd.connector import Batch, RawRecord, Rejected
from syncd.errors import BadInput
from syncd.mapping import Mapper
from syncd.pipeline import identify, link, outbox, plan, record, resolve
from syncd.pipeline.canonical import to_canonical
from syncd.pipeline.counts import Counts
from syncd.schema import Ref
from syncd.store import Store, new_id, utcnow
from syncd.store import tables as t
from syncd.store.db import dialect_insert

log = structlog.get_logger("syncd.engine")
CHUNK = 400
RACE_RETRIES = 4        # a batch taken in again after losing a race on a binding (see BindingRace)


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
# an intake stage (syncd/pipeline/route_mail.py): called with the batch run, its entities, the ids
# of the entities the batch created (in batch order) and the phone region; decides with
# `apply_decided` and returns the entities it touched
IntakeHook = Callable[[Any, dict[str, Any], list[str], str], set[str]]


@dataclass
class _Ent:
    id: str
    type: str
    golden: dict[str, Any]
    versions: dict[str, list[Any]]
    new: bool = False
    dirty: bool = False
    hold: str | None = None          # review | quarantine | merged (see tables.entities)


def _chunks(seq: Sequence[Any], n: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _iso(d: dt.datetime | None) -> str | None:
    return d.isoformat() if d else None


def _fingerprint(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


class Engine:
    def __init__(self, store: Store, mapper: Mapper, *, rules: RuleHook | None = None,
                 region: str | None = None, intake: IntakeHook | None = None) -> None:
        self.store, self.mapper, self.rules, self.intake = store, mapper, rules, intake
        self.region = region or mapper.ms.region

    # -- public ---------------------------------------------------------------------------------
    def ingest(self, system: str, batch: Batch, *, run_id: str | None = None) -> Counts:
        """Process one batch and save its cursor in the same transaction; then ack the source."""
        for attempt in range(1, RACE_RETRIES + 1):
            try:
                with self.store.begin() as conn:
                    counts = self.ingest_in(conn, system, batch.records, run_id=run_id, stream=batch.stream)
                    if batch.cursor is not None:
                        self.store.set_cursor(conn, system, batch.stream, batch.cursor)
                break
            except (BindingRace, IntegrityError) as exc:
                # another transaction bound or created one of these records first: nothing of this
                # attempt was committed; the next one reads what that transaction made
                if attempt == RACE_RETRIES:
                    raise
                log.info("batch_retried", system=system, stream=batch.stream, attempt=attempt,
                         reason=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        if batch.ack is not None:
            batch.ack()   # only after the commit: a crash before this re-reads, never loses
        self._note_growth(len(batch.records))
        return counts

    def _note_growth(self, n: int) -> None:
        """Refresh PostgreSQL's planner statistics during a big import.

        A backfill can grow the tables tenfold within autovacuum's one-minute nap; on stale
        statistics the planner takes the look-ups for tiny-table scans and each batch reads the
        whole table. ANALYZE samples, so running it after every doubling stays cheap.
        """
        if not self.store.is_postgres:
            return
        self._grown = getattr(self, "_grown", 0) + n
        self._analyzed_at = getattr(self, "_analyzed_at", 0)
        if self._grown >= max(5000, self._analyzed_at):
            with self.store.engine.connect() as c:
                c = c.execution_options(isolation_level="AUTOCOMMIT")
                c.exec_driver_sql("ANALYZE entities, bindings, match_keys, shadows, outbox")
            self._analyzed_at = self._grown * 2
            log.debug("planner_statistics_refreshed", records=self._grown)

    def ingest_in(self, conn: Connection, system: str, records: Sequence[RawRecord | Rejected], *,
                  run_id: str | None = None, stream: str | None = None) -> Counts:
        return _BatchRun(self, conn, system, run_id, stream).run(records)

    def replan(self, entity_ids: Iterable[str], *, origin: str = "replan") -> int:
        """Plan writes for entities again (after a conflict or review is resolved)."""
        with self.store.begin() as conn:
            br = _BatchRun(self, conn, "", None, None)
            ents = br.load_entities(list(entity_ids))
            return br.plan(ents, set(ents), origin=origin)

    def apply_effects(self, effects: dict[str, RuleEffects], *, origin: str = "rules") -> int:
        """Apply decisions made outside a pull (timers, metrics): entity id -> effects.

        Updates and new entities are recorded with origin `rules` and planned like any change.
        An empty key ("") collects effects that only create new entities.
        """
        with self.store.begin() as conn:
            br = _BatchRun(self, conn, origin, None, None)
            ents = br.load_entities([k for k in effects if k])
            touched: set[str] = set()
            for eid, eff in effects.items():
                if eid and eid not in ents:
                    continue
                touched |= br.apply_decided(ents, eid or None, eff, origin)
            br.flush_entities(ents)
            return br.plan(ents, touched, origin=origin)

    def resolve_conflict(self, conflict_id: int, *, take: str | None = None, value: Any = None) -> str:
        """Settle a conflict by taking one system's candidate or an explicit value."""
        with self.store.begin() as conn:
            row = conn.execute(select(t.conflicts).where(t.conflicts.c.id == conflict_id)).mappings().first()
            if row is None:
                raise KeyError(f"no conflict {conflict_id}")
            if row["status"] != "open":
                raise ValueError(f"conflict {conflict_id} is already {row['status']}")
            cands = json.loads(row["candidates"])
            name = row["field"]
            if take is not None:
                chosen = [c for c in cands if c["system"] == take]
                if not chosen:
                    raise ValueError(f"conflict {conflict_id} has no candidate from {take!r} "
                                     f"(candidates: {', '.join(c['system'] for c in cands)})")
                new_value = schema.decode_value(name, chosen[-1]["value"])
                winner = take
            else:
                new_value = schema.normalize(name, value)
                winner = "review"
            br = _BatchRun(self, conn, winner, None, None)
            ents = br.load_entities([row["entity_id"]])
            ent = ents[row["entity_id"]]
            ent.golden[name] = new_value
            ent.versions[name] = [winner, br.now_iso, None]
            ent.dirty = True
            conn.execute(update(t.conflicts).where(t.conflicts.c.id == conflict_id).values(
                status="resolved", winner=winner, resolved_at=br.now))
            br._log_change(ent.id, "review", {name: new_value}, system=winner)
            br.flush_entities(ents)
            br.plan(ents, {ent.id}, origin=f"conflict:{conflict_id}")
            return ent.id

    def resolve_review(self, review_id: int, *, entity_id: str | None = None, create: bool = False) -> str:
        """Settle an identify review: the record is an existing entity, or a new one. Everything
        that links to the record (and waited for it) is planned again."""
        from syncd.pipeline import holds

        return holds.resolve_review(self, review_id, entity_id=entity_id, create=create)

    def dismiss_review(self, review_id: int) -> str:
        """Settle a review as junk: the held record is sent nowhere (a spam form post)."""
        from syncd.pipeline import holds

        return holds.dismiss_review(self, review_id)

    def release_quarantine(self, quarantine_id: int) -> str:
        """Take a quarantined record in again (after its cause was fixed); raises BadInput when it
        still cannot be processed. Records that link to it and waited are planned again."""
        from syncd.pipeline import holds

        return holds.release_quarantine(self, quarantine_id)


class _BatchRun:
    """State of one batch: what was loaded in bulk, and what will be written in bulk."""

    def __init__(self, engine: Engine, conn: Connection, system: str, run_id: str | None,
                 stream: str | None) -> None:
        self.e, self.conn, self.system, self.run_id, self.stream = engine, conn, system, run_id, stream
        self.mapper = engine.mapper
        self.ms = engine.mapper.ms
        self.now = utcnow()
        self.now_iso = self.now.isoformat()
        self.counts = Counts()
        self.bind_cache: dict[tuple[str, str], str] = {}
        self.aliases: set[tuple[str, str]] = set()        # (type, external id) of alias records
        self.new_bindings: list[dict[str, Any]] = []
        # entities that got a record of this system in this batch: writes to this system that
        # waited for the entity to exist here (a create whose answer was lost, read back) go on
        self._bound_here: set[str] = set()
        self.changelog: list[dict[str, Any]] = []
        self.forced: dict[tuple[str, str], str | None] = {}
        self._adopted: list[tuple[str, str]] = []       # (stub, entity it joined): see _join_stub

    # -- orchestration --------------------------------------------------------------------------
    def run(self, records: Sequence[RawRecord | Rejected]) -> Counts:
        parsed: list[tuple[RawRecord, str, dict[str, Any]]] = []
        bad: list[_Bad] = []
        for rec in records:
            if isinstance(rec, Rejected):
                reason = rec.reason
                if rec.line is not None and f"line {rec.line}" not in reason:
                    reason = f"line {rec.line}: {reason}"
                bad.append(_Bad(reason, rec.kind, rec.external_id, rec.raw, None))
                continue
            em = self.mapper.entity_map(self.system, rec.kind)
            if em is None or em.direction == "push":
                self.counts.skipped += 1
                continue
            if rec.deleted:
                # deletions are not propagated (a deal removed in the CRM must not delete a shop
                # order); they are logged and counted so nobody mistakes them for lost data
                self.counts.skipped += 1
                log.info("deleted_at_source_not_propagated", system=self.system, kind=rec.kind,
                         external_id=rec.external_id)
                continue
            try:
                etype, fields = to_canonical(self.mapper, self.system, rec)
            except BadInput as exc:
                bad.append(_Bad(f"{self.system} {rec.kind} {rec.external_id}: {exc}", rec.kind, rec.external_id,
                                rec.raw if rec.raw is not None else dict(rec.fields), rec))
                continue
            parsed.append((rec, etype, fields))
        held_types = {(self._entity_type(b.kind), b.external_id) for b in bad if b.external_id}
        wanted = {(et, r.external_id) for r, et, _ in parsed} | {
            (ref.entity, ref.external_id) for _, _, f in parsed for ref in _refs(f)} | {
            (et, ext) for et, ext in held_types if et}
        if not wanted and not bad:
            return self.counts
        self._new_ents: dict[str, _Ent] = {}
        if wanted:
            self._load_bindings(wanted)   # type: ignore[arg-type]
        for b in bad:                     # every one, with an id or not: nothing is dropped
            self._quarantine(b)
        if not parsed:
            self.flush_entities(self._new_ents)
            return self.counts
        resolved = self._identify(parsed)
        ents = self.load_entities([eid for eid, *_ in resolved])
        ents.update(self._new_ents)   # created in this batch (records, stubs, held records)
        self._refresh_reviews(resolved, ents)
        touched = self._record_and_resolve(resolved, ents)
        self._release_holds(resolved, ents)
        if self.e.intake is not None:
            # routing of what arrived (mail -> lead / comment): before rules, so rules see new leads
            new_ids = list(dict.fromkeys(eid for eid, *_r, created in resolved if created))
            touched |= self.e.intake(self, ents, new_ids, self.e.region)
        self._apply_rules(ents, touched)
        self.flush_entities(ents)
        self._write_shadows(self._shadow_rows, None)
        self.counts.planned += self.plan(ents, touched, origin=f"pull:{self.system}")
        if self._filled:
            # writes that waited for these records to be read look again now, not after link_wait
            outbox.unblock(self.conn, sorted(self._filled), now=self.now)
        if self._bound_here:
            # a record read here for the first time may be one syncd created and never confirmed
            # (the process died after the write): its own create settles as "in step", and the
            # writes that wait for it to exist here must not wait for a confirm that never comes
            outbox.unblock(self.conn, sorted(self._bound_here), system=self.system, now=self.now)
        if self._freed or self._adopted:
            from syncd.pipeline import holds

            for eid in self._freed:            # what linked to it and waited goes on
                holds.relink(self.e, self.conn, eid, eid, origin=f"released:{self.system}")
            for stub, into in self._adopted:   # what linked to the stub links to the entity it joined
                holds.relink(self.e, self.conn, stub, into, origin=f"joined:{self.system}")
        return self.counts

    def _entity_type(self, kind: str | None) -> str | None:
        em = self.mapper.entity_map(self.system, kind) if kind else None
        return em.entity if em is not None and em.direction != "push" else None

    # -- helpers: quarantine, review ------------------------------------------------------------
    def _quarantine(self, b: "_Bad") -> None:
        """Keep the record whole, with its reason. A record syncd did not know yet is stood for
        by a held entity, so the records that link to it wait for it instead of going without."""
        etype = self._entity_type(b.kind)
        eid = None
        if etype and b.external_id:
            eid = self.bind_cache.get((etype, b.external_id))
            if eid is None:
                eid = self._new_entity(etype, hold="quarantine")
                self._bind(etype, b.external_id, eid, how="read")
        record = _record_json(b.record) if b.record is not None else None
        self.e.store.quarantine(self.conn, system=self.system, stream=self.stream, kind=b.kind,
                                external_id=b.external_id, reason=b.reason, raw=b.raw, run_id=self.run_id,
                                record=record, entity_id=eid)
        self.counts.quarantined += 1
        log.warning("quarantined", system=self.system, kind=b.kind, external_id=b.external_id, reason=b.reason)

    def _review(self, rec: RawRecord, etype: str, reason: str, candidates: list[str], eid: str) -> None:
        payload = json.dumps({"kind": rec.kind, "fields": _plain(rec.fields), "version": rec.version},
                             ensure_ascii=False, default=str)
        self.conn.execute(insert(t.review).values(
            kind="identify", system=self.system, type=etype, external_id=rec.external_id,
            record=payload, candidates=json.dumps(candidates), reason=reason, status="open",
            created_at=self.now, entity_id=eid))
        self.counts.review += 1
        log.info("needs_review", system=self.system, type=etype, external_id=rec.external_id, reason=reason)

    def _refresh_reviews(self, resolved: list[tuple[str, RawRecord, str, dict[str, Any], bool]],
                         ents: dict[str, _Ent]) -> None:
        """A record waiting in review read again: the review keeps its newest form."""
        for eid, rec, etype, _f, created in resolved:
            if ents[eid].hold == "review" and not created:
                payload = json.dumps({"kind": rec.kind, "fields": _plain(rec.fields), "version": rec.version},
                                     ensure_ascii=False, default=str)
                self.conn.execute(update(t.review).where(
                    t.review.c.status == "open", t.review.c.system == self.system, t.review.c.type == etype,
                    t.review.c.external_id == rec.external_id).values(record=payload))

    def _release_holds(self, resolved: list[tuple[str, RawRecord, str, dict[str, Any], bool]],
                       ents: dict[str, _Ent]) -> None:
        """A quarantined record that now reads fine: its entity is no longer held, its quarantine
        entries are superseded, and the writes that waited for it look again."""
        freed = [eid for eid, *_ in resolved if ents[eid].hold == "quarantine"]
        for eid in freed:
            ents[eid].hold = None
            ents[eid].dirty = True
            self._created.add(eid)              # its first real record: rules run as for a new one
        self._freed = freed
        if not self._has_open_quarantine():
            return
        by_kind: dict[str, set[str]] = {}
        for _e, rec, *_ in resolved:
            by_kind.setdefault(rec.kind, set()).add(rec.external_id)
        for kind, exts in by_kind.items():
            for chunk in _chunks(sorted(exts)):
                self.conn.execute(update(t.quarantine).where(
                    t.quarantine.c.status == "open", t.quarantine.c.system == self.system,
                    t.quarantine.c.kind == kind, t.quarantine.c.external_id.in_(chunk)).values(status="superseded"))

    def _has_open_quarantine(self) -> bool:
        return self.conn.execute(select(t.quarantine.c.id).where(
            t.quarantine.c.status == "open", t.quarantine.c.system == self.system).limit(1)).first() is not None

    # -- identify -------------------------------------------------------------------------------
    def _load_bindings(self, wanted: set[tuple[str, str]]) -> None:
        exts = sorted({ext for _, ext in wanted})
        types = sorted({typ for typ, _ in wanted})
        for chunk in _chunks(exts):
            # system, type, external id: the whole primary key, so an index probe per id
            rows = self.conn.execute(select(t.bindings.c.type, t.bindings.c.external_id, t.bindings.c.entity_id,
                                            t.bindings.c.alias)
                                     .where(t.bindings.c.system == self.system, t.bindings.c.type.in_(types),
                                            t.bindings.c.external_id.in_(chunk)))
            for typ, ext, eid, alias in rows:
                self.bind_cache[(typ, ext)] = eid
                if alias:
                    self.aliases.add((typ, ext))

    def _bind(self, etype: str, ext: str, eid: str, *, system: str | None = None, how: str = "read",
              alias: bool = False) -> None:
        """Bind a record of this system (or, `system` given, the record of another system that
        this one names as its source — so when that record is read it joins the same entity).
        `alias`: a second record of this system for the entity (a statement, RawRecord.statement)."""
        if system is None:
            self.bind_cache[(etype, ext)] = eid
            self._bound_here.add(eid)
            if alias:
                self.aliases.add((etype, ext))
        # the source record counts as the entity's first (its key names the entity elsewhere)
        when = self.now if system is None else self.now - dt.timedelta(milliseconds=1)
        self.new_bindings.append(dict(system=system or self.system, type=etype, external_id=ext, entity_id=eid,
                                      created_at=when, how=how, alias=alias))

    def _new_entity(self, etype: str, hold: str | None = None) -> str:
        eid = new_id()
        self._new_ents[eid] = _Ent(eid, etype, {}, {}, new=True, dirty=True, hold=hold)
        return eid

    def _identify(self, parsed: list[tuple[RawRecord, str, dict[str, Any]]]
                  ) -> list[tuple[str, RawRecord, str, dict[str, Any], bool]]:
        # records syncd knew only by a link until now (a buyer named by an order read first): their
        # first read identifies them like new records (_join_stub)
        stubs = self._stubs({self.bind_cache[(etype, rec.external_id)] for rec, etype, _ in parsed
                             if (etype, rec.external_id) in self.bind_cache})
        # match keys of every record not bound yet (or bound to a stub), looked up in one go
        rec_keys: dict[int, set[str]] = {}
        for i, (rec, etype, fields) in enumerate(parsed):
            if self.bind_cache.get((etype, rec.external_id), "") in stubs or \
                    (etype, rec.external_id) not in self.bind_cache:
                rec_keys[i] = identify.keys_for(etype, fields, self.ms.identity.get(etype), self.e.region)
        index: dict[tuple[str, str], set[str]] = {}
        all_keys = sorted({k for ks in rec_keys.values() for k in ks})
        types = sorted({parsed[i][1] for i in rec_keys})
        if types and self.conn.dialect.name == "postgresql":
            # Two instances identifying the same person at once (the shop's buyer in one, the
            # manager's CRM contact in the other) would each see no match and make two entities —
            # and two contacts. Identification of a type is serialised across instances (held to
            # this transaction's end, taken in one order); READ COMMITTED lets the match-key
            # look-up below see what the other committed. SQLite has one writer anyway.
            for etype in types:
                self.conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({identify_lock(etype)})")
        for chunk in _chunks(all_keys):
            # both columns of the primary key's prefix, so this is an index probe, not a scan
            for typ, key, eid in self.conn.execute(select(t.match_keys.c.type, t.match_keys.c.key,
                                                          t.match_keys.c.entity_id)
                                                   .where(t.match_keys.c.type.in_(types),
                                                          t.match_keys.c.key.in_(chunk))):
                index.setdefault((typ, key), set()).add(eid)

        out = []
        promises: list[tuple[int, tuple[str, str]]] = []
        for i, (rec, etype, fields) in enumerate(parsed):
            created = False
            alias = False
            eid = self.bind_cache.get((etype, rec.external_id))
            if eid is not None and eid in stubs:
                eid = self._join_stub(rec, etype, eid, rec_keys.get(i, set()), index)
                stubs.discard(self.bind_cache.get((etype, rec.external_id), ""))
            if eid is None:
                forced = self.forced.get((etype, rec.external_id), False)
                rule = self.ms.identity.get(etype)
                stamped = self._stamped(rec, etype)
                origin = self._origin_of(rec)
                if forced:
                    outcome = identify.Outcome(None if forced == "new" else forced,
                                               "created" if forced == "new" else "matched")
                elif rec.hold:
                    # its connector holds it for an operator (a form in review mode)
                    outcome = identify.Outcome(None, "review", rec.hold)
                elif stamped:
                    # made from a record syncd knows (by syncd, or by the vendor's own integration
                    # before syncd): that record's entity — adopted, never a second one
                    outcome = identify.Outcome(stamped, "matched", "stamp")
                elif origin is not None and identify.origin_allows(rule, origin[0]):
                    # made from a record syncd has not read yet: a new entity that record joins
                    outcome = identify.Outcome(None, "created")
                    promises.append((i, origin))
                else:
                    cands: set[str] = set()
                    for k in rec_keys.get(i, ()):
                        cands |= index.get((etype, k), set())
                    outcome = identify.decide(self.system, rule, cands)
                    if outcome.action == "matched":
                        outcome = identify.Outcome(outcome.entity_id, "matched", _key_name(
                            rec_keys.get(i, ()), index, etype, outcome.entity_id), outcome.candidates)
                    alias = outcome.action == "matched" and rec.statement and \
                        self._bound_elsewhere(outcome.entity_id, etype)
                    if outcome.action == "matched" and not alias and self._bound_elsewhere(outcome.entity_id, etype):
                        # the match already has a record of this system: a second record is a
                        # different entity unless a human says otherwise
                        outcome = identify.Outcome(None, "review", "matched entity is already bound to "
                                                   f"another {self.system} record", [outcome.entity_id or ""])
                if outcome.action == "review":
                    # a held entity stands for the record until a person decides: it takes the
                    # record's fields, is written nowhere, and whatever links to it waits
                    eid = self._new_entity(etype, hold="review")
                    self._bind(etype, rec.external_id, eid, how="review")
                    self._review(rec, etype, outcome.reason, outcome.candidates, eid)
                    out.append((eid, rec, etype, self._resolve_refs(fields), True))
                    continue
                if outcome.action == "created":
                    eid = self._new_entity(etype)
                    created = True
                    how = "origin" if promises and promises[-1][0] == i else "read"
                else:
                    eid = outcome.entity_id
                    self.counts.bound += 1
                    how = outcome.reason if forced is False else "review"
                assert eid is not None
                self._bind(etype, rec.external_id, eid, how=how or "read", alias=alias)
                if promises and promises[-1][0] == i:
                    osys, oext = promises[-1][1]
                    self._bind(etype, oext, eid, system=osys, how="origin")
                for k in rec_keys.get(i, ()):
                    index.setdefault((etype, k), set()).add(eid)
            fields = self._resolve_refs(fields)
            out.append((eid, rec, etype, fields, created))
        if self._adopted:
            # links this batch resolved to an adopted stub lead to the entity it joined
            moved = dict(self._adopted)
            for k, (eid_, rec_, etype_, fields_, created_) in enumerate(out):
                for name, value in list(fields_.items()):
                    if value is not None and schema.has_refs(name):
                        fields_[name] = schema.map_refs(name, value, lambda _t, v: moved.get(v, v))
        self._link_senders(out)
        return out

    def _stubs(self, eids: set[str]) -> set[str]:
        """Entities known only by a link so far: no fields yet, not held, not made in this batch."""
        eids = eids - set(self._new_ents)
        out: set[str] = set()
        for chunk in _chunks(sorted(eids)):
            out.update(e for (e,) in self.conn.execute(select(t.entities.c.id).where(
                t.entities.c.id.in_(chunk), t.entities.c.fields == "{}", t.entities.c.hold.is_(None))))
        return out

    def _join_stub(self, rec: RawRecord, etype: str, stub: str, keys: set[str],
                   index: dict[tuple[str, str], set[str]]) -> str:
        """The first read of a record syncd knew only by a link: identified like a new record. When
        it is an entity syncd has (the CRM's client placing a shop order whose order was read
        before the buyer), the record joins that entity and the stub is merged into it — never a
        second contact; when several match, the stub waits for a person (review); else it is new."""
        match = self._stamped(rec, etype)
        how = "stamp"
        if match is None:
            cands: set[str] = set()
            for k in keys:
                cands |= index.get((etype, k), set())
            cands.discard(stub)
            if len(cands) > 1:
                self.conn.execute(update(t.entities).where(t.entities.c.id == stub).values(hold="review"))
                self._review(rec, etype, f"ambiguous: {len(cands)} entities share a match key", sorted(cands), stub)
                return stub
            match = next(iter(cands), None)
            how = _key_name(keys, index, etype, match) if match else "read"
        if match is None or match == stub:
            return stub
        if self._bound_elsewhere(match, etype):
            self.conn.execute(update(t.entities).where(t.entities.c.id == stub).values(hold="review"))
            self._review(rec, etype, f"matched entity is already bound to another {self.system} record",
                         [match], stub)
            return stub
        b = t.bindings.c
        self.conn.execute(update(t.bindings).where(b.system == self.system, b.type == etype,
                                                   b.external_id == rec.external_id).values(entity_id=match, how=how))
        self.conn.execute(update(t.entities).where(t.entities.c.id == stub).values(
            hold="merged", merged_into=match, updated_at=self.now))
        outbox.close_merged(self.conn, stub, match, f"its record {self.system} {rec.external_id} is {match}'s")
        self.bind_cache[(etype, rec.external_id)] = match
        self._adopted.append((stub, match))
        self.counts.bound += 1
        log.info("link_joined_known_entity", system=self.system, type=etype, external_id=rec.external_id,
                 entity_id=match, stub=stub)
        return match

    def _link_senders(self, out: list[tuple[str, RawRecord, str, dict[str, Any], bool]]) -> None:
        """A new lead or mail whose e-mail/phone is one known person's links to that person
        (syncd/pipeline/link.py): one query for the batch, before rules run, so `keep` sees the
        client. A record that names its person already keeps it."""
        todo = [i for i, (_e, _r, etype, fields, created) in enumerate(out)
                if created and etype in link.SENDER_FIELDS and fields.get(link.SENDER_FIELDS[etype][0]) is None]
        if not todo:
            return
        found = link.link_senders(self.conn, [(out[i][2], out[i][3]) for i in todo],
                                  self.ms.identity.get("person"), self.e.region)
        for i, person_id in zip(todo, found):
            if person_id is not None:
                out[i][3][link.SENDER_FIELDS[out[i][2]][0]] = person_id

    def _origin_of(self, rec: RawRecord) -> tuple[str, str] | None:
        """The record this one was made from, in another system: as its connector decoded it
        (ORIGINATOR_ID/ORIGIN_ID), or from a key syncd stamped ("shop-1001")."""
        if rec.origin is not None:
            return rec.origin if rec.origin[0] != self.system else None
        st = rec.stamp
        if not st or st.startswith("syncd-"):
            return None
        for head in sorted(self.mapper.systems(), key=len, reverse=True):   # "crm-main" before "crm"
            if head != self.system and st.startswith(head + "-") and len(st) > len(head) + 1:
                return head, st[len(head) + 1:]
        return None

    def _stamped(self, rec: RawRecord, etype: str) -> str | None:
        """The entity a record stamped by syncd (or naming its source record) belongs to."""
        eid: str | None = None
        if rec.stamp and rec.stamp.startswith("syncd-"):
            eid = rec.stamp[len("syncd-"):]
            row = self.conn.execute(select(t.entities.c.type, t.entities.c.hold)
                                    .where(t.entities.c.id == eid)).first()
            if row is None or row.type != etype or row.hold:
                eid = None
        if eid is None:
            origin = self._origin_of(rec)
            if origin is not None:
                eid = self.conn.execute(select(t.bindings.c.entity_id).where(
                    t.bindings.c.system == origin[0], t.bindings.c.type == etype,
                    t.bindings.c.external_id == origin[1])).scalar()
                eid = eid or next((b["entity_id"] for b in self.new_bindings if (b["system"], b["type"],
                                   b["external_id"]) == (origin[0], etype, origin[1])), None)
        if eid is None or self._bound_elsewhere(eid, etype):
            return None
        return eid

    def _bound_elsewhere(self, eid: str | None, etype: str) -> bool:
        if eid is None:
            return False
        if any(b["entity_id"] == eid for b in self.new_bindings):
            return True
        return self.conn.execute(select(t.bindings.c.external_id).where(
            t.bindings.c.system == self.system, t.bindings.c.type == etype,
            t.bindings.c.entity_id == eid)).first() is not None

    def _resolve_refs(self, fields: dict[str, Any]) -> dict[str, Any]:
        out = dict(fields)
        for name, value in fields.items():
            if value is None or not schema.has_refs(name):
                continue

            def fn(target: str, ref: Any) -> Any:
                if not isinstance(ref, Ref):
                    return ref
                eid = self.bind_cache.get((target, ref.external_id))
                if eid is None and identify.origin_allows(self.ms.identity.get(target), self.system):
                    eid = self._new_entity(target)   # a stub, filled when its own record arrives
                    self._bind(target, ref.external_id, eid, how="link")
                return eid

            mapped = schema.map_refs(name, value, fn)
            if mapped is None:
                # an unknown link the system may not introduce: leave the field out of this change
                # rather than clearing what the golden record knows
                del out[name]
            else:
                out[name] = mapped
        return out

    # -- entities -------------------------------------------------------------------------------
    def load_entities(self, ids: list[str]) -> dict[str, _Ent]:
        out: dict[str, _Ent] = {}
        wanted = sorted(set(ids) - set(getattr(self, "_new_ents", {})))
        for chunk in _chunks(wanted):
            for row in self.conn.execute(select(t.entities.c.id, t.entities.c.type, t.entities.c.fields,
                                                t.entities.c.versions, t.entities.c.hold)
                                         .where(t.entities.c.id.in_(chunk))):
                out[row.id] = _Ent(row.id, row.type, schema.decode(row.fields), json.loads(row.versions),
                                   hold=row.hold)
        return out

    def flush_entities(self, ents: dict[str, _Ent]) -> None:
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
            _insert_bindings(self.conn, self.new_bindings)
            self.new_bindings = []
        if self.changelog:
            self.conn.execute(insert(t.changelog), self.changelog)
            self.changelog = []
        # match keys follow the golden record (a held entity has none: nothing may match it)
        dirty = [e for e in ents.values() if e.dirty and not e.hold and self.ms.identity.get(e.type)]
        if dirty:
            old_ids = [e.id for e in dirty if not e.new]
            for chunk in _chunks(old_ids):
                self.conn.execute(delete(t.match_keys).where(t.match_keys.c.entity_id.in_(chunk)))
            rows = [dict(type=e.type, key=k, entity_id=e.id) for e in dirty
                    for k in identify.keys_for(e.type, e.golden, self.ms.identity.get(e.type), self.e.region)]
            if rows:
                self.conn.execute(insert(t.match_keys), rows)
        for e in ents.values():
            e.new = e.dirty = False

    # -- record + resolve -----------------------------------------------------------------------
    def _record_and_resolve(self, resolved: list[tuple[str, RawRecord, str, dict[str, Any], bool]],
                            ents: dict[str, _Ent]) -> set[str]:
        ids = sorted({r[0] for r in resolved})
        keys = self._shadow_keys(resolved)
        shadows = self._load_shadows(ids, sorted(set(keys.values()) | {self.system}))
        in_db = set(shadows)
        held = self._open_conflicts(ids)
        in_flight = self._writes_in_flight(ids)
        touched: set[str] = set()
        shadow_rows: dict[str, dict[str, Any]] = {}
        self._changed: dict[str, dict[str, Any]] = {}
        self._created: set[str] = set()
        self._filled: set[str] = set()          # known by a link until now: what waited for it goes
        for eid, rec, etype, fields, created in resolved:
            ent = ents[eid]
            skey = keys.get((eid, rec.external_id), self.system)
            sh = shadows.get((eid, skey))
            sh_fields = sh["fields"] if sh else {}
            if sh and resolve.is_stale(rec.version, sh["source_version"]):
                self.counts.skipped += 1
                log.info("stale_change_dropped", system=self.system, entity_id=eid,
                         version=rec.version, applied=sh["source_version"])
                continue
            fields = self._without_derived(rec, fields, ent, sh_fields)
            changes = record.diff(sh_fields, fields)
            new_shadow = dict(sh_fields, **fields)
            if rec.origin is not None:       # the record it names (WriteOp.names): never told it twice
                new_shadow[schema.NAMED_SOURCE] = schema.named_source(*rec.origin)
            shadow_rows[(eid, skey)] = dict(fields=new_shadow, source_version=rec.version or (sh or {}).get(
                "source_version"), existed=(eid, skey) in in_db)
            # a later record of the same entity in this batch (1C's order, then its payment) diffs
            # against what this one left, not against the shadow the batch started from
            shadows[(eid, skey)] = {"fields": new_shadow,
                                    "source_version": shadow_rows[(eid, skey)]["source_version"]}
            if created or not ent.golden:
                # a new record, or the first record of an entity known until now only by a link
                self._created.add(eid)
                touched.add(eid)
                if not created:
                    self._filled.add(eid)
            if not changes:
                # read again unchanged (an overlap window, our own write read back): nothing new
                # to plan; what it needed was planned when it changed
                if not created:
                    self.counts.skipped += 1
                continue
            touched.add(eid)
            self.changelog.append(dict(entity_id=eid, system=self.system, origin="pull",
                                       fields=schema.encode(changes), source_version=rec.version,
                                       source_time=rec.source_time, observed_at=self.now, run_id=self.run_id))
            # a record syncd is writing to right now may be read half-written (a company before its
            # requisites): what it lacks then says nothing
            complete = not rec.partial and eid not in in_flight
            # first contact: a record that existed before syncd bound it here (adopted by its key,
            # matched by e-mail or ИНН, a re-install) — there is no shadow, so nothing it holds is a
            # change to take; it is merged (see _resolve_fields)
            # A statement (a form visitor: every post a new record naming the same person) is first
            # contact each time: it fills what syncd lacks and never rewrites what it holds
            first = sh is None and not created and bool(ent.golden) and (skey == self.system or rec.statement)
            applied = self._resolve_fields(ent, changes, sh_fields, rec, held.get(eid, {}), complete=complete,
                                           first=first)
            if applied:
                self._changed.setdefault(eid, {}).update(applied)
                ent.dirty = True
            if ent.hold:
                continue             # counted as review / quarantine already
            if created:
                self.counts.created += 1
            elif applied:
                self.counts.updated += 1
            else:
                self.counts.skipped += 1
        self._shadow_rows = shadow_rows     # written after the entities they refer to
        return touched

    def _resolve_fields(self, ent: _Ent, changes: dict[str, Any], sh_fields: dict[str, Any],
                        rec: RawRecord, held: dict[str, int], *, complete: bool = True,
                        first: bool = False) -> dict[str, Any]:
        """Apply a record's changes to the golden record under the conflict policies.

        `first`: first contact with a record others made. Its values are not edits: an empty value
        or list never replaces a non-empty one, an empty one syncd holds is filled, and two
        different non-empty values go by the field's `owner`/`priority`/`review` policy — under
        `newest` the value syncd holds stays (it came from the record's origin, the system that had
        it first; a record's creation by another integration says nothing of when a field changed).
        A document's lines (schema.DOCUMENT_LINES) are taken whole, never merged member by member
        (a partial copy would add its rows); other lists (phones, e-mails, accounts) are merged.
        """
        applied: dict[str, Any] = {}
        em = self.mapper.entity_map(self.system, rec.kind)
        for name, value in changes.items():
            current = ent.golden.get(name)
            fm = em.fields.get(name) if em else None
            if first and _blank(value) and not _blank(current):
                continue          # what the other side lacks is filled from syncd's record, not wiped
            if rec.statement and not _blank(current) and not schema.is_list(name):
                continue          # a visitor's words fill blanks; what syncd holds stays (lists merge)
            if (current is not None and value is not None and schema.is_list(name)
                    and not (first and name in schema.DOCUMENT_LINES)
                    and not (complete and fm is not None and fm.list == "replace")):
                # absence is not deletion: a member this system lacks stays, unless it owns the list
                value = schema.merge_lists(name, current, value)
            if name in held:      # under review: keep the field, add this candidate
                self._add_candidate(held[name], value, rec.source_time)
                continue
            if current == value:
                continue
            cur_ver = ent.versions.get(name) or [None, None, None]
            cur_system = cur_ver[0]
            rule = resolve.rule_for(self.ms.conflicts, name)
            if fm is not None and fm.read_only and current is not None:
                rule = type(rule)(policy="owner", owner=cur_system)
            in_step = (name not in ent.golden or current is None or (name in sh_fields and sh_fields[name] == current)
                       or (first and _blank(current)))     # first contact: a blank is filled, never kept
            owner_holds = (rule.policy == "owner" and rule.owner != self.system
                           and self._owner_value(ent.id, rule.owner, name) is not None)
            if owner_holds:
                # the owner has a value for its field: another system's edit never replaces it
                cur = resolve.Candidate(rule.owner or "?", current, _parse_time(cur_ver[1]))
                inc = resolve.Candidate(self.system, value, rec.source_time)
                self._record_conflict(ent, name, "owner", [cur, inc], rule.owner)
                self.counts.conflicts += 1
                winner: str | None = rule.owner
            elif in_step:
                winner = self.system
            elif first and rule.policy == "newest" and not (schema.is_list(name)
                                                            and name not in schema.DOCUMENT_LINES):
                # (a merged list holds both sides' members: it is taken as it is)
                cur = resolve.Candidate(cur_system or "?", current, _parse_time(cur_ver[1]))
                inc = resolve.Candidate(self.system, value, rec.source_time)
                winner = cur_system
                self._record_conflict(ent, name, "first contact", [cur, inc], winner or "?")
                self.counts.conflicts += 1
            else:
                cur = resolve.Candidate(cur_system or "?", current, _parse_time(cur_ver[1]))
                inc = resolve.Candidate(self.system, value, rec.source_time)
                decision = resolve.decide(rule, cur, inc)
                winner = decision.winner
                self._record_conflict(ent, name, rule.policy, [cur, inc], decision.winner)
                self.counts.conflicts += 1
            if winner == self.system:
                ent.golden[name] = value
                ent.versions[name] = [self.system, _iso(rec.source_time) or self.now_iso, self.run_id]
                applied[name] = value
        return applied

    def _without_derived(self, rec: RawRecord, fields: dict[str, Any], ent: _Ent,
                         sh_fields: dict[str, Any]) -> dict[str, Any]:
        """Values the system derives from other fields (its sum from its rows) count where the
        record has none yet, and when what they derive from changed in this record (a manager's
        row edit: the new sum is that edit's); otherwise they are neither an edit nor what the system
        holds — a portal recomputing a deal's sum never overrides the order's total, nor makes syncd
        write it again and again."""
        em = self.mapper.entity_map(self.system, rec.kind)
        if em is None:
            return fields

        def sources_changed(name: str) -> bool:
            return any(src in fields and fields[src] != sh_fields.get(src)
                       for src in schema.DERIVED_FROM.get(name, ()))

        drop = [n for n in fields if (fm := em.fields.get(n)) is not None and fm.derived
                and ent.golden.get(n) is not None and not sources_changed(n)]
        return {k: v for k, v in fields.items() if k not in drop} if drop else fields

    def _writes_in_flight(self, ids: list[str]) -> set[str]:
        """Entities whose record in this system syncd is writing, or failed to write whole: being
        sent now, waiting to be tried again, or a dead letter. Read there, such a record may be
        half-written (a company before its requisites), so what it lacks says nothing."""
        out: set[str] = set()
        for chunk in _chunks(ids):
            out.update(e for (e,) in self.conn.execute(select(t.outbox.c.entity_id).where(
                t.outbox.c.status.in_(("pending", "sending", "dead")), t.outbox.c.system == self.system,
                t.outbox.c.entity_id.in_(chunk))))
        return out

    def _owner_value(self, eid: str, owner: str | None, name: str) -> Any:
        if owner is None:
            return None
        raw = self.conn.execute(select(t.shadows.c.fields).where(t.shadows.c.entity_id == eid,
                                                                t.shadows.c.system == owner)).scalar()
        return schema.decode(raw).get(name) if raw else None

    def _record_conflict(self, ent: _Ent, name: str, policy: str, cands: list[resolve.Candidate],
                         winner: str | None) -> None:
        payload = json.dumps([{"system": c.system, "value": schema.encode_value(name, c.value),
                               "source_time": _iso(c.source_time)} for c in cands], ensure_ascii=False)
        res = self.conn.execute(insert(t.conflicts).values(
            entity_id=ent.id, field=name, policy=policy, candidates=payload,
            status="open" if winner is None else "auto", winner=winner, created_at=self.now,
            resolved_at=None if winner is None else self.now))
        log.info("conflict", entity_id=ent.id, field=name, policy=policy, winner=winner)
        if winner is None:
            self._held_new.setdefault(ent.id, {})[name] = res.inserted_primary_key[0]

    def _add_candidate(self, conflict_id: int, value: Any, source_time: dt.datetime | None) -> None:
        row = self.conn.execute(select(t.conflicts.c.candidates, t.conflicts.c.field)
                                .where(t.conflicts.c.id == conflict_id)).first()
        if row is None:
            return
        cands = json.loads(row.candidates)
        cands = [c for c in cands if c["system"] != self.system] + [
            {"system": self.system, "value": schema.encode_value(row.field, value), "source_time": _iso(source_time)}]
        self.conn.execute(update(t.conflicts).where(t.conflicts.c.id == conflict_id)
                          .values(candidates=json.dumps(cands, ensure_ascii=False)))

    def _open_conflicts(self, ids: list[str]) -> dict[str, dict[str, int]]:
        self._held_new: dict[str, dict[str, int]] = {}
        out: dict[str, dict[str, int]] = {}
        for chunk in _chunks(ids):
            for cid, eid, name in self.conn.execute(select(t.conflicts.c.id, t.conflicts.c.entity_id,
                                                           t.conflicts.c.field)
                                                    .where(t.conflicts.c.status == "open",
                                                           t.conflicts.c.entity_id.in_(chunk))):
                out.setdefault(eid, {})[name] = cid
        return out

    # -- shadows --------------------------------------------------------------------------------
    def _shadow_keys(self, resolved: list[tuple[str, RawRecord, str, dict[str, Any], bool]]
                     ) -> dict[tuple[str, str], str]:
        """The shadow each record diffs against: its system's, or — for a second record of one
        entity in one system (an alias a person settled in review) — one of its own, so the two
        records never pass for each other (writes go to the first record only)."""
        return {(eid, rec.external_id): alias_shadow(self.system, rec.external_id)
                for eid, rec, etype, *_ in resolved if (etype, rec.external_id) in self.aliases}

    def _load_shadows(self, ids: list[str], systems: list[str] | None) -> dict[tuple[str, str], dict[str, Any]]:
        out = {}
        for chunk in _chunks(ids):
            q = select(t.shadows.c.entity_id, t.shadows.c.system, t.shadows.c.fields,
                       t.shadows.c.source_version).where(t.shadows.c.entity_id.in_(chunk))
            if systems is not None:
                q = q.where(t.shadows.c.system.in_(systems))
            for eid, system, fields, sv in self.conn.execute(q):
                out[(eid, system)] = {"fields": schema.decode(fields), "source_version": sv}
        return out

    def _write_shadows(self, rows: dict[tuple[str, str], dict[str, Any]], _old: Any) -> None:
        ins, upd = [], []
        for (eid, system), r in rows.items():
            text = schema.encode(r["fields"])
            row = dict(fields=text, fingerprint=_fingerprint(text), source_version=r["source_version"],
                       updated_at=self.now)
            if r["existed"]:
                upd.append(dict(row, b_eid=eid, b_sys=system))
            else:
                ins.append(dict(row, entity_id=eid, system=system))
        if ins:
            # a push confirm may have made it meanwhile (a record syncd created, read back here):
            # what was read now is what the system holds
            stmt = dialect_insert(self.conn, t.shadows)
            self.conn.execute(stmt.on_conflict_do_update(
                index_elements=[t.shadows.c.entity_id, t.shadows.c.system],
                set_={"fields": stmt.excluded.fields, "fingerprint": stmt.excluded.fingerprint,
                      "source_version": stmt.excluded.source_version, "updated_at": stmt.excluded.updated_at}),
                ins)
        if upd:
            self.conn.execute(update(t.shadows).where(t.shadows.c.entity_id == bindparam("b_eid"),
                                                      t.shadows.c.system == bindparam("b_sys"))
                              .values(fields=bindparam("fields"), fingerprint=bindparam("fingerprint"),
                                      source_version=bindparam("source_version"),
                                      updated_at=bindparam("updated_at")), upd)

    # -- rules ----------------------------------------------------------------------------------
    def _apply_rules(self, ents: dict[str, _Ent], touched: set[str]) -> None:
        hook = self.e.rules
        if hook is None:
            return
        for eid in sorted(touched):
            ent = ents[eid]
            if ent.hold:
                continue                 # not a record yet: rules wait until it is
            changed = self._changed.get(eid, {})
            if not changed and eid not in self._created:
                continue
            effects = hook(RuleInput(ent.type, eid, dict(ent.golden), changed, self.system,
                                     eid in self._created, self.conn))
            if not effects:
                continue
            touched |= self.apply_decided(ents, eid, effects, "rules")

    def apply_decided(self, ents: dict[str, _Ent], eid: str | None, effects: RuleEffects,
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
                self._log_change(eid, origin, upd)
        for etype, fields, *given in effects.creates:
            neid = given[0] if given else new_id()     # a stage that links to it names it first
            golden = {k: schema.normalize(k, v) for k, v in fields.items()}
            ents[neid] = _Ent(neid, etype, golden, {k: [origin, self.now_iso, self.run_id] for k in golden},
                              new=True, dirty=True)
            self._log_change(neid, origin, golden)
            touched.add(neid)
        return touched

    def _log_change(self, eid: str, origin: str, fields: dict[str, Any], *, system: str | None = None) -> None:
        self.changelog.append(dict(entity_id=eid, system=system or origin, origin=origin,
                                   fields=schema.encode(fields),
                                   source_version=None, source_time=None, observed_at=self.now,
                                   run_id=self.run_id))

    # -- plan -----------------------------------------------------------------------------------
    def plan(self, ents: dict[str, _Ent], touched: set[str], *, origin: str) -> int:
        """Queue (or bump) the writes the touched entities need."""
        uncreated: dict[tuple[str, str], int] = {}
        n = plan.plan_entities(self.conn, self.mapper, ents, sorted(touched), origin=origin, now=self.now,
                               uncreated=uncreated)
        for (system, kind), k in sorted(uncreated.items()):
            # counted and said, never only skipped: a map without `create = true` makes nothing
            self.counts.uncreated += k
            log.info("not_created", target=system, kind=kind, records=k,
                     why=f"the {system} map of kind {kind} has no `create = true`")
        return n


def identify_lock(etype: str) -> int:
    """The PostgreSQL advisory lock key that serialises identification of one entity type."""
    return IDENTIFY_LOCK_BASE + zlib.crc32(etype.encode()) % 1_000_000


IDENTIFY_LOCK_BASE = 0x73796E6364 + 1_000        # beside db.MIGRATION_LOCK ("syncd")


class BindingRace(Exception):
    """A record this batch bound was bound to another entity by a concurrent transaction (a push
    confirm of the record syncd created, read back here before that confirm committed): the batch
    is taken in again from the start, and then sees the binding."""


def _insert_bindings(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert bindings; one a concurrent transaction made for the same entity is fine, one it made
    for another entity means this batch decided on stale reads (BindingRace)."""
    b = t.bindings.c
    stmt = dialect_insert(conn, t.bindings).on_conflict_do_nothing(
        index_elements=[b.system, b.type, b.external_id]).returning(b.system, b.type, b.external_id)
    for chunk in _chunks(rows):
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


@dataclass(frozen=True)
class _Bad:
    """A record that goes to quarantine: why, what it is, and all of it."""

    reason: str
    kind: str | None
    external_id: str | None
    raw: Any
    record: RawRecord | None


def _record_json(rec: RawRecord) -> str:
    """A decoded record as JSON, to take it in again when its quarantine is released."""
    return json.dumps({"kind": rec.kind, "external_id": rec.external_id, "fields": _plain(rec.fields),
                       "version": rec.version, "source_time": _iso(rec.source_time), "stamp": rec.stamp},
                      ensure_ascii=False, default=str)


def record_from_json(text: str) -> RawRecord:
    d = json.loads(text)
    return RawRecord(d["kind"], d["external_id"], d["fields"], version=d.get("version"),
                     source_time=_parse_time(d.get("source_time")), stamp=d.get("stamp"))


def alias_shadow(system: str, external_id: str) -> str:
    """The shadow key of a second record of one entity in one system (never a write target)."""
    return f"{system}@{external_id}"[:64]


def _refs(fields: dict[str, Any]) -> list[Ref]:
    out = []
    for name, value in fields.items():
        if value is not None and schema.has_refs(name):
            out.extend(r for r in schema.refs_of(name, value) if isinstance(r, Ref))
    return out


def _key_name(keys: Any, index: dict[tuple[str, str], set[str]], etype: str, eid: str | None) -> str:
    """How a match was made: "key:<name>" of the first match key the record shares with `eid`."""
    for k in sorted(keys):
        if eid in index.get((etype, k), ()):
            return "key:" + k.split(":", 1)[0]
    return "key"


def _blank(v: Any) -> bool:
    """No value: None, an empty text or list (zero is a value)."""
    return v is None or v == "" or (isinstance(v, (list, tuple, dict, set)) and not v)


def _parse_time(s: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(s) if s else None


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v
