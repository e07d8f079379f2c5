"""Stage record: what each record changed since its system was last known (its shadow).

A record is diffed against the shadow of its system — what syncd last read there or wrote there —
so reading syncd's own write back, or the same record twice, is no change. A record older than the
version already applied is dropped. What changed goes to the change log and on to resolve; the
shadow becomes what the record holds (written for the whole batch at once, `Recorder.write`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import structlog
from sqlalchemy import bindparam, select, update

from syncd import schema
from syncd.connector import RawRecord
from syncd.pipeline import resolve
from syncd.pipeline.resolve import Change
from syncd.pipeline.batch import Batch, Ent, Identified, chunks
from syncd.store import tables as t
from syncd.store.db import dialect_insert

log = structlog.get_logger("syncd.engine")

MISSING = object()


def diff(shadow: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """Fields whose value differs from what the system was last known to hold.

    A field the system sends as empty, that it was never known to hold, is not a change.
    """
    out = {}
    for name, value in fields.items():
        old = shadow.get(name, MISSING)
        if old is MISSING:
            if value is not None:
                out[name] = value
        elif old != value:
            out[name] = value
    return out


@dataclass
class Recorded:
    """The batch's bookkeeping after the record stage."""

    touched: set[str] = field(default_factory=set)     # entities to run rules on and plan
    created: set[str] = field(default_factory=set)     # new, or first filled: rules run as for new ones
    filled: set[str] = field(default_factory=set)      # known by a link until now: writes waiting go on


class Recorder:
    """The record stage over one batch: loads the shadows and writes in flight once."""

    def __init__(self, batch: Batch, resolved: Sequence[Identified]) -> None:
        self.batch = batch
        ids = sorted({r.eid for r in resolved})
        self.keys = _shadow_keys(batch, resolved)
        self.shadows = _load_shadows(batch, ids, sorted(set(self.keys.values()) | {batch.system}))
        self.in_db = set(self.shadows)
        self.in_flight = _writes_in_flight(batch, ids)
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.out = Recorded()

    def take(self, item: Identified, ent: Ent) -> Change | None:
        """The record's change, or None when it changed nothing (or is stale)."""
        batch = self.batch
        eid, rec, _etype, fields, created = item
        skey = self.keys.get((eid, rec.external_id), batch.system)
        sh = self.shadows.get((eid, skey))
        sh_fields = sh["fields"] if sh else {}
        if sh and resolve.is_stale(rec.version, sh["source_version"]):
            batch.counts.skipped += 1
            log.info("stale_change_dropped", system=batch.system, entity_id=eid,
                     version=rec.version, applied=sh["source_version"])
            return None
        fields = _without_derived(batch, rec, fields, ent, sh_fields)
        changes = diff(sh_fields, fields)
        new_shadow = dict(sh_fields, **fields)
        if rec.origin is not None:       # the record it names (WriteOp.names): never told it twice
            new_shadow[schema.NAMED_SOURCE] = schema.named_source(*rec.origin)
        version = rec.version or (sh or {}).get("source_version")
        self.rows[(eid, skey)] = dict(fields=new_shadow, source_version=version, existed=(eid, skey) in self.in_db)
        # a later record of the same entity in this batch (1C's order, then its payment) diffs
        # against what this one left, not against the shadow the batch started from
        self.shadows[(eid, skey)] = {"fields": new_shadow, "source_version": version}
        if created or not ent.golden:
            # a new record, or the first record of an entity known until now only by a link
            self.out.created.add(eid)
            self.out.touched.add(eid)
            if not created:
                self.out.filled.add(eid)
        if not changes:
            # read again unchanged (an overlap window, our own write read back): nothing new
            # to plan; what it needed was planned when it changed
            if not created:
                batch.counts.skipped += 1
            return None
        self.out.touched.add(eid)
        batch.log_change(eid, "pull", changes, system=batch.system, rec=rec)
        # a record syncd is writing to right now may be read half-written (a company before its
        # requisites): what it lacks then says nothing
        complete = not rec.partial and eid not in self.in_flight
        # first contact: a record that existed before syncd bound it here (adopted by its key,
        # matched by e-mail or ИНН, a re-install) — there is no shadow, so nothing it holds is a
        # change to take; it is merged (see resolve.apply)
        # A statement (a form visitor: every post a new record naming the same person) is first
        # contact each time: it fills what syncd lacks and never rewrites what it holds
        first = sh is None and not created and bool(ent.golden) and (skey == batch.system or rec.statement)
        return Change(eid, rec, changes, sh_fields, first, complete, created)

    def write(self) -> None:
        """The shadows as the batch's records left them (after the entities they refer to)."""
        batch = self.batch
        ins, upd = [], []
        for (eid, system), r in self.rows.items():
            text = schema.encode(r["fields"])
            row = dict(fields=text, fingerprint=_fingerprint(text), source_version=r["source_version"],
                       updated_at=batch.now)
            if r["existed"]:
                upd.append(dict(row, b_eid=eid, b_sys=system))
            else:
                ins.append(dict(row, entity_id=eid, system=system))
        if ins:
            # a push confirm may have made it meanwhile (a record syncd created, read back here):
            # what was read now is what the system holds
            stmt = dialect_insert(batch.conn, t.shadows)
            batch.conn.execute(stmt.on_conflict_do_update(
                index_elements=[t.shadows.c.entity_id, t.shadows.c.system],
                set_={"fields": stmt.excluded.fields, "fingerprint": stmt.excluded.fingerprint,
                      "source_version": stmt.excluded.source_version, "updated_at": stmt.excluded.updated_at}),
                ins)
        if upd:
            batch.conn.execute(update(t.shadows).where(t.shadows.c.entity_id == bindparam("b_eid"),
                                                       t.shadows.c.system == bindparam("b_sys"))
                               .values(fields=bindparam("fields"), fingerprint=bindparam("fingerprint"),
                                       source_version=bindparam("source_version"),
                                       updated_at=bindparam("updated_at")), upd)


