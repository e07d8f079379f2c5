"""The outbox: writes to do, and the one place their states change.

A row says *which* entity must be brought up to date in *which* system and why; it never
freezes field values (the pusher computes them when it holds the claim, see `payload`). The
database keeps one unsettled row per (entity, system) — a partial unique index — so planning a
change for an entity that already has a row queued bumps that row's `gen` instead of adding one:
several changes coalesce into one write by construction, and a change planned while the row is
being sent is seen at confirm time (`confirm` compares the golden record with the target's shadow
again).

States and transitions (every status change of a row is one of these functions; nothing else in
syncd writes `outbox.status`):

    transition   from                              to          guard / note
    ----------   -------------------------------   ---------   ------------------------------------------
    plan         (none)                            pending     a new write
                 pending, sending, dead            (same)      gen + 1: coalesced into the open row
                 blocked                           pending     a new change may have removed the wait
    claim        pending (due)                     sending     token, instance and deadline set
                 sending (deadline passed)         sending     its holder is dead or stuck: taken over
                 blocked (re-check due)            sending     decided again; blocks again or goes
    renew        sending                           sending     deadline pushed; only the token's rows
    release      sending                           pending     the token's rows, untouched (shutdown)
    reclaim      sending (of a dead instance)      pending     at start, once the instance's lease
                                                               shows its last holder is dead
    done         sending                           done        fenced: only the token's holder
    again        sending                           pending     fenced: changed in flight / retry later
    block        sending                           blocked     fenced; re-checks what it waits for in
                                                   | pending   the same transaction: already there ->
                                                               pending, never blocked on something
                                                               that exists; re-checked once more after
                                                               commit (the waker may not have committed)
    dead         sending                           dead        fenced; the rows blocked on this record
                                                               here now wait for a person (why=dead)
    unblock      blocked (on X)                    pending     X appeared; run again after commit
    sweep        blocked on what is present        pending     the invariant, checked and repaired
    replay       dead                              pending     a person said so; what waited wakes
    merged       pending, blocked, dead            done        its held entity was merged away

Why a block can never outlive what it waits for: a blocker writes "blocked on X" and then reads
"is X there?", a waker writes "X is there" and then reads "who is blocked on X?" — each read is
done again after its own transaction commits (`Store.after_commit`). Commits are totally ordered,
so whichever commits second sees the other's write in its read after commit. Every block also has
a finite re-check time (`recheck_at`), and `sweep` checks the invariant over the whole table.

Claims are fenced: a claim has a random token, the claiming instance and a deadline. Only the
holder of the token may settle the row (`fence`); the holder renews the deadline while the write
is in flight (`renew`); anyone takes a claim whose deadline has passed.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from sqlalchemy import and_, case, exists, literal, not_, null, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from syncd import schema
from syncd.store import Store, after_commit, new_id, utcnow
from syncd.store import tables as t

CHUNK = 400

# Seconds until a blocked write is decided again without being woken. A wake-up normally comes at
# once (unblock); this bounds what a missed one could cost. A wait for a linked record's first
# appearance ends after `link_wait` instead (the write then goes without the link).
RECHECK = {"create": 120.0, "confirm": 120.0, "read": 60.0, "held": 900.0, "dead": 900.0}

o = t.outbox.c


@dataclass(frozen=True)
class Intent:
    """The planner's wish: bring `entity_id` up to date in `system` (fields as planned, for the record)."""

    entity_id: str
    entity_type: str
    system: str
    op: str                          # create | update, as seen at plan time
    origin: str                      # why: pull:<system>, rules, review, replay…
    fields: dict[str, Any]


def recheck_at(why: str, now: dt.datetime, link_wait: float) -> dt.datetime:
    """When a blocked write is decided again without being woken."""
    return now + dt.timedelta(seconds=link_wait if why == "record" else RECHECK.get(why, RECHECK["create"]))


# -- plan ------------------------------------------------------------------------------------------

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
    stmt = ins.on_conflict_do_update(
        index_elements=[o.entity_id, o.system], index_where=t.UNSETTLED_WRITES,
        set_={"gen": o.gen + 1, "payload": ins.excluded.payload, "origin": ins.excluded.origin,
              "updated_at": ins.excluded.updated_at,
              # a new change may have removed what the write waited for: look again now
              "status": _if_blocked("pending", o.status),
              "next_attempt_at": _if_blocked(ins.excluded.next_attempt_at, o.next_attempt_at),
              "blocked_on": _if_blocked(None, o.blocked_on),
              "blocked_why": _if_blocked(None, o.blocked_why)})
    for i in range(0, len(rows), CHUNK):
        conn.execute(stmt, rows[i:i + CHUNK])
    return len(rows)


