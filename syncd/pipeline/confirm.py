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
from typing import Any, Mapping

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from syncd import schema
from syncd.connector import WriteResult
from syncd.mapping import Mapper
from syncd.pipeline import outbox, plan
from syncd.pipeline.payload import Blocked, Ready
from syncd.store import utcnow
from syncd.store import tables as t
from syncd.store.db import dialect_insert


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
              result: WriteResult, *, link_wait: float, now: dt.datetime | None = None,
              naming: Mapping[str, frozenset[str]] | None = None) -> str:
    """Apply a successful write. Returns the row's new status, or "lost" when the claim was not ours.

    `naming`: system -> kinds whose records name the record syncd made from them elsewhere
    (Traits.names_sources); a create made from such a record has it told."""
    now = now or utcnow()
    fenced = outbox.fence(conn, row["id"], token)
    if fenced is None:
        return "lost"
    op = ready.op
    em = mapper.push_map(op.system, op.entity)
    assert em is not None
    ext = str(result.external_id)
    if op.op == "create":
        b = t.bindings.c
        # found by its key on a retry (an answer that never came, a claim taken back after a crash):
        # syncd's own earlier attempt made it; found at the first attempt: made before syncd
        retried = int(fenced.get("attempts") or 0) > 0 or row.get("claimed_from") == "sending"
        how = "found" if result.found and not retried else "created"
        made = conn.execute(dialect_insert(conn, t.bindings).on_conflict_do_nothing(
            index_elements=[b.system, b.type, b.external_id]).returning(b.entity_id),
            dict(system=op.system, type=op.entity, external_id=ext, entity_id=op.entity_id, created_at=now,
                 how=how)).first()
        if made is None:
            have = conn.execute(select(b.entity_id).where(b.system == op.system, b.type == op.entity,
                                                          b.external_id == ext)).scalar()
            if have != op.entity_id:
                # a pull may have bound it already (it carried our stamp): the same entity is fine
                raise BindingClash(f"{op.system} {op.kind} {ext} is already bound to another entity ({have})")
            if how == "created":
                # the pull read it back before this confirm: it is syncd's own record all the same
                conn.execute(update(t.bindings).where(b.system == op.system, b.type == op.entity,
                                                      b.external_id == ext).values(how="created"))
    # what the target will report back, so reading it is not a change (no echo)
    held_now = {k: mapper.roundtrip(em, k, v) for k, v in ready.sent.items()}
    if op.names is not None:
        held_now[schema.NAMED_SOURCE] = schema.named_source(*op.names)
    shadow = _merge_shadow(conn, op.entity_id, op.system, held_now, result.version, now)
    conn.execute(insert(t.changelog).values(entity_id=op.entity_id, system=op.system, origin="push",
                                            fields=schema.encode(ready.sent), source_version=result.version,
                                            source_time=None, observed_at=now, run_id=None))
    common = dict(attempts=fenced["attempts"] + 1, payload=schema.encode(ready.sent), updated_at=now,
                  external_key=op.external_key if op.op == "create" else fenced["external_key"])
    for e in ready.embedded:
        _bind_embedded(conn, mapper, op.system, e, now)
    if op.op == "create":
        # writes that waited for this record here look again now
        outbox.unblock(conn, [op.entity_id], system=op.system, now=now)
        _tell_source(conn, mapper, op, naming or {}, now)
    if ready.deferred is not None:
        on, why, detail = ready.deferred
        # a link left out: the write waits for it — unless it appeared meanwhile (another write of
        # this claim created it), which `block` sees in this transaction
        status = outbox.block(conn, fenced, on=on, why=why, detail=detail, now=now, link_wait=link_wait,
                              **common)
    elif _in_step(conn, mapper, em, op.entity_id, shadow):
        status = "done"
        outbox.done(conn, row["id"], last_error=None, **common)
    else:
        # the record changed while the write was in flight: the row goes again, decided anew
        status = "pending"
        outbox.again(conn, row["id"], at=now, last_error=None, **common)
    return status


def _tell_source(conn: Connection, mapper: Mapper, op: Any, naming: Mapping[str, frozenset[str]],
                 now: dt.datetime) -> None:
    """The record this create was made from learns its key, where it can say so (payload decides
    what it says: WriteOp.names). A deal by phone carries its shop order's key from now on."""
    if op.origin is None:
        return
    source = op.origin[0]
    sm = mapper.push_map(source, op.entity)
    if sm is None or sm.kind not in naming.get(source, frozenset()):
        return
    outbox.plan(conn, [outbox.Intent(op.entity_id, op.entity, source, "update", f"named:{op.system}", {})], now)


