"""Records linking to an entity that changed identity follow it.

When a hold is lifted (a quarantined record reads fine, a person settles a review) or a stub joins
the entity it turned out to be, the records that link to it — and the writes that waited for it —
must see that: their link is re-pointed, their rules see it as changed (a company's first order
closes its lead deal once the company is real), and they are planned again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from syncd import schema
from syncd.pipeline import outbox, plan, rules
from syncd.pipeline.batch import Batch, Setup
from syncd.store import utcnow
from syncd.store import tables as t


def relink(setup: Setup, conn: Connection, old: str, new: str, *, origin: str) -> set[str]:
    """Records linking to `old` link to `new` from now on (the same id when a hold was lifted), and
    the writes that waited for `old` look again. Returns those records.

    Entity ids are unique 32-character strings, so a text search finds every record holding one;
    a person settling a review waits for it, a pull lifting a quarantine hold is rare.
    """
    changes: dict[str, dict[str, Any]] = {}
    rows = conn.execute(select(t.entities.c.id, t.entities.c.fields).where(
        t.entities.c.fields.like(f"%{old}%"), t.entities.c.id != old, t.entities.c.hold.is_(None))).all()
    for eid, text in rows:
        fields = schema.decode(text)
        for name, value in fields.items():
            if value is not None and schema.is_field(name) and schema.has_refs(name):
                if old in (str(r) for r in schema.refs_of(name, value)):
                    changes.setdefault(eid, {})[name] = schema.map_refs(
                        name, value, lambda _t, v: new if v == old else v)
    batch = Batch(setup, conn, "review", None, None)
    ents = batch.load_entities(sorted(changes))
    if old != new:
        for eid, upd in changes.items():
            ents[eid].golden.update(upd)
            ents[eid].dirty = True
    touched = rules.run(batch, ents, set(changes), changes, set())
    batch.flush_entities(ents)
    plan.plan_batch(batch, ents, touched, origin=origin)
    outbox.unblock(conn, [old], now=utcnow())
    return touched


__all__ = ["relink"]
