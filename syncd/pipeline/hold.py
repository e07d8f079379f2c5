"""Holding records at intake: quarantine for what cannot be read, identify review for what cannot
be told apart — and lifting a quarantine hold when the record reads fine again.

A record syncd does not know yet is stood for by a *held* entity (`entities.hold`), so the records
that link to it wait for it instead of going without the link. A person settles holds with
`syncd.pipeline.settle`.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Sequence

import structlog
from sqlalchemy import insert, select, update

from syncd.connector import RawRecord
from syncd.pipeline.batch import Batch, Ent, Identified, chunks, iso
from syncd.pipeline.canonical import Bad
from syncd.store import tables as t

log = structlog.get_logger("syncd.engine")


def quarantine(batch: Batch, b: Bad) -> None:
    """Keep the record whole, with its reason. A record syncd did not know yet is stood for by a
    held entity, so the records that link to it wait for it instead of going without."""
    etype = batch.entity_type(b.kind)
    eid = None
    if etype and b.external_id:
        eid = batch.bind_cache.get((etype, b.external_id))
        if eid is None:
            eid = batch.new_entity(etype, hold="quarantine")
            batch.bind(etype, b.external_id, eid, how="read")
    record = record_json(b.record) if b.record is not None else None
    batch.store.quarantine(batch.conn, system=batch.system, stream=batch.stream, kind=b.kind,
                           external_id=b.external_id, reason=b.reason, raw=b.raw, run_id=batch.run_id,
                           record=record, entity_id=eid)
    batch.counts.quarantined += 1
    log.warning("quarantined", system=batch.system, kind=b.kind, external_id=b.external_id, reason=b.reason)


def review(batch: Batch, rec: RawRecord, etype: str, reason: str, candidates: list[str], eid: str) -> None:
    """An identify review for a person: the record, the entities it might be, and why."""
    payload = json.dumps({"kind": rec.kind, "fields": _plain(rec.fields), "version": rec.version},
                         ensure_ascii=False, default=str)
    batch.conn.execute(insert(t.review).values(
        kind="identify", system=batch.system, type=etype, external_id=rec.external_id,
        record=payload, candidates=json.dumps(candidates), reason=reason, status="open",
        created_at=batch.now, entity_id=eid))
    batch.counts.review += 1
    log.info("needs_review", system=batch.system, type=etype, external_id=rec.external_id, reason=reason)


def refresh_reviews(batch: Batch, resolved: Sequence[Identified], ents: dict[str, Ent]) -> None:
    """A record waiting in review read again: the review keeps its newest form."""
    for eid, rec, etype, _f, created in resolved:
        if ents[eid].hold == "review" and not created:
            payload = json.dumps({"kind": rec.kind, "fields": _plain(rec.fields), "version": rec.version},
                                 ensure_ascii=False, default=str)
            batch.conn.execute(update(t.review).where(
                t.review.c.status == "open", t.review.c.system == batch.system, t.review.c.type == etype,
                t.review.c.external_id == rec.external_id).values(record=payload))


def release(batch: Batch, resolved: Sequence[Identified], ents: dict[str, Ent]) -> list[str]:
    """A quarantined record that now reads fine: its entity is no longer held, its quarantine
    entries are superseded. Returns the entities freed (their writes that waited look again, and
    their rules run as for a new record)."""
    freed = [eid for eid, *_ in resolved if ents[eid].hold == "quarantine"]
    for eid in freed:
        ents[eid].hold = None
        ents[eid].dirty = True
    if not _has_open_quarantine(batch):
        return freed
    by_kind: dict[str, set[str]] = {}
    for _e, rec, *_ in resolved:
        by_kind.setdefault(rec.kind, set()).add(rec.external_id)
    for kind, exts in by_kind.items():
        for chunk in chunks(sorted(exts)):
            batch.conn.execute(update(t.quarantine).where(
                t.quarantine.c.status == "open", t.quarantine.c.system == batch.system,
                t.quarantine.c.kind == kind, t.quarantine.c.external_id.in_(chunk)).values(status="superseded"))
    return freed


def _has_open_quarantine(batch: Batch) -> bool:
    return batch.conn.execute(select(t.quarantine.c.id).where(
        t.quarantine.c.status == "open", t.quarantine.c.system == batch.system).limit(1)).first() is not None


def record_json(rec: RawRecord) -> str:
    """A decoded record as JSON, to take it in again when its quarantine is released."""
    return json.dumps({"kind": rec.kind, "external_id": rec.external_id, "fields": _plain(rec.fields),
                       "version": rec.version, "source_time": iso(rec.source_time), "stamp": rec.stamp},
                      ensure_ascii=False, default=str)


def record_from_json(text: str) -> RawRecord:
    d = json.loads(text)
    st = d.get("source_time")
    return RawRecord(d["kind"], d["external_id"], d["fields"], version=d.get("version"),
                     source_time=dt.datetime.fromisoformat(st) if st else None, stamp=d.get("stamp"))


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


__all__ = ["quarantine", "review", "refresh_reviews", "release", "record_json", "record_from_json"]
