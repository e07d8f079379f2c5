"""The outbox: writes to do, planned by entity and system, claimed under a fence.

A row says *which* entity must be brought up to date in *which* system and why; it never
freezes field values (the pusher computes them when it holds the claim, see `payload`). The
database keeps one open row per (entity, system) — a partial unique index — so planning a change
for an entity that already has a row queued bumps that row's `gen` instead of adding one: several
changes coalesce into one write by construction, and a change planned while the row is being sent
is seen at confirm time (`confirm` compares the golden record with the target's shadow again).

Claims are fenced: a claim has a random token, the claiming instance and a deadline. Only the
holder of the token may settle the row (`fence`); the holder renews the deadline while the write
is in flight (`renew`); an instance reclaims its own rows at start (`release_own`), and anyone
takes a claim whose deadline has passed.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from syncd import schema
from syncd.store import Store, new_id, utcnow
from syncd.store import tables as t

CHUNK = 400


@dataclass(frozen=True)
class Intent:
    """The planner's wish: bring `entity_id` up to date in `system` (fields as planned, for the record)."""

    entity_id: str
    entity_type: str
    system: str
    op: str                          # create | update, as seen at plan time
    origin: str                      # why: pull:<system>, rules, review, replay…
    fields: dict[str, Any]


def plan(conn: Connection, intents: Sequence[Intent], now: dt.datetime | None = None) -> int:
    """Insert a row per intent, or bump the open row of that (entity, system). Returns rows touched.

    One statement per chunk, atomic against a pusher settling the same row: on PostgreSQL the
    upsert waits for the row lock a confirm holds and then either bumps the still-open row or,
    if the confirm closed it, inserts a new one; SQLite serializes writers anyway.
    """
    if not intents:
        return 0
    now = now or utcnow()
    rows = [dict(entity_id=i.entity_id, entity_type=i.entity_type, system=i.system, op=i.op, origin=i.origin,
                 payload=schema.encode(i.fields), idempotency_key=new_id(), external_key=None, status="pending",
                 gen=0, attempts=0, next_attempt_at=now, created_at=now, updated_at=now) for i in intents]
    ins = pg_insert(t.outbox) if conn.dialect.name == "postgresql" else sqlite_insert(t.outbox)
    o = t.outbox.c
    stmt = ins.on_conflict_do_update(
        index_elements=[o.entity_id, o.system], index_where=t.UNSETTLED_WRITES,
        set_={"gen": o.gen + 1, "payload": ins.excluded.payload, "origin": ins.excluded.origin,
              "updated_at": ins.excluded.updated_at,
              # a new change may have removed what the write waited for: look again now
              "status": _case_blocked_to("pending", o.status),
              "next_attempt_at": _case_blocked_to(ins.excluded.next_attempt_at, o.next_attempt_at),
              "blocked_on": _case_blocked_to(None, o.blocked_on),
              "blocked_why": _case_blocked_to(None, o.blocked_why)})
    for i in range(0, len(rows), CHUNK):
        conn.execute(stmt, rows[i:i + CHUNK])
    return len(rows)


def _case_blocked_to(value: Any, otherwise: Any) -> Any:
    from sqlalchemy import case, literal, null

    v = null() if value is None else (literal(value) if isinstance(value, str) else value)
    return case((t.outbox.c.status == "blocked", v), else_=otherwise)


# -- claims ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    token: str
    instance: str
    rows: list[dict[str, Any]]


def claim(store: Store, system: str, *, instance: str, ttl: float, limit: int = 50,
          now: dt.datetime | None = None) -> Claim:
    """Take up to `limit` ready rows of `system`: pending and due, claims past their deadline, and
    blocked rows whose wait for a linked record's first appearance is over."""
    now = now or utcnow()
    o = t.outbox.c
    ready = and_(o.system == system, or_(
        and_(o.status == "pending", o.next_attempt_at <= now),
        and_(o.status == "sending", o.claim_until < now),
        and_(o.status == "blocked", o.blocked_why == "record", o.next_attempt_at <= now)))
    token = secrets.token_hex(16)
    with store.begin() as conn:
        q = select(o.id).where(ready).order_by(o.id).limit(limit)
        if store.is_postgres:
            q = q.with_for_update(skip_locked=True, of=t.outbox)
        ids = [r[0] for r in conn.execute(q)]
        if not ids:
            return Claim(token, instance, [])
        rows = [dict(r) for r in conn.execute(select(t.outbox).where(o.id.in_(ids)).order_by(o.id)).mappings()]
        conn.execute(update(t.outbox).where(o.id.in_(ids)).values(
            status="sending", claim_token=token, claimed_by=instance, claimed_at=now,
            claim_until=now + dt.timedelta(seconds=ttl), updated_at=now))
    for r in rows:
        r["claimed_from"] = r["status"]          # pending | sending (expired) | blocked (wait over)
        r["status"], r["claim_token"] = "sending", token
    return Claim(token, instance, rows)


def renew(store: Store, tokens: Iterable[str], ttl: float) -> int:
    """Push the deadline of claims still held; returns the rows renewed."""
    tokens = sorted(set(tokens))
    if not tokens:
        return 0
    now = utcnow()
    with store.begin() as conn:
        return conn.execute(update(t.outbox).where(t.outbox.c.claim_token.in_(tokens),
                                                   t.outbox.c.status == "sending")
                            .values(claim_until=now + dt.timedelta(seconds=ttl))).rowcount


