"""`syncd sync --dry-run`: what a pass would do, without doing it.

Every stream is read and taken in as a real pass would — in one transaction that is rolled back at
the end: no cursor moves, no source is acknowledged (a shop keeps its export open), nothing is
written anywhere. The report says, per system, what its records would become (new entities,
bound to ones syncd has — matched or adopted —, updated, sent to review or quarantine), and per
target system the writes the pass would plan: creates and updates with their keys and fields,
and what would wait.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select

from syncd.connector import traits
from syncd.pipeline import payload
from syncd.pipeline.counts import Counts
from syncd.store import tables as t
from syncd.store import utcnow
from syncd.store.db import WRITE
from syncd.sync import Syncer

SAMPLE = 10


def dry_run(syncer: Syncer, systems: list[str] | None = None, *, since: dt.datetime | None = None
            ) -> dict[str, Any]:
    store, engine = syncer.store, syncer.engine
    report: dict[str, Any] = {"read": {}, "writes": {}, "failures": []}
    start = utcnow() - dt.timedelta(milliseconds=10)   # bindings made by this pass are newer
    with store.engine.connect() as conn:
        conn.execution_options(**{WRITE: True})
        trans = conn.begin()
        try:
            for name in systems or list(syncer.connectors):
                conn_ = syncer.connectors[name]
                total = Counts()
                for stream in conn_.streams:
                    try:
                        cursor = None if since else store.get_cursor(name, stream, conn)
                        for batch in conn_.read(stream, cursor, since=since):
                            total.add(engine.ingest_in(conn, name, batch.records, stream=stream))
                    except Exception as exc:  # noqa: BLE001 - reported; the others go on
                        report["failures"].append({"system": name, "stream": stream,
                                                   "error": f"{type(exc).__name__}: {exc}"})
                report["read"][name] = {k: v for k, v in total.as_dict().items()
                                        if k in ("created", "bound", "updated", "skipped", "review", "quarantined",
                                                 "conflicts")}
            # how each record would come to be bound (bindings.how): by syncd's stamp, a match key
            # ("key:email"), read as new, made from another system's record… — per system
            b = t.bindings.c
            for system, how, n in conn.execute(select(b.system, b.how, func.count()).where(b.created_at >= start)
                                               .group_by(b.system, b.how)):
                if system in report["read"]:
                    report["read"][system].setdefault("bound_by", {})[how or "read"] = n
            rows = [dict(r, claimed_from="pending") for r in conn.execute(
                select(t.outbox).where(t.OPEN_WRITES).order_by(t.outbox.c.id)).mappings()]
            by_system: dict[str, list[dict[str, Any]]] = {}
            for r in rows:
                by_system.setdefault(r["system"], []).append(r)
            for system, srows in by_system.items():
                out = {"create": 0, "update": 0, "waiting": 0, "nothing": 0, "refused": 0, "by_kind": {},
                       "samples": []}
                outcomes = payload.build(conn, syncer.mapper, srows, traits(syncer.connectors.get(system)),
                                         now=utcnow(), link_wait=syncer.policy.link_wait,
                                         natural=syncer.pusher.natural)
                for row, o in zip(srows, outcomes):
                    if isinstance(o, payload.Ready):
                        out[o.op.op] += 1
                        k = out["by_kind"].setdefault(o.op.kind, {"create": 0, "update": 0})
                        k[o.op.op] += 1
                        # one of each kind first, so the report shows every kind of write
                        if len(out["samples"]) < SAMPLE and (k[o.op.op] == 1 or len(out["samples"]) < SAMPLE // 2):
                            out["samples"].append({"op": o.op.op, "kind": o.op.kind, "key": o.op.external_key,
                                                   "id": o.op.external_id, "fields": sorted(o.op.fields),
                                                   "from": list(o.op.origin) if o.op.origin else None})
                    elif isinstance(o, payload.Blocked) and o.why == "create":
                        # it waits for records this same pass would create first: it goes right after
                        em = syncer.mapper.push_map(system, row["entity_type"])
                        kind = em.kind if em is not None else row["entity_type"]
                        first = conn.execute(select(t.bindings.c.system, t.bindings.c.external_id).where(
                            t.bindings.c.entity_id == row["entity_id"]).order_by(t.bindings.c.created_at)).first()
                        op = "update" if conn.execute(select(t.bindings.c.external_id).where(
                            t.bindings.c.entity_id == row["entity_id"], t.bindings.c.system == system)).first() else "create"
                        out[op] += 1
                        k = out["by_kind"].setdefault(kind, {"create": 0, "update": 0})
                        k[op] += 1
                        if len(out["samples"]) < SAMPLE:
                            out["samples"].append({"op": op, "kind": kind, "key": None, "id": None, "fields": [],
                                                   "from": list(first) if first else None,
                                                   "after": "the records it links to"})
                    elif isinstance(o, payload.Blocked):
                        out["waiting"] += 1
                    elif isinstance(o, payload.Nothing):
                        out["nothing"] += 1
                    else:
                        out["refused"] += 1
                report["writes"][system] = out
        finally:
            trans.rollback()
    return report


__all__ = ["dry_run"]