def _if_blocked(value: Any, otherwise: Any) -> Any:
    v = null() if value is None else (literal(value) if isinstance(value, str) else value)
    return case((o.status == "blocked", v), else_=otherwise)


# -- claims ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    token: str
    instance: str
    rows: list[dict[str, Any]]


def claim(store: Store, system: str, *, instance: str, ttl: float, limit: int = 50,
          now: dt.datetime | None = None) -> Claim:
    """Take up to `limit` ready rows of `system`: pending and due, claims past their deadline, and
    blocked rows due for a re-check."""
    now = now or utcnow()
    ready = and_(o.system == system, or_(
        and_(o.status == "pending", o.next_attempt_at <= now),
        and_(o.status == "sending", o.claim_until < now),
        and_(o.status == "blocked", o.next_attempt_at <= now)))
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
        r["claimed_from"] = r["status"]          # pending | sending (expired) | blocked (re-check)
        r["status"], r["claim_token"] = "sending", token
    return Claim(token, instance, rows)


def renew(store: Store, tokens: Iterable[str], ttl: float) -> int:
    """Push the deadline of claims still held; returns the rows renewed."""
    tokens = sorted(set(tokens))
    if not tokens:
        return 0
    now = utcnow()
    with store.begin() as conn:
        return conn.execute(update(t.outbox).where(o.claim_token.in_(tokens), o.status == "sending")
                            .values(claim_until=now + dt.timedelta(seconds=ttl))).rowcount


def reclaim(store: Store, instance: str) -> int:
    """Rows a dead holder of `instance` claimed are nobody's now: take them back.

    Only for an instance name whose liveness lease this process has just taken over from a dead
    holder (syncd.store.presence): a live process's claims are never touched.
    """
    with store.begin() as conn:
        # marked as tried (attempts >= 1): the dead holder may have sent them, so a create then found
        # by its key on the retry is syncd's own (confirm.confirmed). Only marked, not counted again:
        # a process killed while the same write is in flight time after time is not that write
        # failing — ten restarts must not spend the dead-letter budget of a write the peer never refused
        return conn.execute(update(t.outbox).where(o.status == "sending", o.claimed_by == instance)
                            .values(status="pending", claim_token=None, claim_until=None,
                                    attempts=case((o.attempts == 0, 1), else_=o.attempts),
                                    updated_at=utcnow())).rowcount


def claimers(store: Store, exclude: str) -> list[str]:
    """Instances holding claimed (sending) rows, other than `exclude`."""
    with store.read() as conn:
        return [x for (x,) in conn.execute(select(o.claimed_by).where(o.status == "sending", o.claimed_by != exclude)
                                           .distinct()) if x]


def release(store: Store, ids: Sequence[int], token: str) -> int:
    """Give claimed rows back untouched (shutdown, a download 1C never confirmed)."""
    if not ids:
        return 0
    with store.begin() as conn:
        return conn.execute(update(t.outbox).where(o.id.in_(list(ids)), o.claim_token == token,
                                                   o.status == "sending")
                            .values(status="pending", claim_token=None, claim_until=None,
                                    updated_at=utcnow())).rowcount


def release_token(store: Store, token: str) -> int:
    """Give back every row a claim holds (a download whose instance restarted since)."""
    with store.begin() as conn:
        return conn.execute(update(t.outbox).where(o.claim_token == token, o.status == "sending")
                            .values(status="pending", claim_token=None, claim_until=None,
                                    updated_at=utcnow())).rowcount


# -- settling a claimed row (each inside the caller's transaction, after `fence`) -----------------

def fence(conn: Connection, row_id: int, token: str) -> dict[str, Any] | None:
    """Inside the settling transaction: lock the row if this claim still holds it, else None.

    The UPDATE takes the row lock on PostgreSQL (a planner's bump waits for our commit); a claim
    that expired and was taken by another worker has another token, so nothing is applied.
    """
    n = conn.execute(update(t.outbox).where(o.id == row_id, o.claim_token == token, o.status == "sending")
                     .values(updated_at=utcnow())).rowcount
    if not n:
        return None
    row = conn.execute(select(t.outbox).where(o.id == row_id)).mappings().first()
    return dict(row) if row is not None else None


def _settle(conn: Connection, row_id: int, status: str, values: dict[str, Any]) -> None:
    values.setdefault("updated_at", utcnow())
    values.update(status=status, claim_token=None, claim_until=None)
    if status != "blocked":
        values.update(blocked_on=None, blocked_why=None)
    conn.execute(update(t.outbox).where(o.id == row_id).values(**values))


def done(conn: Connection, row_id: int, **values: Any) -> None:
    """The target is in step with the record (or there was nothing to send)."""
    _settle(conn, row_id, "done", values)


def again(conn: Connection, row_id: int, *, at: dt.datetime, **values: Any) -> None:
    """Pending again at `at`: the record changed in flight (at once), or a retry with backoff."""
    _settle(conn, row_id, "pending", dict(values, next_attempt_at=at))


