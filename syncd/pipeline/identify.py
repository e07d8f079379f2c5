"""Stage identify: which entity each record of a batch is.

Bindings first (a record read before), then the record's stamp or the source record it names
(made by syncd, or by a vendor's integration from a record syncd knows: adopted, never a second
entity), then match keys under the type's identity rule (`syncd.pipeline.match`). A record that
cannot be told apart goes to identify review, stood for by a held entity. Links inside the records
are resolved to entity ids (an unknown one becomes a stub, filled when its own record arrives).
"""

from __future__ import annotations

import zlib
from typing import Any

import structlog
from sqlalchemy import select, update

from syncd import schema
from syncd.connector import RawRecord
from syncd.pipeline import hold, link, match, outbox
from syncd.pipeline.batch import Batch, Identified, chunks
from syncd.schema import Ref
from syncd.store import tables as t

log = structlog.get_logger("syncd.engine")


def identify(batch: Batch, parsed: tuple[tuple[RawRecord, str, dict[str, Any]], ...]) -> list[Identified]:
    """The entity of every parsed record, in batch order (new bindings and entities are in `batch`)."""
    ms, region = batch.ms, batch.region
    # records syncd knew only by a link until now (a buyer named by an order read first): their
    # first read identifies them like new records (join_stub)
    stubs = _stubs(batch, {batch.bind_cache[(etype, rec.external_id)] for rec, etype, _ in parsed
                           if (etype, rec.external_id) in batch.bind_cache})
    # match keys of every record not bound yet (or bound to a stub), looked up in one go
    rec_keys: dict[int, set[str]] = {}
    for i, (rec, etype, fields) in enumerate(parsed):
        if batch.bind_cache.get((etype, rec.external_id), "") in stubs or \
                (etype, rec.external_id) not in batch.bind_cache:
            rec_keys[i] = match.keys_for(etype, fields, ms.identity.get(etype), region)
    index: dict[tuple[str, str], set[str]] = {}
    all_keys = sorted({k for ks in rec_keys.values() for k in ks})
    types = sorted({parsed[i][1] for i in rec_keys})
    if types and batch.conn.dialect.name == "postgresql":
        # Two instances identifying the same person at once (the shop's buyer in one, the
        # manager's CRM contact in the other) would each see no match and make two entities —
        # and two contacts. Identification of a type is serialised across instances (held to
        # this transaction's end, taken in one order); READ COMMITTED lets the match-key
        # look-up below see what the other committed. SQLite has one writer anyway.
        for etype in types:
            batch.conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({identify_lock(etype)})")
    for chunk in chunks(all_keys):
        # both columns of the primary key's prefix, so this is an index probe, not a scan
        for typ, key, eid in batch.conn.execute(select(t.match_keys.c.type, t.match_keys.c.key,
                                                       t.match_keys.c.entity_id)
                                                .where(t.match_keys.c.type.in_(types),
                                                       t.match_keys.c.key.in_(chunk))):
            index.setdefault((typ, key), set()).add(eid)

    out: list[Identified] = []
    promises: list[tuple[int, tuple[str, str]]] = []
    for i, (rec, etype, fields) in enumerate(parsed):
        created = False
        alias = False
        eid = batch.bind_cache.get((etype, rec.external_id))
        if eid is not None and eid in stubs:
            eid = join_stub(batch, rec, etype, eid, rec_keys.get(i, set()), index)
            stubs.discard(batch.bind_cache.get((etype, rec.external_id), ""))
        if eid is None:
            forced = batch.forced.get((etype, rec.external_id), False)
            rule = ms.identity.get(etype)
            stamped = _stamped(batch, rec, etype)
            origin = origin_of(batch, rec)
            if forced:
                outcome = match.Outcome(None if forced == "new" else forced,
                                        "created" if forced == "new" else "matched")
            elif rec.hold:
                # its connector holds it for an operator (a form in review mode)
                outcome = match.Outcome(None, "review", rec.hold)
            elif stamped:
                # made from a record syncd knows (by syncd, or by the vendor's own integration
                # before syncd): that record's entity — adopted, never a second one
                outcome = match.Outcome(stamped, "matched", "stamp")
            elif origin is not None and match.origin_allows(rule, origin[0]) and not _known(batch, origin, etype):
                # made from a record syncd has not read yet: a new entity that record joins. (A record
                # naming one that is bound already — a second deal copied with its shop order's key —
                # is not that record's: it is identified like any other, never bound to it twice)
                outcome = match.Outcome(None, "created")
                promises.append((i, origin))
            else:
                cands: set[str] = set()
                for k in rec_keys.get(i, ()):
                    cands |= index.get((etype, k), set())
                outcome = match.decide(batch.system, rule, cands)
                if outcome.action == "matched":
                    outcome = match.Outcome(outcome.entity_id, "matched", _key_name(
                        rec_keys.get(i, ()), index, etype, outcome.entity_id), outcome.candidates)
                alias = outcome.action == "matched" and rec.statement and \
                    batch.bound_elsewhere(outcome.entity_id, etype)
                if outcome.action == "matched" and not alias and batch.bound_elsewhere(outcome.entity_id, etype):
                    # the match already has a record of this system: a second record is a
                    # different entity unless a human says otherwise
                    outcome = match.Outcome(None, "review", "matched entity is already bound to "
                                            f"another {batch.system} record", [outcome.entity_id or ""])
            if outcome.action == "review":
                # a held entity stands for the record until a person decides: it takes the
                # record's fields, is written nowhere, and whatever links to it waits
                eid = batch.new_entity(etype, hold="review")
                batch.bind(etype, rec.external_id, eid, how="review")
                hold.review(batch, rec, etype, outcome.reason, outcome.candidates, eid)
                out.append(Identified(eid, rec, etype, resolve_refs(batch, fields), True))
                continue
            if outcome.action == "created":
                eid = batch.new_entity(etype)
                created = True
                how = "origin" if promises and promises[-1][0] == i else "read"
            else:
                eid = outcome.entity_id
                batch.counts.bound += 1
                how = outcome.reason if forced is False else "review"
            assert eid is not None
            batch.bind(etype, rec.external_id, eid, how=how or "read", alias=alias)
            if promises and promises[-1][0] == i:
                osys, oext = promises[-1][1]
                batch.bind(etype, oext, eid, system=osys, how="origin")
            for k in rec_keys.get(i, ()):
                index.setdefault((etype, k), set()).add(eid)
        out.append(Identified(eid, rec, etype, resolve_refs(batch, fields), created))
    if batch.adopted:
        # links this batch resolved to an adopted stub lead to the entity it joined
        moved = dict(batch.adopted)
        for item in out:
            for name, value in list(item.fields.items()):
                if value is not None and schema.has_refs(name):
                    item.fields[name] = schema.map_refs(name, value, lambda _t, v: moved.get(v, v))
    _link_senders(batch, out)
    return out


