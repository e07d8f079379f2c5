"""Stages 7-8: claim outbox rows, write them through the target connector, confirm.

Claiming is safe across workers: on PostgreSQL `SELECT … FOR UPDATE SKIP LOCKED`; on SQLite the
claim is one `BEGIN IMMEDIATE` transaction, which holds the database write lock. A row claimed by
a worker that died is claimable again once its claim is older than `claim_ttl`; the connector's
look-up of the external key before a create keeps that from creating twice.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import structlog
from sqlalchemy import and_, delete, exists, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased
from tenacity import RetryError, retry, retry_if_exception_type, stop_after_attempt

from syncd import schema
from syncd.connector import Connector, WriteOp, WriteResult
from syncd.errors import BadInput, DependencyPending, PermanentError, TransientError
from syncd.mapping import Mapper
from syncd.pipeline.engine import Counts
from syncd.store import Store, utcnow
from syncd.store import tables as t

log = structlog.get_logger("syncd.push")


@dataclass(frozen=True)
class PushPolicy:
    max_attempts: int = 8           # then the write is dead-lettered
    inline_tries: int = 3           # tenacity tries inside one claim
    base_delay: float = 2.0         # outbox backoff: base * 2**attempts, jittered, capped
    max_delay: float = 900.0
    claim_ttl: float = 300.0        # a claim older than this is taken to be from a dead worker
    inline_wait_max: float = 2.0
    link_wait: float = 600.0        # a new record waits this long for the records it links to


class NothingToWrite(Exception):
    """Every field of the write is held for review."""


def external_key(entity_id: str) -> str:
    """The stamp every create carries (ORIGIN_ID, Ид, externalId), looked up before creating."""
    return f"syncd-{entity_id}"


class Pusher:
    def __init__(self, store: Store, mapper: Mapper, connectors: Mapping[str, Connector], *,
                 worker: str = "w", policy: PushPolicy = PushPolicy(),
                 sleep: Callable[[float], None] | None = None) -> None:
        self.store, self.mapper, self.connectors = store, mapper, connectors
        self.worker, self.policy = worker, policy
        self._sleep = sleep
        self.stopping = threading.Event()     # set on shutdown: finish the row in hand, claim no more

    # -- claim ----------------------------------------------------------------------------------
    def claim(self, system: str, limit: int = 50) -> list[dict[str, Any]]:
        now = utcnow()
        stale = now - dt.timedelta(seconds=self.policy.claim_ttl)
        o2 = aliased(t.outbox)
        # one write per (entity, system) in flight at a time, oldest first: keeps source order
        earlier = exists().where(o2.c.entity_id == t.outbox.c.entity_id, o2.c.system == t.outbox.c.system,
                                 o2.c.id < t.outbox.c.id, o2.c.status.in_(("pending", "sending")))
        ready = and_(t.outbox.c.system == system, t.outbox.c.next_attempt_at <= now, ~earlier,
                     or_(t.outbox.c.status == "pending",
                         and_(t.outbox.c.status == "sending", t.outbox.c.claimed_at < stale)))
        with self.store.begin() as conn:
            q = select(t.outbox.c.id).where(ready).order_by(t.outbox.c.id).limit(limit)
            if self.store.is_postgres:
                q = q.with_for_update(skip_locked=True, of=t.outbox)
            ids = [r[0] for r in conn.execute(q)]
            if not ids:
                return []
            conn.execute(update(t.outbox).where(t.outbox.c.id.in_(ids)).values(
                status="sending", claimed_by=self.worker, claimed_at=now, updated_at=now))
            rows = conn.execute(select(t.outbox).where(t.outbox.c.id.in_(ids)).order_by(t.outbox.c.id))
            return [dict(r) for r in rows.mappings()]

    # -- push -----------------------------------------------------------------------------------
    def push(self, system: str, *, limit: int = 50, max_rows: int | None = None) -> Counts:
        """Drain ready rows of one target system (up to max_rows); returns counts."""
        counts = Counts()
        done = 0
        waiting: list[int] = []         # rows deferred in this drain for a link not yet created
        pushed_since_wait = 0
        while (max_rows is None or done < max_rows) and not self.stopping.is_set():
            rows = self.claim(system, limit if max_rows is None else min(limit, max_rows - done))
            if not rows:
                # a row that waited for its link's create (a deal for its contact, planned later
                # in the same batch) goes again now if this drain pushed something since: without
                # it the deal would sit until the next push run although its contact is there
                if waiting and pushed_since_wait:
                    self._ready_now(waiting)
                    waiting, pushed_since_wait = [], 0
                    continue
                break
            conn_ = self.connectors.get(system)
            if len(rows) > 1 and hasattr(conn_, "write_many"):
                before = counts.pushed
                waiting += self._push_many(conn_, rows, counts)
                pushed_since_wait += counts.pushed - before
                done += len(rows)
                continue
            for i, row in enumerate(rows):
                if self.stopping.is_set():
                    self._release([r["id"] for r in rows[i:]])
                    return counts
                before = counts.pushed
                if self._push_one(row, counts) == "dependency":
                    waiting.append(row["id"])
                pushed_since_wait += counts.pushed - before
                done += 1
        return counts

    def _push_many(self, conn_: Any, rows: list[dict[str, Any]], counts: Counts) -> list[int]:
        """One claim through the connector's bulk path (e.g. Bitrix24 `batch`, 50 commands a call).

        Each row ends exactly as it would one by one: confirmed, deferred, or dead-lettered.
        Returns the rows deferred for a link not created yet.
        """
        waiting: list[int] = []
        built: list[tuple[dict[str, Any], WriteOp, dict[str, Any]]] = []
        for row in rows:
            try:
                op, canon = self._build(row)
            except Exception as exc:  # noqa: BLE001 - routed exactly as in _push_one
                if self._outcome(row, None, None, exc, counts) == "dependency":
                    waiting.append(row["id"])
                continue
            built.append((row, op, canon))
        if not built:
            return waiting
        try:
            results = conn_.write_many([op for _, op, _ in built])
        except (TransientError, PermanentError, BadInput) as exc:
            results = [exc] * len(built)
        for (row, op, canon), res in zip(built, results):
            self._outcome(row, op, canon, res, counts)
        return waiting

    def _outcome(self, row: dict[str, Any], op: WriteOp | None, canon: dict[str, Any] | None,
                 res: WriteResult | BaseException, counts: Counts) -> str | None:
        if isinstance(res, NothingToWrite):
            with self.store.begin() as conn:
                conn.execute(update(t.outbox).where(t.outbox.c.id == row["id"]).values(
                    status="done", last_error="nothing left to write (fields under review)", updated_at=utcnow()))
            return None
        if isinstance(res, DependencyPending):
            self._defer(row, str(res), count_attempt=False)
            return "dependency"
        if isinstance(res, TransientError):
            counts.failed += 1
            self._defer(row, f"{type(res).__name__}: {res}", count_attempt=True, retry_after=res.retry_after,
                        counts=counts)
            return None
        if isinstance(res, (PermanentError, BadInput)):
            counts.failed += 1
            counts.dead += 1
            self._dead(row, f"{type(res).__name__}: {res}")
            return None
        if isinstance(res, BaseException):
            raise res
        assert op is not None and canon is not None
        try:
            self._confirm(row, op, canon, res)
        except IntegrityError as exc:
            counts.failed += 1
            counts.dead += 1
            self._dead(row, f"binding clash: {row['system']} {op.kind} {res.external_id} is already bound "
                            f"to another entity ({exc.orig})")
            return None
        counts.pushed += 1
        if op.op == "create":
            counts.created += 1
        else:
            counts.updated += 1
        return None

    def _ready_now(self, ids: list[int]) -> None:
        with self.store.begin() as conn:
            conn.execute(update(t.outbox).where(t.outbox.c.id.in_(ids), t.outbox.c.status == "pending")
                         .values(next_attempt_at=utcnow(), updated_at=utcnow()))

    def _release(self, ids: list[int]) -> None:
        """Give claimed rows back untouched (shutdown)."""
        with self.store.begin() as conn:
            conn.execute(update(t.outbox).where(t.outbox.c.id.in_(ids), t.outbox.c.status == "sending")
                         .values(status="pending", claimed_by=None, claimed_at=None, updated_at=utcnow()))

    def _push_one(self, row: dict[str, Any], counts: Counts) -> str | None:
        system = row["system"]
        conn_ = self.connectors.get(system)
        try:
            if conn_ is None:
                raise PermanentError(f"no connector named {system!r} is configured", connector=system)
            op, canon = self._build(row)
            result: WriteResult | BaseException = self._write_with_retry(conn_, op)
        except (NothingToWrite, DependencyPending, TransientError, PermanentError, BadInput) as exc:
            return self._outcome(row, None, None, exc, counts)
        return self._outcome(row, op, canon, result, counts)

    def _write_with_retry(self, conn_: Connector, op: WriteOp) -> WriteResult:
        p = self.policy

        def _wait(state: Any) -> float:
            exc = state.outcome.exception() if state.outcome else None
            ra = getattr(exc, "retry_after", None)
            n = state.attempt_number
            base = min(p.inline_wait_max, 0.2 * 2 ** (n - 1)) * random.uniform(0.5, 1.0)
            return min(max(base, ra or 0), p.inline_wait_max * 2)

        kwargs: dict[str, Any] = dict(retry=retry_if_exception_type(TransientError),
                                      stop=stop_after_attempt(p.inline_tries), wait=_wait, reraise=True)
        if self._sleep is not None:
            kwargs["sleep"] = self._sleep
        try:
            return retry(**kwargs)(conn_.write)(op)
        except RetryError as exc:  # pragma: no cover - reraise=True makes this unreachable
            raise exc.last_attempt.exception()  # type: ignore[misc]

    def _build(self, row: dict[str, Any]) -> tuple[WriteOp, dict[str, Any]]:
        system, etype, eid = row["system"], row["entity_type"], row["entity_id"]
        em = self.mapper.push_map(system, etype)
        if em is None:
            raise PermanentError(f"no push mapping for {etype} in {system}", connector=system)
        canon = schema.decode(row["payload"])
        with self.store.read() as c:
            # a field under review is never written anywhere until a human settles it
            held = {f for (f,) in c.execute(select(t.conflicts.c.field).where(
                t.conflicts.c.entity_id == eid, t.conflicts.c.status == "open"))}
            canon = {k: v for k, v in canon.items() if k not in held}
            if not canon:
                raise NothingToWrite()
            ext = c.execute(select(t.bindings.c.external_id).where(
                t.bindings.c.entity_id == eid, t.bindings.c.system == system, t.bindings.c.type == etype)
                .order_by(t.bindings.c.created_at).limit(1)).scalar()
            if ext is None and row["op"] == "update":
                # the entity was planned as an update but its binding is gone: send everything
                full = schema.decode(c.execute(select(t.entities.c.fields).where(t.entities.c.id == eid)).scalar())
                canon = {k: v for k, v in full.items() if k in self.mapper.pushable_fields(em)} | canon
            created_at = row["created_at"]
            if created_at.tzinfo is None:
                created_at = created_at.replace(tzinfo=dt.timezone.utc)
            waited = (utcnow() - created_at).total_seconds()
            translate = self._ref_translator(c, system, creating=ext is None, waited=waited)
            translated = {k: schema.map_refs(k, v, translate) if schema.has_refs(k) else v
                          for k, v in canon.items()}
        create = ext is None
        if create and not em.create:
            raise PermanentError(f"{system} may not receive new {em.kind} records (create = false)",
                                 connector=system)
        translated = {k: v for k, v in translated.items()
                      if not (v is None and canon.get(k) is not None and schema.field_spec(k).type == "ref")}
        fields = self.mapper.from_canonical(em, translated, create=create)
        op = WriteOp(op_id=row["idempotency_key"], system=system, kind=em.kind,
                     op="create" if create else "update", entity=etype, entity_id=eid, external_id=ext,
                     fields=fields, external_key=external_key(eid), attempt=row["attempts"])
        # a link the target cannot take yet (its entity has nothing to send) is left out of the
        # write and out of the shadow, so it is planned again once that entity is there
        canon = {k: v for k, v in canon.items() if not (v is not None and translated.get(k) is None)}
        return op, canon

    def _ref_translator(self, c: Any, system: str, *, creating: bool = False,
                        waited: float = 0.0) -> Callable[[str, Any], Any]:
        """External id of a linked entity in `system`, or wait for it, or leave the link out.

        A new record waits for the records it links to (a shop order needs its buyer, a deal its
        contact), even for one still empty here because its own record has not been pulled yet —
        up to `link_wait`; after that it goes without the link, which follows once it exists.
        """
        def fn(target: str, eid: Any) -> Any:
            ext = c.execute(select(t.bindings.c.external_id).where(
                t.bindings.c.entity_id == eid, t.bindings.c.system == system,
                t.bindings.c.type == target).order_by(t.bindings.c.created_at).limit(1)).scalar()
            if ext is not None:
                return ext
            tm = self.mapper.push_map(system, target)
            if tm is not None and tm.create:
                has_fields = c.execute(select(t.entities.c.fields).where(t.entities.c.id == eid)).scalar()
                if (has_fields and has_fields != "{}") or (creating and waited < self.policy.link_wait):
                    raise DependencyPending(f"waiting for {target} {eid} to be created in {system}")
            return None    # not there and not coming now: the link is left out (planned again later)
        return fn

    # -- outcomes -------------------------------------------------------------------------------
    def _confirm(self, row: dict[str, Any], op: WriteOp, canon: dict[str, Any], result: WriteResult) -> None:
        em = self.mapper.push_map(op.system, op.entity)
        assert em is not None
        now = utcnow()
        with self.store.begin() as conn:
            if op.op == "create":
                # a pull may have bound it already (it carried our stamp): same entity is fine
                have = conn.execute(select(t.bindings.c.entity_id).where(
                    t.bindings.c.system == op.system, t.bindings.c.type == op.entity,
                    t.bindings.c.external_id == str(result.external_id))).scalar()
                if have is None:
                    conn.execute(insert(t.bindings).values(system=op.system, type=op.entity,
                                                           external_id=str(result.external_id),
                                                           entity_id=op.entity_id, created_at=now))
                elif have != op.entity_id:
                    raise IntegrityError("binding", {}, Exception(f"bound to {have}"))
            sh = conn.execute(select(t.shadows.c.fields).where(t.shadows.c.entity_id == op.entity_id,
                                                               t.shadows.c.system == op.system)).scalar()
            fields = schema.decode(sh) if sh else {}
            # what the target will report back, so reading it is not a change (no echo)
            fields.update({k: self.mapper.roundtrip(em, k, v) for k, v in canon.items()})
            text = schema.encode(fields)
            if sh is None:
                conn.execute(insert(t.shadows).values(entity_id=op.entity_id, system=op.system, fields=text,
                                                      fingerprint="", source_version=result.version,
                                                      updated_at=now))
            else:
                vals: dict[str, Any] = dict(fields=text, updated_at=now)
                if result.version is not None:
                    vals["source_version"] = result.version
                conn.execute(update(t.shadows).where(t.shadows.c.entity_id == op.entity_id,
                                                     t.shadows.c.system == op.system).values(**vals))
            conn.execute(insert(t.changelog).values(entity_id=op.entity_id, system=op.system, origin="push",
                                                    fields=schema.encode(canon), source_version=result.version,
                                                    source_time=None, observed_at=now, run_id=None))
            conn.execute(update(t.outbox).where(t.outbox.c.id == row["id"]).values(
                status="done", attempts=row["attempts"] + 1, last_error=None, updated_at=now))
            if op.op == "create":
                # writes that waited for this create go at once, not at their next backoff tick
                conn.execute(update(t.outbox).where(
                    t.outbox.c.status == "pending", t.outbox.c.system == op.system,
                    t.outbox.c.last_error.like(f"waiting for {op.entity} {op.entity_id} %")).values(
                    next_attempt_at=now, updated_at=now))
                # entities whose link to this one waited for it are planned again (same transaction)
                key = f"dangling:{op.system}:{op.entity_id}"
                waiting = conn.execute(select(t.kv.c.value).where(t.kv.c.key == key)).scalar()
                if waiting:
                    conn.execute(delete(t.kv).where(t.kv.c.key == key))
                    conn.execute(insert(t.kv).values(key=f"replan:{op.system}:{op.entity_id}:{row['id']}",
                                                     value=waiting, updated_at=now))
        log.info("pushed", system=op.system, op=op.op, kind=op.kind, entity_id=op.entity_id,
                 external_id=result.external_id, op_id=op.op_id)

    def _defer(self, row: dict[str, Any], error: str, *, count_attempt: bool,
               retry_after: float | None = None, counts: Counts | None = None) -> None:
        p = self.policy
        attempts = row["attempts"] + (1 if count_attempt else 0)
        if count_attempt and attempts >= p.max_attempts:
            if counts is not None:
                counts.dead += 1
            self._dead(row, f"gave up after {attempts} attempts: {error}")
            return
        delay = 1.0 if not count_attempt else min(p.max_delay, p.base_delay * 2 ** (attempts - 1))
        delay = max(delay * random.uniform(0.5, 1.0), retry_after or 0)
        with self.store.begin() as conn:
            conn.execute(update(t.outbox).where(t.outbox.c.id == row["id"]).values(
                status="pending", attempts=attempts, last_error=error, claimed_by=None,
                next_attempt_at=utcnow() + dt.timedelta(seconds=delay), updated_at=utcnow()))
        # waiting for a linked record's create is routine; a failed attempt is worth a warning
        (log.warning if count_attempt else log.info)(
            "push_deferred", system=row["system"], entity_id=row["entity_id"], attempts=attempts,
            delay=round(delay, 2), error=error)

    def _dead(self, row: dict[str, Any], error: str) -> None:
        with self.store.begin() as conn:
            conn.execute(update(t.outbox).where(t.outbox.c.id == row["id"]).values(
                status="dead", attempts=row["attempts"] + 1, last_error=error, updated_at=utcnow()))
        log.error("dead_letter", system=row["system"], entity_id=row["entity_id"], error=error)


def outbox_sizes(store: Store) -> dict[str, dict[str, int]]:
    from sqlalchemy import func
    out: dict[str, dict[str, int]] = {}
    with store.read() as c:
        for system, status, n in c.execute(select(t.outbox.c.system, t.outbox.c.status, func.count())
                                           .group_by(t.outbox.c.system, t.outbox.c.status)):
            out.setdefault(system, {})[status] = n
    return out


__all__ = ["Pusher", "PushPolicy", "external_key", "outbox_sizes", "json"]