def release_own(store: Store, instance: str) -> int:
    """At start: rows this instance claimed before it died are nobody's now — take them back."""
    with store.begin() as conn:
        return conn.execute(update(t.outbox).where(t.outbox.c.status == "sending",
                                                   t.outbox.c.claimed_by == instance)
                            .values(status="pending", claim_token=None, claim_until=None,
                                    updated_at=utcnow())).rowcount


def release(store: Store, ids: Sequence[int], token: str) -> int:
    """Give claimed rows back untouched (shutdown, a download 1C never confirmed)."""
    if not ids:
        return 0
    with store.begin() as conn:
        return conn.execute(update(t.outbox).where(t.outbox.c.id.in_(list(ids)), t.outbox.c.claim_token == token,
                                                   t.outbox.c.status == "sending")
                            .values(status="pending", claim_token=None, claim_until=None,
                                    updated_at=utcnow())).rowcount


def release_token(store: Store, token: str) -> int:
    """Give back every row a claim holds (a download whose instance restarted since)."""
    with store.begin() as conn:
        return conn.execute(update(t.outbox).where(t.outbox.c.claim_token == token, t.outbox.c.status == "sending")
                            .values(status="pending", claim_token=None, claim_until=None,
                                    updated_at=utcnow())).rowcount


def fence(conn: Connection, row_id: int, token: str) -> dict[str, Any] | None:
    """Inside the settling transaction: lock the row if this claim still holds it, else None.

    The UPDATE takes the row lock on PostgreSQL (a planner's bump waits for our commit); a claim
    that expired and was taken by another worker has another token, so nothing is applied.
    """
    n = conn.execute(update(t.outbox).where(t.outbox.c.id == row_id, t.outbox.c.claim_token == token,
                                            t.outbox.c.status == "sending")
                     .values(updated_at=utcnow())).rowcount
    if not n:
        return None
    row = conn.execute(select(t.outbox).where(t.outbox.c.id == row_id)).mappings().first()
    return dict(row) if row is not None else None


def settle(conn: Connection, row_id: int, *, status: str, **values: Any) -> None:
    """Close the claim on a fenced row: done, dead, pending again (with a delay) or blocked."""
    values.setdefault("updated_at", utcnow())
    if status != "sending":
        values.update(claim_token=None, claim_until=None)
    if status != "blocked":
        values.update(blocked_on=None, blocked_why=None)
    conn.execute(update(t.outbox).where(t.outbox.c.id == row_id).values(status=status, **values))


def unblock(conn: Connection, on: Iterable[str], *, system: str | None = None,
            now: dt.datetime | None = None) -> int:
    """Writes that waited for these entities look again now."""
    ids = sorted(set(on))
    if not ids:
        return 0
    now = now or utcnow()
    n = 0
    for i in range(0, len(ids), CHUNK):
        q = update(t.outbox).where(t.outbox.c.status == "blocked", t.outbox.c.blocked_on.in_(ids[i:i + CHUNK]))
        if system is not None:
            q = q.where(t.outbox.c.system == system)
        n += conn.execute(q.values(status="pending", blocked_on=None, blocked_why=None, next_attempt_at=now,
                                   updated_at=now)).rowcount
    return n


def replay(store: Store, ids: Sequence[int] | None = None) -> int:
    """Dead letters back to the queue (all, or the given ids): each is decided anew when sent,
    so it carries every change made to its record meanwhile. The writes that waited for them
    look again."""
    o = t.outbox.c
    now = utcnow()
    with store.begin() as conn:
        q = select(o.id, o.entity_id, o.system).where(o.status == "dead")
        if ids:
            q = q.where(o.id.in_(list(ids)))
        dead = conn.execute(q.order_by(o.id)).all()
        for rid, eid, system in dead:
            conn.execute(update(t.outbox).where(o.id == rid).values(
                status="pending", attempts=0, next_attempt_at=now, origin="replay", claim_token=None,
                updated_at=now))
            unblock(conn, [eid], system=system, now=now)
        return len(dead)


def open_writes(conn: Connection, entity_ids: Sequence[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """(entity, system) -> its open row (status, id, external_key), for the given entities."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    o = t.outbox.c
    ids = sorted(set(entity_ids))
    for i in range(0, len(ids), CHUNK):
        for row in conn.execute(select(o.id, o.entity_id, o.system, o.status, o.external_key)
                                .where(t.OPEN_WRITES, o.entity_id.in_(ids[i:i + CHUNK]))).mappings():
            out[(row["entity_id"], row["system"])] = dict(row)
    return out


def dead_writes(conn: Connection, entity_ids: Sequence[str]) -> set[tuple[str, str]]:
    o = t.outbox.c
    ids = sorted(set(entity_ids))
    out: set[tuple[str, str]] = set()
    for i in range(0, len(ids), CHUNK):
        out.update((a, b) for a, b in conn.execute(select(o.entity_id, o.system).where(
            o.status == "dead", o.entity_id.in_(ids[i:i + CHUNK]))))
    return out


__all__ = ["Intent", "Claim", "plan", "claim", "renew", "release_own", "release", "release_token", "fence",
           "settle", "unblock", "replay", "open_writes", "dead_writes"]