def _stubs(batch: Batch, eids: set[str]) -> set[str]:
    """Entities known only by a link so far: no fields yet, not held, not made in this batch."""
    eids = eids - set(batch.new_ents)
    out: set[str] = set()
    for chunk in chunks(sorted(eids)):
        out.update(e for (e,) in batch.conn.execute(select(t.entities.c.id).where(
            t.entities.c.id.in_(chunk), t.entities.c.fields == "{}", t.entities.c.hold.is_(None))))
    return out


def join_stub(batch: Batch, rec: RawRecord, etype: str, stub: str, keys: set[str],
              index: dict[tuple[str, str], set[str]]) -> str:
    """The first read of a record syncd knew only by a link: identified like a new record. When
    it is an entity syncd has (the CRM's client placing a shop order whose order was read
    before the buyer), the record joins that entity and the stub is merged into it — never a
    second contact; when several match, the stub waits for a person (review); else it is new."""
    found = _stamped(batch, rec, etype)
    how = "stamp"
    if found is None:
        cands: set[str] = set()
        for k in keys:
            cands |= index.get((etype, k), set())
        cands.discard(stub)
        if len(cands) > 1:
            batch.conn.execute(update(t.entities).where(t.entities.c.id == stub).values(hold="review"))
            hold.review(batch, rec, etype, f"ambiguous: {len(cands)} entities share a match key", sorted(cands),
                        stub)
            return stub
        found = next(iter(cands), None)
        how = _key_name(keys, index, etype, found) if found else "read"
    if found is None or found == stub:
        return stub
    if batch.bound_elsewhere(found, etype):
        batch.conn.execute(update(t.entities).where(t.entities.c.id == stub).values(hold="review"))
        hold.review(batch, rec, etype, f"matched entity is already bound to another {batch.system} record",
                    [found], stub)
        return stub
    b = t.bindings.c
    batch.conn.execute(update(t.bindings).where(b.system == batch.system, b.type == etype,
                                                b.external_id == rec.external_id).values(entity_id=found, how=how))
    batch.conn.execute(update(t.entities).where(t.entities.c.id == stub).values(
        hold="merged", merged_into=found, updated_at=batch.now))
    outbox.close_merged(batch.conn, stub, found, f"its record {batch.system} {rec.external_id} is {found}'s")
    batch.bind_cache[(etype, rec.external_id)] = found
    batch.adopted.append((stub, found))
    batch.counts.bound += 1
    log.info("link_joined_known_entity", system=batch.system, type=etype, external_id=rec.external_id,
             entity_id=found, stub=stub)
    return found


