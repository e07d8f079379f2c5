"""The engine: the chain of stages a batch of records goes through, and the transaction around it.

    pull ─> canonical ─> identify ─> record ─> resolve ─> (intake) ─> rules ─> plan ─> outbox
            canonical.py identify.py record.py resolve.py route_mail.py rules.py plan.py

Each stage is a module that takes the batch's state (`batch.Batch`: the transaction, the system,
what was loaded and what will be written) and returns what the next one needs; `run_batch` below
lists them. One batch from one system is processed in one transaction together with its cursor,
so a crash loses nothing and a re-read batch changes nothing (bindings and shadows absorb it).
Every stage loads what it needs for the whole batch with a few set-based queries; that is what
keeps the engine within a small factor of plain inserts. The write side (push -> confirm) is
`syncd.pipeline.push`; a person's decisions on held records are `syncd.pipeline.settle`.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import structlog
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from syncd.connector import Batch as Records
from syncd.connector import RawRecord, Rejected
from syncd.mapping import Mapper
from syncd.pipeline import canonical, hold, identify, outbox, plan, record, resolve, rules
from syncd.pipeline.batch import (Batch, BindingRace, Ent, IntakeHook, RuleEffects, RuleHook, RuleInput, Setup)
from syncd.pipeline.counts import Counts
from syncd.pipeline.relink import relink
from syncd.store import Store

log = structlog.get_logger("syncd.engine")
RACE_RETRIES = 4        # a batch taken in again after losing a race on a binding (see BindingRace)


def run_batch(setup: Setup, conn: Connection, system: str, records: Sequence[RawRecord | Rejected], *,
              run_id: str | None = None, stream: str | None = None,
              forced: dict[tuple[str, str], str | None] | None = None) -> Counts:
    """One batch through every stage, inside the caller's transaction. `forced`: (type, external
    id) -> the entity a person said the record is ("new" for a new one)."""
    batch = Batch(setup, conn, system, run_id, stream)
    batch.forced = dict(forced or {})
    parsed = canonical.parse(batch, records)
    held_types = {(batch.entity_type(b.kind), b.external_id) for b in parsed.bad if b.external_id}
    wanted = {(et, r.external_id) for r, et, _ in parsed.records} | {
        (ref.entity, ref.external_id) for _, _, f in parsed.records for ref in identify.refs(f)} | {
        (et, ext) for et, ext in held_types if et}
    if not wanted and not parsed.bad:
        return batch.counts
    if wanted:
        batch.load_bindings(wanted)   # type: ignore[arg-type]
    for b in parsed.bad:              # every one, with an id or not: nothing is dropped
        hold.quarantine(batch, b)
    if not parsed.records:
        batch.flush_entities(batch.new_ents)
        return batch.counts

    resolved = identify.identify(batch, parsed.records)
    ents = batch.load_entities([r.eid for r in resolved])
    ents.update(batch.new_ents)       # created in this batch (records, stubs, held records)
    hold.refresh_reviews(batch, resolved, ents)

    recorder = record.Recorder(batch, resolved)
    conflicts = resolve.open_conflicts(batch, [r.eid for r in resolved])
    changed: dict[str, dict[str, Any]] = {}
    for item in resolved:
        ent = ents[item.eid]
        change = recorder.take(item, ent)
        if change is None:
            continue
        applied = resolve.apply(batch, ent, change, conflicts.get(item.eid, {}))
        if applied:
            changed.setdefault(item.eid, {}).update(applied)
            ent.dirty = True
        _count(batch.counts, ent, change.created, applied)
    done = recorder.out
    freed = hold.release(batch, resolved, ents)
    done.created.update(freed)        # its first real record: rules run as for a new one
    touched = done.touched
    if setup.intake is not None:
        # routing of what arrived (mail -> lead / comment): before rules, so rules see new leads
        new_ids = list(dict.fromkeys(r.eid for r in resolved if r.created))
        touched |= setup.intake(batch, ents, new_ids, setup.region)
    rules.run(batch, ents, touched, changed, done.created)

    batch.flush_entities(ents)
    recorder.write()                  # after the entities they refer to
    batch.counts.planned += plan.plan_batch(batch, ents, touched, origin=f"pull:{system}")
    _wake(batch, done.filled, freed)
    return batch.counts


def _count(counts: Counts, ent: Ent, created: bool, applied: dict[str, Any]) -> None:
    if ent.hold:
        return                        # counted as review / quarantine already
    if created:
        counts.created += 1
    elif applied:
        counts.updated += 1
    else:
        counts.skipped += 1


def _wake(batch: Batch, filled: set[str], freed: list[str]) -> None:
    """Writes that waited for what this batch read look again now, not after their recheck."""
    if filled:
        # records known by a link until now: writes that waited for them to be read
        outbox.unblock(batch.conn, sorted(filled), now=batch.now)
    if batch.bound_here:
        # a record read here for the first time may be one syncd created and never confirmed
        # (the process died after the write): its own create settles as "in step", and the
        # writes that wait for it to exist here must not wait for a confirm that never comes
        outbox.unblock(batch.conn, sorted(batch.bound_here), system=batch.system, now=batch.now)
    for eid in freed:                 # what linked to it and waited goes on
        relink(batch.setup, batch.conn, eid, eid, origin=f"released:{batch.system}")
    for stub, into in batch.adopted:  # what linked to the stub links to the entity it joined
        relink(batch.setup, batch.conn, stub, into, origin=f"joined:{batch.system}")


class Engine:
    """Takes batches in (`ingest`), and the decisions syncd makes outside a pull (`replan`,
    `apply_effects`), each in its own transaction. A person's decisions: `syncd.pipeline.settle`."""

    def __init__(self, store: Store, mapper: Mapper, *, rules: RuleHook | None = None,
                 region: str | None = None, intake: IntakeHook | None = None) -> None:
        self.store, self.mapper, self.rules, self.intake = store, mapper, rules, intake
        self.region = region or mapper.ms.region
        self._grown = self._analyzed_at = 0

    @property
    def setup(self) -> Setup:
        # built on each use: tests and `syncd check` swap the mapper or the hooks of a live engine
        return Setup(self.store, self.mapper, self.region, self.rules, self.intake)

    def ingest(self, system: str, batch: Records, *, run_id: str | None = None) -> Counts:
        """Process one batch and save its cursor in the same transaction; then ack the source."""
        for attempt in range(1, RACE_RETRIES + 1):
            try:
                with self.store.begin() as conn:
                    counts = self.ingest_in(conn, system, batch.records, run_id=run_id, stream=batch.stream)
                    if batch.cursor is not None:
                        self.store.set_cursor(conn, system, batch.stream, batch.cursor)
                break
            except (BindingRace, IntegrityError) as exc:
                # another transaction bound or created one of these records first: nothing of this
                # attempt was committed; the next one reads what that transaction made
                if attempt == RACE_RETRIES:
                    raise
                log.info("batch_retried", system=system, stream=batch.stream, attempt=attempt,
                         reason=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        if batch.ack is not None:
            batch.ack()   # only after the commit: a crash before this re-reads, never loses
        self._note_growth(len(batch.records))
        return counts

    def ingest_in(self, conn: Connection, system: str, records: Sequence[RawRecord | Rejected], *,
                  run_id: str | None = None, stream: str | None = None) -> Counts:
        return run_batch(self.setup, conn, system, records, run_id=run_id, stream=stream)

    def _note_growth(self, n: int) -> None:
        """Refresh PostgreSQL's planner statistics during a big import.

        A backfill can grow the tables tenfold within autovacuum's one-minute nap; on stale
        statistics the planner takes the look-ups for tiny-table scans and each batch reads the
        whole table. ANALYZE samples, so running it after every doubling stays cheap.
        """
        if not self.store.is_postgres:
            return
        self._grown += n
        if self._grown >= max(5000, self._analyzed_at):
            with self.store.engine.connect() as c:
                c = c.execution_options(isolation_level="AUTOCOMMIT")
                c.exec_driver_sql("ANALYZE entities, bindings, match_keys, shadows, outbox")
            self._analyzed_at = self._grown * 2
            log.debug("planner_statistics_refreshed", records=self._grown)

    def replan(self, entity_ids: Iterable[str], *, origin: str = "replan") -> int:
        """Plan writes for entities again (after a conflict or review is resolved)."""
        with self.store.begin() as conn:
            batch = Batch(self.setup, conn, "", None, None)
            ents = batch.load_entities(list(entity_ids))
            return plan.plan_batch(batch, ents, set(ents), origin=origin)

    def apply_effects(self, effects: dict[str, RuleEffects], *, origin: str = "rules") -> int:
        """Apply decisions made outside a pull (timers, metrics): entity id -> effects.

        Updates and new entities are recorded with origin `rules` and planned like any change.
        An empty key ("") collects effects that only create new entities.
        """
        with self.store.begin() as conn:
            batch = Batch(self.setup, conn, origin, None, None)
            ents = batch.load_entities([k for k in effects if k])
            touched: set[str] = set()
            for eid, eff in effects.items():
                if eid and eid not in ents:
                    continue
                touched |= batch.apply_decided(ents, eid or None, eff, origin)
            batch.flush_entities(ents)
            return plan.plan_batch(batch, ents, touched, origin=origin)


__all__ = ["Engine", "run_batch", "Counts", "RuleEffects", "RuleHook", "RuleInput", "IntakeHook", "BindingRace"]
