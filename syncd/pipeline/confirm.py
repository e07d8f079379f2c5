"""Stage 9: settle a claimed write — under the claim's fence, in one transaction.

A confirmed write binds a created record, records what the target now holds in its shadow (so
reading it back is no change: no echo), logs the push, and closes the row: `done` when the target
is in step with the golden record, `pending` again when the record changed while the write was in
flight, `blocked` when a link was left out and waits for its record. A claim that is no longer
ours (it expired and another worker took it) settles nothing.
"""

from __future__ import annotations

import datetime as dt
import random
import traceback
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from syncd import schema
from syncd.connector import WriteResult
from syncd.mapping import Mapper
from syncd.pipeline import outbox, plan
from syncd.pipeline.payload import Blocked, Ready, block_until
from syncd.store import utcnow
from syncd.store import tables as t


class BindingClash(Exception):
    """The record the target returned is already bound to another entity."""


@dataclass(frozen=True)
class Backoff:
    max_attempts: int
    base_delay: float
    max_delay: float

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        d = min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1)) * random.uniform(0.5, 1.0)
        return max(d, retry_after or 0.0)


def confirmed(conn: Connection, mapper: Mapper, row: dict[str, Any], token: str, ready: Ready,
              result: WriteResult, *, link_wait: float, now: dt.datetime | None = None) -> str:
    """Apply a successful write. Returns the row's new status, or "lost" when the claim was not ours."""
    now = now or utcnow()
    fenced = outbox.fence(conn, row["id"], token)
    if fenced is None:
        return "lost"
    op = ready.op
    em = mapper.push_map(op.system, op.entity)
    assert em is not None
    ext = str(result.external_id)
    if op.op == "create":
        have = conn.execute(select(t.bindings.c.entity_id).where(
            t.bindings.c.system == op.system, t.bindings.c.type == op.entity,
            t.bindings.c.external_id == ext)).scalar()
        if have is None:
            conn.execute(insert(t.bindings).values(system=op.system, type=op.entity, external_id=ext,
                                                   entity_id=op.entity_id, created_at=now))
        elif have != op.entity_id:
            # a pull may have bound it already (it carried our stamp): the same entity is fine
            raise BindingClash(f"{op.system} {op.kind} {ext} is already bound to another entity ({have})")
    sh = conn.execute(select(t.shadows.c.fields).where(t.shadows.c.entity_id == op.entity_id,
                                                       t.shadows.c.system == op.system)).scalar()
    shadow = schema.decode(sh) if sh else {}
    # what the target will report back, so reading it is not a change (no echo)
    shadow.update({k: mapper.roundtrip(em, k, v) for k, v in ready.sent.items()})
    text = schema.encode(shadow)
    if sh is None:
        conn.execute(insert(t.shadows).values(entity_id=op.entity_id, system=op.system, fields=text,
                                              fingerprint="", source_version=result.version, updated_at=now))
    else:
        vals: dict[str, Any] = dict(fields=text, updated_at=now)
        if result.version is not None:
            vals["source_version"] = result.version
        conn.execute(update(t.shadows).where(t.shadows.c.entity_id == op.entity_id,
                                             t.shadows.c.system == op.system).values(**vals))
    conn.execute(insert(t.changelog).values(entity_id=op.entity_id, system=op.system, origin="push",
                                            fields=schema.encode(ready.sent), source_version=result.version,
                                            source_time=None, observed_at=now, run_id=None))
    common = dict(attempts=fenced["attempts"] + 1, payload=schema.encode(ready.sent), updated_at=now,
                  external_key=op.external_key if op.op == "create" else fenced["external_key"])
    if ready.deferred is not None:
        on, why, detail = ready.deferred
        status = "blocked"
        outbox.settle(conn, row["id"], status=status, blocked_on=on, blocked_why=why, last_error=detail,
                      next_attempt_at=block_until(why, now, link_wait), **common)
    elif _in_step(conn, mapper, em, op.entity_id, shadow):
        status = "done"
        outbox.settle(conn, row["id"], status=status, last_error=None, **common)
    else:
        # the record changed while the write was in flight: the row goes again, decided anew
        status = "pending"
        outbox.settle(conn, row["id"], status=status, last_error=None, next_attempt_at=now, **common)
    for e in ready.embedded:
        _bind_embedded(conn, mapper, op.system, e, now)
    if op.op == "create":
        # writes that waited for this record here look again now
        outbox.unblock(conn, [op.entity_id], system=op.system, now=now)
    return status