def block(conn: Connection, row: dict[str, Any], *, on: str, why: str, detail: str, now: dt.datetime,
          link_wait: float, **values: Any) -> str:
    """Wait for `on` (create: its record in this system; confirm: syncd's create of it there
    confirmed; record: its first read; held: its review or quarantine; dead: its dead letter replayed). Returns "blocked", or "pending" when what it
    waits for is already there — decided in this transaction, and checked again after commit."""
    if present(conn, on, why, row["system"]):
        _settle(conn, row["id"], "pending", dict(values, next_attempt_at=now, last_error=None))
        return "pending"
    _settle(conn, row["id"], "blocked", dict(values, blocked_on=on, blocked_why=why, last_error=detail,
                                              next_attempt_at=recheck_at(why, now, link_wait)))
    after_commit(conn, lambda c: _wake_if_present(c, row["id"], on, why, row["system"]))
    return "blocked"


def dead(conn: Connection, row: dict[str, Any], *, error: str, now: dt.datetime, **values: Any) -> None:
    """A dead letter; the writes that wait for this record here wait for a person now (say so)."""
    _settle(conn, row["id"], "dead", dict(values, last_error=error))
    conn.execute(update(t.outbox).where(o.status == "blocked", o.blocked_on == row["entity_id"],
                                        o.system == row["system"])
                 .values(blocked_why="dead", last_error=f"the write of the {row['entity_type']} it links to "
                                                        f"is a dead letter (row {row['id']}): replay it",
                         next_attempt_at=recheck_at("dead", now, 0), updated_at=now))


# -- waking ----------------------------------------------------------------------------------------

def unblock(conn: Connection, on: Iterable[str], *, system: str | None = None,
            now: dt.datetime | None = None, _after: bool = True) -> int:
    """Writes that waited for these entities look again now (and once more after this commits:
    a write blocked by a transaction that has not committed yet is not visible here)."""
    ids = sorted(set(on))
    if not ids:
        return 0
    now = now or utcnow()
    n = 0
    for i in range(0, len(ids), CHUNK):
        q = update(t.outbox).where(o.status == "blocked", o.blocked_on.in_(ids[i:i + CHUNK]))
        if system is not None:
            q = q.where(o.system == system)
        n += conn.execute(q.values(status="pending", blocked_on=None, blocked_why=None, next_attempt_at=now,
                                   last_error=None, updated_at=now)).rowcount
    if _after:
        after_commit(conn, lambda c: unblock(c, ids, system=system, _after=False))
    return n


def _present_clause() -> Any:
    """SQL: what the blocked row (outbox) waits for is there — the guard of `block`, in bulk."""
    e, b, d = t.entities.alias("e"), t.bindings.alias("b"), t.outbox.alias("d")
    gone_or_merged = or_(
        not_(exists().where(e.c.id == o.blocked_on)),
        exists().where(e.c.id == o.blocked_on, e.c.hold == "merged"))
    r = t.runs.alias("r")
    return or_(
        and_(o.blocked_why != "read", gone_or_merged),
        and_(o.blocked_why == "read", exists().where(r.c.system == o.system, r.c.stream == o.blocked_on,
                                                     r.c.status == "ok")),
        and_(o.blocked_why == "create",
             exists().where(b.c.entity_id == o.blocked_on, b.c.system == o.system, b.c.alias.is_(False))),
        and_(o.blocked_why == "record", exists().where(e.c.id == o.blocked_on, e.c.fields != "{}")),
        and_(o.blocked_why == "held", exists().where(e.c.id == o.blocked_on, e.c.hold.is_(None))),
        and_(o.blocked_why == "dead", not_(exists().where(d.c.entity_id == o.blocked_on, d.c.system == o.system,
                                                          d.c.status == "dead"))),
        and_(o.blocked_why == "confirm", or_(
            exists().where(b.c.entity_id == o.blocked_on, b.c.system == o.system, b.c.how.in_(("created", "found"))),
            not_(exists().where(d.c.entity_id == o.blocked_on, d.c.system == o.system,
                                d.c.status.in_(OPEN_CREATE))))))


OPEN_CREATE = ("pending", "sending", "blocked")     # a create still to be confirmed


def stream_read(conn: Connection, system: str, stream: str) -> bool:
    """Has `stream` of `system` been read through once (a run of it ended ok)?"""
    r = t.runs.c
    return conn.execute(select(r.id).where(r.system == system, r.stream == stream, r.status == "ok")
                        .limit(1)).first() is not None