def _merge_shadow(conn: Connection, eid: str, system: str, sent: dict[str, Any], version: str | None,
                  now: dt.datetime) -> dict[str, Any]:
    """The target's shadow with what it was sent on top; made when missing. A pull may make the same
    shadow concurrently (it read the record syncd just created): the insert then does nothing and
    the row it made is merged into, under its row lock."""
    sh = t.shadows.c
    for _ in range(2):
        q = select(sh.fields).where(sh.entity_id == eid, sh.system == system)
        cur = conn.execute(q.with_for_update() if conn.dialect.name == "postgresql" else q).scalar()
        if cur is not None:
            shadow = dict(schema.decode(cur), **sent)
            vals: dict[str, Any] = dict(fields=schema.encode(shadow), updated_at=now)
            if version is not None:
                vals["source_version"] = version
            conn.execute(update(t.shadows).where(sh.entity_id == eid, sh.system == system).values(**vals))
            return shadow
        made = conn.execute(dialect_insert(conn, t.shadows).on_conflict_do_nothing(
            index_elements=[sh.entity_id, sh.system]).returning(sh.entity_id),
            dict(entity_id=eid, system=system, fields=schema.encode(sent), fingerprint="", source_version=version,
                 updated_at=now)).first()
        if made is not None:
            return dict(sent)
    raise AssertionError(f"shadow {eid}/{system} neither readable nor insertable")


def _bind_embedded(conn: Connection, mapper: Mapper, system: str, e: Any, now: dt.datetime) -> None:
    """A linked record the write created inside itself: bound there, with what it was sent."""
    if conn.execute(select(t.bindings.c.entity_id).where(t.bindings.c.system == system, t.bindings.c.type == e.entity_type,
                                                          t.bindings.c.external_id == e.external_id)).first():
        return
    if conn.execute(select(t.bindings.c.external_id).where(t.bindings.c.entity_id == e.entity_id,
                                                            t.bindings.c.system == system)).first():
        return
    conn.execute(dialect_insert(conn, t.bindings).on_conflict_do_nothing().values(
        system=system, type=e.entity_type, external_id=e.external_id, entity_id=e.entity_id, created_at=now,
        how="created"))
    em = mapper.push_map(system, e.entity_type)
    fields = {k: mapper.roundtrip(em, k, v) for k, v in e.sent.items()} if em is not None else dict(e.sent)
    conn.execute(dialect_insert(conn, t.shadows).on_conflict_do_nothing().values(
        entity_id=e.entity_id, system=system, fields=schema.encode(fields), fingerprint="", source_version=None,
        updated_at=now))
    outbox.unblock(conn, [e.entity_id], system=system, now=now)


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
    fenced = outbox.fence(conn, row["id"], token)
    if fenced is None:
        return False
    if fenced["op"] == "create" and (int(fenced["attempts"] or 0) > 0 or row.get("claimed_from") == "sending"):
        # a create that was sent (its answer never came, or its process died) and whose record was
        # then read back by syncd's stamp: that record is what it made — syncd's own, not adopted
        b = t.bindings.c
        conn.execute(update(t.bindings).where(b.entity_id == fenced["entity_id"], b.system == fenced["system"],
                                              b.type == fenced["entity_type"], b.how == "stamp")
                     .values(how="created"))
        outbox.unblock(conn, [fenced["entity_id"]], system=fenced["system"])   # its notice may go now
    outbox.done(conn, row["id"], last_error=f"nothing to send: {reason}")
    return True


def blocked(conn: Connection, row: dict[str, Any], token: str, b: Blocked, *, link_wait: float,
            now: dt.datetime | None = None) -> str:
    """Settle a write that cannot go yet. Returns "blocked", "pending" (what it waited for came
    meanwhile) or "lost"."""
    now = now or utcnow()
    fenced = outbox.fence(conn, row["id"], token)
    if fenced is None:
        return "lost"
    if b.plan is not None:
        outbox.plan(conn, [b.plan], now)
    return outbox.block(conn, fenced, on=b.on, why=b.why, detail=b.detail, now=now, link_wait=link_wait)


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
        outbox.dead(conn, fenced, error=prefix + text, now=now, attempts=attempts)
        return "dead"
    delay = backoff.delay(attempts, getattr(error, "retry_after", None))
    outbox.again(conn, row["id"], at=now + dt.timedelta(seconds=delay), attempts=attempts, last_error=text)
    return "pending"


__all__ = ["confirmed", "nothing", "blocked", "failed", "Backoff", "BindingClash"]