def _without_derived(batch: Batch, rec: RawRecord, fields: dict[str, Any], ent: Ent,
                     sh_fields: dict[str, Any]) -> dict[str, Any]:
    """Values the system derives from other fields (its sum from its rows) count where the
    record has none yet, and when what they derive from changed in this record (a manager's
    row edit: the new sum is that edit's); otherwise they are neither an edit nor what the system
    holds — a portal recomputing a deal's sum never overrides the order's total, nor makes syncd
    write it again and again."""
    em = batch.mapper.entity_map(batch.system, rec.kind)
    if em is None:
        return fields

    def sources_changed(name: str) -> bool:
        return any(src in fields and fields[src] != sh_fields.get(src)
                   for src in schema.DERIVED_FROM.get(name, ()))

    drop = [n for n in fields if (fm := em.fields.get(n)) is not None and fm.derived
            and ent.golden.get(n) is not None and not sources_changed(n)]
    return {k: v for k, v in fields.items() if k not in drop} if drop else fields


def _writes_in_flight(batch: Batch, ids: list[str]) -> set[str]:
    """Entities whose record in this system syncd is writing, or failed to write whole: being
    sent now, waiting to be tried again, or a dead letter. Read there, such a record may be
    half-written (a company before its requisites), so what it lacks says nothing."""
    out: set[str] = set()
    for chunk in chunks(ids):
        out.update(e for (e,) in batch.conn.execute(select(t.outbox.c.entity_id).where(
            t.outbox.c.status.in_(("pending", "sending", "dead")), t.outbox.c.system == batch.system,
            t.outbox.c.entity_id.in_(chunk))))
    return out


def _shadow_keys(batch: Batch, resolved: Sequence[Identified]) -> dict[tuple[str, str], str]:
    """The shadow each record diffs against: its system's, or — for a second record of one
    entity in one system (an alias a person settled in review) — one of its own, so the two
    records never pass for each other (writes go to the first record only)."""
    return {(eid, rec.external_id): alias_shadow(batch.system, rec.external_id)
            for eid, rec, etype, *_ in resolved if (etype, rec.external_id) in batch.aliases}


def _load_shadows(batch: Batch, ids: list[str], systems: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for chunk in chunks(ids):
        q = select(t.shadows.c.entity_id, t.shadows.c.system, t.shadows.c.fields,
                   t.shadows.c.source_version).where(t.shadows.c.entity_id.in_(chunk), t.shadows.c.system.in_(systems))
        for eid, system, fields, sv in batch.conn.execute(q):
            out[(eid, system)] = {"fields": schema.decode(fields), "source_version": sv}
    return out


def alias_shadow(system: str, external_id: str) -> str:
    """The shadow key of a second record of one entity in one system (never a write target)."""
    return f"{system}@{external_id}"[:64]


def _fingerprint(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


__all__ = ["diff", "Recorded", "Recorder", "alias_shadow"]