def _bind_embedded(conn: Connection, mapper: Mapper, system: str, e: Any, now: dt.datetime) -> None:
    """A linked record the write created inside itself: bound there, with what it was sent."""
    if conn.execute(select(t.bindings.c.entity_id).where(t.bindings.c.system == system, t.bindings.c.type == e.entity_type,
                                                          t.bindings.c.external_id == e.external_id)).first():
        return
    if conn.execute(select(t.bindings.c.external_id).where(t.bindings.c.entity_id == e.entity_id,
                                                            t.bindings.c.system == system)).first():
        return
    conn.execute(insert(t.bindings).values(system=system, type=e.entity_type, external_id=e.external_id,
                                           entity_id=e.entity_id, created_at=now))
    em = mapper.push_map(system, e.entity_type)
    fields = {k: mapper.roundtrip(em, k, v) for k, v in e.sent.items()} if em is not None else dict(e.sent)
    if conn.execute(select(t.shadows.c.entity_id).where(t.shadows.c.entity_id == e.entity_id,
                                                         t.shadows.c.system == system)).first() is None:
        conn.execute(insert(t.shadows).values(entity_id=e.entity_id, system=system, fields=schema.encode(fields),
                                              fingerprint="", source_version=None, updated_at=now))


def _in_step(conn: Connection, mapper: Mapper, em: Any, eid: str, shadow: dict[str, Any]) -> bool:
    row = conn.execute(select(t.entities.c.fields, t.entities.c.hold).where(t.entities.c.id == eid)).first()
    if row is None or row.hold:
        return True
    golden = schema.decode(row.fields)
    if not plan.wants(em, golden):
        return True
    held = {f for (f,) in conn.execute(select(t.conflicts.c.field).where(
        t.conflicts.c.entity_id == eid, t.conflicts.c.status == "open"))}
    return not plan.plan_fields(mapper, em, golden, shadow, held)


def nothing(conn: Connection, row: dict[str, Any], token: str, reason: str) -> bool:
    if outbox.fence(conn, row["id"], token) is None:
        return False
    outbox.settle(conn, row["id"], status="done", last_error=f"nothing to send: {reason}")
    return True


def blocked(conn: Connection, row: dict[str, Any], token: str, b: Blocked, *, link_wait: float,
            now: dt.datetime | None = None) -> bool:
    now = now or utcnow()
    if outbox.fence(conn, row["id"], token) is None:
        return False
    if b.plan is not None:
        outbox.plan(conn, [b.plan], now)
    outbox.settle(conn, row["id"], status="blocked", blocked_on=b.on, blocked_why=b.why, last_error=b.detail,
                  next_attempt_at=block_until(b.why, now, link_wait))
    return True


def failed(conn: Connection, row: dict[str, Any], token: str, error: BaseException, *, backoff: Backoff,
           permanent: bool, now: dt.datetime | None = None) -> str:
    """A failed attempt: dead letter when permanent or out of attempts, else pending with a delay.
    Returns the new status, or "lost"."""
    now = now or utcnow()
    fenced = outbox.fence(conn, row["id"], token)
    if fenced is None:
        return "lost"
    attempts = fenced["attempts"] + 1
    text = f"{type(error).__name__}: {error}"
    if not isinstance(error, Exception) or type(error).__module__.split(".")[0] not in ("syncd", "connectors"):
        # an exception nobody classified: keep where it came from for whoever reads the dead letter
        tb = traceback.extract_tb(error.__traceback__)[-3:] if error.__traceback__ else []
        text += "".join(f" | {f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in tb)
    if permanent or attempts >= backoff.max_attempts:
        prefix = "" if permanent else f"gave up after {attempts} attempts: "
        outbox.settle(conn, row["id"], status="dead", attempts=attempts, last_error=prefix + text)
        # the writes that wait for this record here wait for a person now: say so where they show
        conn.execute(update(t.outbox).where(t.outbox.c.status == "blocked", t.outbox.c.blocked_on == row["entity_id"],
                                            t.outbox.c.system == row["system"])
                     .values(blocked_why="dead", last_error=f"the write of the {row['entity_type']} it links to "
                                                            f"is a dead letter (row {row['id']}): replay it",
                             updated_at=now))
        return "dead"
    delay = backoff.delay(attempts, getattr(error, "retry_after", None))
    outbox.settle(conn, row["id"], status="pending", attempts=attempts, last_error=text,
                  next_attempt_at=now + dt.timedelta(seconds=delay))
    return "pending"


__all__ = ["confirmed", "nothing", "blocked", "failed", "Backoff", "BindingClash"]