def present(conn: Connection, on: str, why: str, system: str) -> bool:
    """Is what a write waits for there now?"""
    e, b, d = t.entities.c, t.bindings.c, t.outbox.c
    if why == "read":
        return stream_read(conn, system, on)
    ent = conn.execute(select(e.hold, e.fields).where(e.id == on)).first()
    if ent is None or ent.hold == "merged":
        return True                      # decided again, it resolves the merge or finds nothing to do
    if why == "create":
        return conn.execute(select(b.external_id).where(b.entity_id == on, b.system == system,
                                                        b.alias.is_(False)).limit(1)).first() is not None
    if why == "record":
        return ent.fields != "{}"
    if why == "held":
        return ent.hold is None
    if why == "dead":
        return conn.execute(select(d.id).where(d.entity_id == on, d.system == system, d.status == "dead")
                            .limit(1)).first() is None
    if why == "confirm":           # the create of `on` there is confirmed (or no longer in flight)
        return conn.execute(select(b.external_id).where(b.entity_id == on, b.system == system,
                                                        b.how.in_(("created", "found"))).limit(1)).first() \
            is not None or conn.execute(select(d.id).where(d.entity_id == on, d.system == system,
                                                           d.status.in_(OPEN_CREATE)).limit(1)).first() is None
    return False


def _wake_if_present(conn: Connection, row_id: int, on: str, why: str, system: str) -> None:
    if present(conn, on, why, system):
        conn.execute(update(t.outbox).where(o.id == row_id, o.status == "blocked", o.blocked_on == on)
                     .values(status="pending", blocked_on=None, blocked_why=None, next_attempt_at=utcnow(),
                             last_error=None, updated_at=utcnow()))


def stale_blocked(conn: Connection) -> int:
    """Rows blocked on something that is there: 0 unless a wake-up was missed (a bug)."""
    from sqlalchemy import func

    return int(conn.execute(select(func.count()).select_from(t.outbox)
                            .where(o.status == "blocked", _present_clause())).scalar() or 0)


def sweep(conn: Connection, now: dt.datetime | None = None) -> int:
    """Wake every row blocked on something that is there; returns how many (0 unless a wake-up was
    missed). The daemon runs it on a schedule and exports what it found."""
    now = now or utcnow()
    return conn.execute(update(t.outbox).where(o.status == "blocked", _present_clause())
                        .values(status="pending", blocked_on=None, blocked_why=None, next_attempt_at=now,
                                last_error=None, updated_at=now)).rowcount


def replay(store: Store, ids: Sequence[int] | None = None) -> int:
    """Dead letters back to the queue (all, or the given ids): each is decided anew when sent,
    so it carries every change made to its record meanwhile. The writes that waited for them
    look again."""
    now = utcnow()
    with store.begin() as conn:
        q = select(o.id, o.entity_id, o.system).where(o.status == "dead")
        if ids:
            q = q.where(o.id.in_(list(ids)))
        rows = conn.execute(q.order_by(o.id)).all()
        for rid, eid, system in rows:
            conn.execute(update(t.outbox).where(o.id == rid).values(
                status="pending", attempts=0, next_attempt_at=now, origin="replay", claim_token=None,
                updated_at=now))
            unblock(conn, [eid], system=system, now=now)
        return len(rows)


def close_merged(conn: Connection, held: str, into: str, why: str) -> int:
    """The writes of an entity merged into another go nowhere (a held record a review settled, a
    record known by a link that turned out to be one syncd had)."""
    return conn.execute(update(t.outbox).where(o.entity_id == held, t.OPEN_WRITES, o.status != "sending")
                        .values(status="done", last_error=f"merged into {into} ({why})",
                                updated_at=utcnow())).rowcount


# -- reading ---------------------------------------------------------------------------------------

def open_writes(conn: Connection, entity_ids: Sequence[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """(entity, system) -> its open row (status, id, external_key), for the given entities."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    ids = sorted(set(entity_ids))
    for i in range(0, len(ids), CHUNK):
        for row in conn.execute(select(o.id, o.entity_id, o.system, o.status, o.external_key)
                                .where(t.OPEN_WRITES, o.entity_id.in_(ids[i:i + CHUNK]))).mappings():
            out[(row["entity_id"], row["system"])] = dict(row)
    return out


def dead_writes(conn: Connection, entity_ids: Sequence[str]) -> set[tuple[str, str]]:
    ids = sorted(set(entity_ids))
    out: set[tuple[str, str]] = set()
    for i in range(0, len(ids), CHUNK):
        out.update((a, b) for a, b in conn.execute(select(o.entity_id, o.system).where(
            o.status == "dead", o.entity_id.in_(ids[i:i + CHUNK]))))
    return out


__all__ = ["Intent", "Claim", "RECHECK", "recheck_at", "plan", "claim", "renew", "reclaim", "release",
           "release_token", "fence", "done", "again", "block", "dead", "unblock", "present", "stale_blocked",
           "sweep", "replay", "close_merged", "open_writes", "dead_writes"]
