"""Stage resolve: a record's changes applied to the golden record under per-field conflict policies
(owner, priority, newest, review; the policies themselves are pure functions at the top).

A conflict is the same field changed in two systems since the last sync, to different values. The
golden record holds the value in force and where it came from; an incoming change whose system was
not in step with that value (its shadow differs from the golden value) is a conflict.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Sequence

import structlog
from sqlalchemy import insert, select, update

from syncd import schema
from syncd.connector import RawRecord
from syncd.mapping.model import ConflictRule
from syncd.pipeline.batch import Batch, Ent, chunks, iso
from syncd.store import tables as t

log = structlog.get_logger("syncd.engine")

DEFAULT_RULE = ConflictRule(policy="newest")


@dataclass(frozen=True)
class Candidate:
    system: str
    value: Any
    source_time: dt.datetime | None


@dataclass(frozen=True)
class Decision:
    winner: str | None          # system whose value stands; None = held for review
    policy: str


def rule_for(conflicts: dict[str, ConflictRule], field: str) -> ConflictRule:
    entity = field.split(".", 1)[0]
    return conflicts.get(field) or conflicts.get(f"{entity}.*") or conflicts.get("*") or DEFAULT_RULE


def decide(rule: ConflictRule, current: Candidate, incoming: Candidate) -> Decision:
    """Which of two different values of one field stands."""
    if rule.policy == "review":
        return Decision(None, "review")
    if rule.policy == "owner":
        if incoming.system == rule.owner:
            return Decision(incoming.system, "owner")
        if current.system == rule.owner:
            return Decision(current.system, "owner")
        # neither is the owner: fall back to newest, so the record still converges
        return Decision(_newest(current, incoming), "owner")
    if rule.policy == "priority":
        order = rule.order or []
        rank = {s: i for i, s in enumerate(order)}
        big = len(order)
        if rank.get(incoming.system, big) < rank.get(current.system, big):
            return Decision(incoming.system, "priority")
        if rank.get(incoming.system, big) > rank.get(current.system, big):
            return Decision(current.system, "priority")
        return Decision(_newest(current, incoming), "priority")
    return Decision(_newest(current, incoming), "newest")


def _newest(current: Candidate, incoming: Candidate) -> str:
    if current.source_time is None or incoming.source_time is None:
        return incoming.system          # no clock to compare: the later observation wins
    if incoming.source_time > current.source_time:
        return incoming.system
    if incoming.source_time < current.source_time:
        return current.system
    return min(incoming.system, current.system)   # a tie is broken the same way everywhere


def version_key(v: str | None) -> tuple[int, str]:
    """Order source versions: digit strings numerically, anything else (ISO times) as text."""
    if v is None:
        return (-1, "")
    s = str(v)
    if s.isdigit():
        return (len(s.lstrip("0")), s.lstrip("0"))
    return (10**6, s)


def is_stale(incoming: str | None, applied: str | None) -> bool:
    return incoming is not None and applied is not None and version_key(incoming) < version_key(applied)


# -- the stage ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Change:
    """What one record changed (the record stage's output): what resolve applies."""

    eid: str
    rec: RawRecord
    changes: dict[str, Any]
    shadow: dict[str, Any]           # what its system was known to hold before this record
    # first contact with a record others made (bound now to an entity syncd had: adopted, matched,
    # a re-install) or a statement: it fills what syncd lacks, never wipes (see `apply`)
    first: bool
    complete: bool                   # not read half-written (while syncd writes it, or partial)
    created: bool                    # the entity is new in this batch


def open_conflicts(batch: Batch, ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """entity -> field -> open conflict id: those fields wait for a person; a change adds a candidate."""
    out: dict[str, dict[str, int]] = {}
    for chunk in chunks(sorted(ids)):
        for cid, eid, name in batch.conn.execute(select(t.conflicts.c.id, t.conflicts.c.entity_id, t.conflicts.c.field)
                                                 .where(t.conflicts.c.status == "open",
                                                        t.conflicts.c.entity_id.in_(chunk))):
            out.setdefault(eid, {})[name] = cid
    return out


def _held_there(batch: Batch, em: Any, name: str, value: Any) -> Any:
    return batch.mapper.roundtrip(em, name, value) if em is not None and name in em.fields else value


def apply(batch: Batch, ent: Ent, change: Change, held: dict[str, int]) -> dict[str, Any]:
    """Apply a record's changes to the golden record under the conflict policies; returns what was
    taken (field -> value).

    `change.first`: first contact with a record others made. Its values are not edits: an empty
    value or list never replaces a non-empty one, an empty one syncd holds is filled, and two
    different non-empty values go by the field's `owner`/`priority`/`review` policy — under
    `newest` the value syncd holds stays (it came from the record's origin, the system that had
    it first; a record's creation by another integration says nothing of when a field changed).
    A document's lines (schema.DOCUMENT_LINES) are taken whole, never merged member by member
    (a partial copy would add its rows); other lists (phones, e-mails, accounts) are merged.
    """
    system, rec, first, complete, sh_fields = batch.system, change.rec, change.first, change.complete, change.shadow
    applied: dict[str, Any] = {}
    em = batch.mapper.entity_map(system, rec.kind)
    for name, value in change.changes.items():
        current = ent.golden.get(name)
        fm = em.fields.get(name) if em else None
        if first and _blank(value) and not _blank(current):
            continue          # what the other side lacks is filled from syncd's record, not wiped
        if rec.statement and not _blank(current) and not schema.is_list(name):
            continue          # a visitor's words fill blanks; what syncd holds stays (lists merge)
        if fm is not None and fm.items and schema.is_list(name):
            # members this system's lines cannot hold (the shop's product link) stay as syncd has them
            value = schema.keep_uncarried(name, current, value, frozenset(fm.items))
        if (current is not None and value is not None and schema.is_list(name)
                and not (first and name in schema.DOCUMENT_LINES)
                and not (complete and fm is not None and fm.list == "replace")):
            # absence is not deletion: a member this system lacks stays, unless it owns the list
            value = schema.merge_lists(name, current, value)
        if name in held:      # under review: keep the field, add this candidate
            _add_candidate(batch, held[name], value, rec.source_time)
            continue
        if current == value:
            continue
        cur_ver = ent.versions.get(name) or [None, None, None]
        cur_system = cur_ver[0]
        rule = rule_for(batch.ms.conflicts, name)
        if fm is not None and fm.read_only and current is not None:
            rule = type(rule)(policy="owner", owner=cur_system)
        # the shadow holds what this system can hold of syncd's value (a lossy map's round trip: a
        # CRM's lines without the product link): the record is in step when it equals that
        in_step = (name not in ent.golden or current is None
                   or (name in sh_fields and (sh_fields[name] == current
                                              or sh_fields[name] == _held_there(batch, em, name, current)))
                   or (first and _blank(current)))     # first contact: a blank is filled, never kept
        owner_holds = (rule.policy == "owner" and rule.owner != system
                       and _owner_value(batch, ent.id, rule.owner, name) is not None)
        if owner_holds:
            # the owner has a value for its field: another system's edit never replaces it
            cur = Candidate(rule.owner or "?", current, _parse_time(cur_ver[1]))
            inc = Candidate(system, value, rec.source_time)
            _record_conflict(batch, ent, name, "owner", [cur, inc], rule.owner)
            batch.counts.conflicts += 1
            winner: str | None = rule.owner
        elif in_step:
            winner = system
        elif first and rule.policy == "newest" and not (schema.is_list(name)
                                                        and name not in schema.DOCUMENT_LINES):
            # (a merged list holds both sides' members: it is taken as it is)
            cur = Candidate(cur_system or "?", current, _parse_time(cur_ver[1]))
            inc = Candidate(system, value, rec.source_time)
            winner = cur_system
            _record_conflict(batch, ent, name, "first contact", [cur, inc], winner or "?")
            batch.counts.conflicts += 1
        else:
            cur = Candidate(cur_system or "?", current, _parse_time(cur_ver[1]))
            inc = Candidate(system, value, rec.source_time)
            decision = decide(rule, cur, inc)
            winner = decision.winner
            _record_conflict(batch, ent, name, rule.policy, [cur, inc], decision.winner)
            batch.counts.conflicts += 1
        if winner == system:
            ent.golden[name] = value
            ent.versions[name] = [system, iso(rec.source_time) or batch.now_iso, batch.run_id]
            applied[name] = value
    return applied


def _owner_value(batch: Batch, eid: str, owner: str | None, name: str) -> Any:
    if owner is None:
        return None
    raw = batch.conn.execute(select(t.shadows.c.fields).where(t.shadows.c.entity_id == eid,
                                                             t.shadows.c.system == owner)).scalar()
    return schema.decode(raw).get(name) if raw else None


def _record_conflict(batch: Batch, ent: Ent, name: str, policy: str, cands: list[Candidate],
                     winner: str | None) -> None:
    payload = json.dumps([{"system": c.system, "value": schema.encode_value(name, c.value),
                           "source_time": iso(c.source_time)} for c in cands], ensure_ascii=False)
    batch.conn.execute(insert(t.conflicts).values(
        entity_id=ent.id, field=name, policy=policy, candidates=payload,
        status="open" if winner is None else "auto", winner=winner, created_at=batch.now,
        resolved_at=None if winner is None else batch.now))
    log.info("conflict", entity_id=ent.id, field=name, policy=policy, winner=winner)


def _add_candidate(batch: Batch, conflict_id: int, value: Any, source_time: dt.datetime | None) -> None:
    row = batch.conn.execute(select(t.conflicts.c.candidates, t.conflicts.c.field)
                             .where(t.conflicts.c.id == conflict_id)).first()
    if row is None:
        return
    cands = json.loads(row.candidates)
    cands = [c for c in cands if c["system"] != batch.system] + [
        {"system": batch.system, "value": schema.encode_value(row.field, value), "source_time": iso(source_time)}]
    batch.conn.execute(update(t.conflicts).where(t.conflicts.c.id == conflict_id)
                       .values(candidates=json.dumps(cands, ensure_ascii=False)))


def _blank(v: Any) -> bool:
    """No value: None, an empty text or list (zero is a value)."""
    return v is None or v == "" or (isinstance(v, (list, tuple, dict, set)) and not v)


def _parse_time(s: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(s) if s else None
