"""A person settles what syncd could not decide alone: conflicts, identify reviews, quarantined
records taken in again.

A record syncd cannot take in yet is stood for by a *held* entity (`entities.hold`): an ambiguous
customer waiting in identify review, a counterparty quarantined for a bad ИНН. Records linking to
it (an order and its buyer) link to the held entity, and their writes wait (`blocked`) instead of
going without the link. Settling the hold re-plans every one of them:

- review settled as a new entity: the hold is lifted; the entity is planned like any new record,
  and the writes that waited for it follow its creation in each system;
- review settled as an existing entity: the record's bindings move to it, its fields are taken in
  as a pull from its system would (conflict policies apply), every record linking to the held
  entity is re-pointed to the existing one, and the writes that waited look again;
- quarantine released: the stored record is ingested again; if it now passes, the hold is lifted
  by that ingest, and the writes that waited look again.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, select, update

from syncd import schema
from syncd.connector import RawRecord
from syncd.errors import BadInput
from syncd.pipeline import outbox, plan, rules
from syncd.pipeline.batch import Batch
from syncd.pipeline.engine import Engine, run_batch
from syncd.pipeline.hold import record_from_json
from syncd.pipeline.relink import relink
from syncd.store import utcnow
from syncd.store import tables as t


def _open(conn: Any, table: Any, item_id: int, noun: str) -> Any:
    """The item a person settles, while it is still open (KeyError / ValueError name it otherwise)."""
    row = conn.execute(select(table).where(table.c.id == item_id)).mappings().first()
    if row is None:
        raise KeyError(f"no {noun} {item_id}")
    if row["status"] != "open":
        raise ValueError(f"{noun} {item_id} is already {row['status']}")
    return row


def resolve_conflict(engine: Engine, conflict_id: int, *, take: str | None = None, value: Any = None) -> str:
    """Settle a conflict by taking one system's candidate or an explicit value; the record is
    planned to every system again."""
    with engine.store.begin() as conn:
        row = _open(conn, t.conflicts, conflict_id, "conflict")
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
        batch = Batch(engine.setup, conn, winner, None, None)
        ents = batch.load_entities([row["entity_id"]])
        ent = ents[row["entity_id"]]
        ent.golden[name] = new_value
        ent.versions[name] = [winner, batch.now_iso, None]
        ent.dirty = True
        conn.execute(update(t.conflicts).where(t.conflicts.c.id == conflict_id).values(
            status="resolved", winner=winner, resolved_at=batch.now))
        batch.log_change(ent.id, "review", {name: new_value}, system=winner)
        batch.flush_entities(ents)
        plan.plan_batch(batch, ents, {ent.id}, origin=f"conflict:{conflict_id}")
        return ent.id


def resolve_review(engine: Engine, review_id: int, *, entity_id: str | None = None, create: bool = False) -> str:
    """Settle an identify review: the record is an existing entity, or a new one. Everything
    that links to the record (and waited for it) is planned again."""
    if not create and not entity_id:
        raise ValueError("say which entity the record is (entity_id), or create a new one")
    with engine.store.begin() as conn:
        row = _open(conn, t.review, review_id, "review item")
        held = row["entity_id"]
        rec = json.loads(row["record"])
        raw = RawRecord(kind=rec["kind"], external_id=row["external_id"], fields=rec["fields"],
                        version=rec.get("version"))
        now = utcnow()
        if entity_id is not None:
            target = conn.execute(select(t.entities.c.type, t.entities.c.hold)
                                  .where(t.entities.c.id == entity_id)).first()
            if target is None:
                raise KeyError(f"no entity {entity_id}")
            if target.type != row["type"]:
                raise ValueError(f"entity {entity_id} is a {target.type}, the record is a {row['type']}")
            if target.hold:
                raise ValueError(f"entity {entity_id} is itself held ({target.hold})")
        if held is None:
            # a review from before held entities: take the record in with the decision forced
            run_batch(engine.setup, conn, row["system"], [raw], stream="review",
                      forced={(row["type"], row["external_id"]): entity_id or "new"})
            result = conn.execute(select(t.bindings.c.entity_id).where(
                t.bindings.c.system == row["system"], t.bindings.c.type == row["type"],
                t.bindings.c.external_id == row["external_id"])).scalar()
        elif create:
            batch = Batch(engine.setup, conn, row["system"], None, "review")
            ents = batch.load_entities([held])
            ents[held].hold = None
            ents[held].dirty = True
            batch.log_change(held, "review", {}, system=row["system"])
            # a new record from now on: its rules run as for any new record (defaults, assignment)
            touched = rules.run(batch, ents, {held}, {held: dict(ents[held].golden)}, {held})
            batch.flush_entities(ents)               # match keys now that it is a record
            plan.plan_batch(batch, ents, touched, origin=f"review:{review_id}")
            relink(engine.setup, conn, held, held, origin=f"review:{review_id}")
            result = held
        else:
            assert entity_id is not None
            _merge(engine, conn, held, entity_id, row["system"], raw, review_id)
            result = entity_id
        conn.execute(update(t.review).where(t.review.c.id == review_id).values(
            status="resolved", resolved_at=now))
        return str(result)


def dismiss_review(engine: Engine, review_id: int) -> str:
    """Settle a review as junk (a spam form post): the record goes nowhere. Its held entity stays
    held — written to no system, matched by nothing — so the same record read again stays bound to
    it instead of coming back as new. Returns the held entity's id."""
    with engine.store.begin() as conn:
        row = _open(conn, t.review, review_id, "review item")
        conn.execute(update(t.review).where(t.review.c.id == review_id).values(
            status="dismissed", resolved_at=utcnow()))
        return str(row["entity_id"] or "")


