"""Stage plan: which systems an entity must be brought up to date in -> outbox intents.

The planner decides *whether* a target needs a write (its shadow differs from the golden record);
*what* the write carries is decided when it is sent (`syncd.pipeline.payload`), so planning twice
is harmless and several changes coalesce into one queued write.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Collection, Mapping, Protocol, Sequence

import structlog

from sqlalchemy import select
from sqlalchemy.engine import Connection

from syncd import schema
from syncd.mapping import Mapper
from syncd.mapping.model import EntityMap
from syncd.pipeline import outbox
from syncd.pipeline.batch import Batch
from syncd.store import tables as t

log = structlog.get_logger("syncd.engine")
CHUNK = 400


def wants(em: EntityMap, golden: dict[str, Any]) -> bool:
    """`only_when` filters which entities a target receives (e.g. deals marked for 1C)."""
    return all(_eq(golden.get(k), v) for k, v in em.only_when.items())


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b)
    return str(a) == str(b) if a is not None and b is not None else a == b


def plan_fields(mapper: Mapper, em: EntityMap, golden: dict[str, Any], shadow: dict[str, Any] | None,
                held: Collection[str]) -> dict[str, Any]:
    """Fields to send: all known values on create (shadow is None), changed ones on update."""
    out = {}
    for name in mapper.pushable_fields(em):
        if name in held or name not in golden:
            continue
        if shadow is not None and em.fields[name].create_only:
            continue                      # written on create only (a deal's pipeline)
        value = golden[name]
        if shadow is None:
            if value is not None:
                out[name] = value
        elif shadow.get(name) != mapper.roundtrip(em, name, value):
            out[name] = value
    return out


class Planned(Protocol):
    """What the planner reads of an entity (the engine's in-batch record)."""

    id: str
    type: str
    golden: dict[str, Any]
    hold: str | None


def intents(conn: Connection, mapper: Mapper, ents: Mapping[str, Planned], ids: Sequence[str], *,
            origin: str, uncreated: dict[tuple[str, str], int] | None = None) -> list[outbox.Intent]:
    """The writes these entities need: one intent per target whose shadow differs. `uncreated`
    counts, per (target system, kind), records that are not there and that its map may not
    create (`create = false`): never a silent skip."""
    ids = sorted(e for e in ids if ents[e].golden and not ents[e].hold)
    if not ids:
        return []
    bound: dict[str, set[str]] = {}
    shadows: dict[tuple[str, str], dict[str, Any]] = {}
    held: dict[str, set[str]] = {}
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i:i + CHUNK]
        for eid, system in conn.execute(select(t.bindings.c.entity_id, t.bindings.c.system)
                                        .where(t.bindings.c.entity_id.in_(chunk))):
            bound.setdefault(eid, set()).add(system)
        for eid, system, fields in conn.execute(select(t.shadows.c.entity_id, t.shadows.c.system,
                                                       t.shadows.c.fields).where(t.shadows.c.entity_id.in_(chunk))):
            shadows[(eid, system)] = schema.decode(fields)
        for eid, name in conn.execute(select(t.conflicts.c.entity_id, t.conflicts.c.field)
                                      .where(t.conflicts.c.status == "open", t.conflicts.c.entity_id.in_(chunk))):
            held.setdefault(eid, set()).add(name)
    out: list[outbox.Intent] = []
    for eid in ids:
        ent = ents[eid]
        for em in mapper.targets(ent.type):
            if not wants(em, ent.golden):
                continue
            is_bound = em.system in bound.get(eid, ())
            if not is_bound and not em.create:
                if uncreated is not None:
                    uncreated[(em.system, em.kind)] = uncreated.get((em.system, em.kind), 0) + 1
                continue
            shadow = shadows.get((eid, em.system), {}) if is_bound else None
            fields = plan_fields(mapper, em, ent.golden, shadow, held.get(eid, set()))
            if fields:
                out.append(outbox.Intent(eid, ent.type, em.system, "update" if is_bound else "create", origin,
                                         fields))
    return out


def plan_entities(conn: Connection, mapper: Mapper, ents: Mapping[str, Planned], ids: Sequence[str], *,
                  origin: str, now: dt.datetime | None = None,
                  uncreated: dict[tuple[str, str], int] | None = None) -> int:
    """Queue (or bump) the writes these entities need; returns the writes planned."""
    return outbox.plan(conn, intents(conn, mapper, ents, ids, origin=origin, uncreated=uncreated), now)


def plan_batch(batch: Batch, ents: Mapping[str, Planned], touched: set[str], *, origin: str) -> int:
    """Queue (or bump) the writes the batch's touched entities need; returns the writes planned.
    A target whose map may not create the record is counted and said, never only skipped."""
    uncreated: dict[tuple[str, str], int] = {}
    n = plan_entities(batch.conn, batch.mapper, ents, sorted(touched), origin=origin, now=batch.now,
                      uncreated=uncreated)
    for (system, kind), k in sorted(uncreated.items()):
        batch.counts.uncreated += k
        log.info("not_created", target=system, kind=kind, records=k,
                 why=f"the {system} map of kind {kind} has no `create = true`")
    return n