def _link_senders(batch: Batch, out: list[Identified]) -> None:
    """A new lead or mail whose e-mail/phone is one known person's links to that person
    (syncd/pipeline/link.py): one query for the batch, before rules run, so `keep` sees the
    client. A record that names its person already keeps it."""
    todo = [i for i, (_e, _r, etype, fields, created) in enumerate(out)
            if created and etype in link.SENDER_FIELDS and fields.get(link.SENDER_FIELDS[etype][0]) is None]
    if not todo:
        return
    found = link.link_senders(batch.conn, [(out[i].etype, out[i].fields) for i in todo],
                              batch.ms.identity.get("person"), batch.region)
    for i, person_id in zip(todo, found):
        if person_id is not None:
            out[i].fields[link.SENDER_FIELDS[out[i].etype][0]] = person_id


def origin_of(batch: Batch, rec: RawRecord) -> tuple[str, str] | None:
    """The record this one was made from, in another system: as its connector decoded it
    (ORIGINATOR_ID/ORIGIN_ID), or from a key syncd stamped ("shop-1001")."""
    if rec.origin is not None:
        return rec.origin if rec.origin[0] != batch.system else None
    st = rec.stamp
    if not st or st.startswith("syncd-"):
        return None
    for head in sorted(batch.mapper.systems(), key=len, reverse=True):   # "crm-main" before "crm"
        if head != batch.system and st.startswith(head + "-") and len(st) > len(head) + 1:
            return head, st[len(head) + 1:]
    return None


def _known(batch: Batch, origin: tuple[str, str], etype: str) -> bool:
    """Whether the record `origin` names is bound already (before or in this batch)."""
    system, ext = origin
    if any((b["system"], b["type"], b["external_id"]) == (system, etype, ext) for b in batch.new_bindings):
        return True
    return batch.conn.execute(select(t.bindings.c.entity_id).where(
        t.bindings.c.system == system, t.bindings.c.type == etype, t.bindings.c.external_id == ext)).first() is not None


def _stamped(batch: Batch, rec: RawRecord, etype: str) -> str | None:
    """The entity a record stamped by syncd (or naming its source record) belongs to."""
    eid: str | None = None
    if rec.stamp and rec.stamp.startswith("syncd-"):
        eid = rec.stamp[len("syncd-"):]
        row = batch.conn.execute(select(t.entities.c.type, t.entities.c.hold)
                                 .where(t.entities.c.id == eid)).first()
        if row is None or row.type != etype or row.hold:
            eid = None
    if eid is None:
        origin = origin_of(batch, rec)
        if origin is not None:
            eid = batch.conn.execute(select(t.bindings.c.entity_id).where(
                t.bindings.c.system == origin[0], t.bindings.c.type == etype,
                t.bindings.c.external_id == origin[1])).scalar()
            eid = eid or next((b["entity_id"] for b in batch.new_bindings if (b["system"], b["type"],
                               b["external_id"]) == (origin[0], etype, origin[1])), None)
    if eid is None or batch.bound_elsewhere(eid, etype):
        return None
    return eid


def resolve_refs(batch: Batch, fields: dict[str, Any]) -> dict[str, Any]:
    """Links to other records of this system as entity ids (an unknown one a stub, when this
    system may introduce its type; else the field is left out of this change)."""
    out = dict(fields)
    for name, value in fields.items():
        if value is None or not schema.has_refs(name):
            continue

        def fn(target: str, ref: Any) -> Any:
            if not isinstance(ref, Ref):
                return ref
            eid = batch.bind_cache.get((target, ref.external_id))
            if eid is None and match.origin_allows(batch.ms.identity.get(target), batch.system):
                eid = batch.new_entity(target)   # a stub, filled when its own record arrives
                batch.bind(target, ref.external_id, eid, how="link")
            return eid

        mapped = schema.map_refs(name, value, fn)
        if mapped is None:
            # an unknown link the system may not introduce: leave the field out of this change
            # rather than clearing what the golden record knows
            del out[name]
        else:
            out[name] = mapped
    return out


def refs(fields: dict[str, Any]) -> list[Ref]:
    """The links of a canonical record not resolved yet (as the system names them)."""
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


def identify_lock(etype: str) -> int:
    """The PostgreSQL advisory lock key that serialises identification of one entity type."""
    return IDENTIFY_LOCK_BASE + zlib.crc32(etype.encode()) % 1_000_000


IDENTIFY_LOCK_BASE = 0x73796E6364 + 1_000        # beside db.MIGRATION_LOCK ("syncd")


__all__ = ["identify", "join_stub", "origin_of", "resolve_refs", "refs", "identify_lock"]