def _merge(engine: Engine, conn: Any, held: str, into: str, system: str, raw: RawRecord, review_id: int) -> None:
    """The held entity is `into`: move its bindings, take its record in, re-point its links."""
    now = utcnow()
    # a system that already has a record of `into` keeps writing to that one: the held one's
    # record becomes an alias there
    have = {s for (s,) in conn.execute(select(t.bindings.c.system).where(t.bindings.c.entity_id == into))}
    for system_, in conn.execute(select(t.bindings.c.system).where(t.bindings.c.entity_id == held)).all():
        conn.execute(update(t.bindings).where(t.bindings.c.entity_id == held, t.bindings.c.system == system_)
                     .values(entity_id=into, alias=system_ in have, how="review"))
    conn.execute(delete(t.shadows).where(t.shadows.c.entity_id == held))
    conn.execute(delete(t.match_keys).where(t.match_keys.c.entity_id == held))
    conn.execute(update(t.entities).where(t.entities.c.id == held).values(
        hold="merged", merged_into=into, updated_at=now))
    # the held entity's own queued writes (none should exist) go nowhere
    outbox.close_merged(conn, held, into, f"review {review_id}")
    # the record's fields, as a pull from its system (its binding now leads to `into`)
    run_batch(engine.setup, conn, system, [raw], stream="review")
    relink(engine.setup, conn, held, into, origin=f"review:{review_id}")


def release_quarantine(engine: Engine, quarantine_id: int) -> str:
    """Ingest a quarantined record again (after its cause was fixed). Returns what happened; raises
    BadInput (nothing changed) when the record still cannot be processed. Records that link to it
    and waited are planned again."""
    with engine.store.begin() as conn:
        row = _open(conn, t.quarantine, quarantine_id, "quarantine item")
        if row["record"] is None:
            conn.execute(update(t.quarantine).where(t.quarantine.c.id == quarantine_id).values(status="released"))
            return ("released; its raw input could not be decoded into a record, so it is not taken in "
                    "again here — the next export of the source brings it again")
        rec = record_from_json(row["record"])
        nested = conn.begin_nested()
        counts = run_batch(engine.setup, conn, row["system"], [rec], run_id=row["run_id"], stream=row["stream"])
        if counts.quarantined:
            reason = conn.execute(select(t.quarantine.c.reason).where(t.quarantine.c.id > quarantine_id,
                                                                       t.quarantine.c.system == row["system"])
                                  .order_by(t.quarantine.c.id.desc()).limit(1)).scalar()
            nested.rollback()
            raise BadInput(f"still cannot be processed: {reason}", record=row["external_id"])
        nested.commit()
        conn.execute(update(t.quarantine).where(t.quarantine.c.id == quarantine_id).values(status="released"))
        return f"taken in again: {counts.created} created, {counts.updated} updated, {counts.planned} writes planned"


__all__ = ["dismiss_review", "resolve_conflict", "resolve_review", "release_quarantine"]
