"""A record's trace: its story across systems, read from the store.

`find(store, mapper, query)` finds the entities a person means — ``crm:deal:15`` (a system, that
system's kind or the canonical type, its id), an order number, a phone in any spelling, an
e-mail, an ИНН, or any system's id — and `trace(...)` tells, for each: its ids in every system,
each change with its source, time and run, the decisions (conflicts and their policy, identity
reviews, quarantine, rule effects) and the writes planned, sent and confirmed with their results.

Read-only (one read transaction); served as JSON at ``GET /api/trace?q=`` (login required: it shows
customer data) and printed by ``syncd trace``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from sqlalchemy import or_, select
from sqlalchemy.engine import Connection

from syncd import schema
from syncd.keys.match import inn_kpp_key, normalize_email, normalize_phone
from syncd.mapping import Mapper
from syncd.store import Store
from syncd.store import tables as t

LIMIT = 20            # entities a query may name


@dataclass
class Event:
    at: dt.datetime | None
    kind: str                          # change | decision | write | hold | waiting
    system: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat() if self.at else None, "kind": self.kind, "system": self.system,
                "summary": self.summary, "details": self.details}


def _aware(v: dt.datetime | None) -> dt.datetime | None:
    return v.replace(tzinfo=dt.timezone.utc) if v is not None and v.tzinfo is None else v


def find(conn: Connection, mapper: Mapper, query: str, *, region: str = "RU") -> list[str]:
    """Entity ids a query names (most specific reading first)."""
    q = query.strip()
    if not q:
        return []
    out: list[str] = []

    def add(ids: Any) -> None:
        for (eid,) in ids:
            if eid not in out:
                out.append(eid)

    parts = q.split(":")
    if len(parts) >= 3:
        system, kind, ext = parts[0], parts[1], ":".join(parts[2:])
        em = mapper.entity_map(system, kind)
        etype = em.entity if em is not None else kind
        add(conn.execute(select(t.bindings.c.entity_id).where(
            t.bindings.c.system == system, t.bindings.c.type == etype, t.bindings.c.external_id == ext)))
        if out:
            return out
    if len(q) == 32 and all(c in "0123456789abcdef" for c in q):
        add(conn.execute(select(t.entities.c.id).where(t.entities.c.id == q)))
    keys = set()
    e = normalize_email(q)
    if e:
        keys.add("email:" + e)
    p = normalize_phone(q, region)
    if p and sum(c.isdigit() for c in q) >= 7:
        keys.add("phone:" + p)
    digits = q.replace(" ", "")
    if digits.isdigit() and len(digits) in (10, 12):
        for k in (inn_kpp_key(digits), ):
            if k:
                keys.add(k)
        # a company's key carries its КПП: find by the ИНН part
        add(conn.execute(select(t.match_keys.c.entity_id).where(t.match_keys.c.key.like(f"inn_kpp:{digits}/%"))))
    if keys:
        add(conn.execute(select(t.match_keys.c.entity_id).where(t.match_keys.c.key.in_(sorted(keys)))))
    # any system's id, and an order's number
    add(conn.execute(select(t.bindings.c.entity_id).where(t.bindings.c.external_id == q).limit(LIMIT)))
    number = json.dumps(q, ensure_ascii=False)
    add(conn.execute(select(t.entities.c.id).where(
        t.entities.c.type == "order", t.entities.c.fields.like(f'%"order.number":{number}%')).limit(LIMIT)))
    return out[:LIMIT]


def _changed(text: str) -> dict[str, Any]:
    try:
        return schema.jsonable(schema.decode(text))
    except Exception:  # noqa: BLE001 - a trace shows what is there, even a field the schema dropped
        return json.loads(text) if text else {}


# why a record was bound (bindings.how, BINDING_HOW); anything else is the match key that matched
HOW = {"created": "syncd created it there", "found": "found there by the key syncd stamps (a create whose "
       "answer was lost, or a previous install's)", "read": "read there as a new record",
       "stamp": "adopted: it carries syncd's key or names its source record (ORIGINATOR_ID/ORIGIN_ID)",
       "origin": "the record it was made from", "link": "named by a link from another record",
       "review": "a person decided"}
# what a waiting write waits for (outbox.blocked_why)
WAITS = {"create": "until {on} exists in {system}", "read": "until syncd has read {system}'s {on} once through "
         "(a record made there before is bound, not made twice)", "held": "for a person's decision on {on}",
         "dead": "until the dead letter of {on} is replayed", "record": "for {on}"}
SHOWN = 6             # changed fields a summary names with their values
WIDE = 40             # characters of a value in a summary


def kind_of(mapper: Mapper | None, system: str, etype: str) -> str:
    """What a system calls a canonical record (the CRM's order is a deal)."""
    if mapper is None:
        return etype
    em = mapper.push_map(system, etype) or next((m for m in mapper.ms.maps if m.system == system
                                                 and m.entity == etype), None)
    return em.kind if em is not None else etype


def _short(v: Any) -> str:
    text = "—" if v in (None, "", [], {}) else (v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
    return text if len(text) <= WIDE else text[:WIDE - 1] + "…"


def trace_entity(conn: Connection, eid: str, *, link: Callable[[str, str, str], str | None] | None = None,
                 mapper: Mapper | None = None) -> dict[str, Any] | None:
    ent = conn.execute(select(t.entities).where(t.entities.c.id == eid)).mappings().first()
    if ent is None:
        return None
    etype = ent["type"]
    binds = conn.execute(select(t.bindings).where(t.bindings.c.entity_id == eid)
                         .order_by(t.bindings.c.created_at)).mappings().all()
    ids: dict[str, str] = {}
    aliases: dict[str, list[str]] = {}
    for b in binds:
        if b["alias"] or b["system"] in ids:
            aliases.setdefault(b["system"], []).append(b["external_id"])
        else:
            ids[b["system"]] = b["external_id"]
    events: list[Event] = []
    for b in binds:
        how = b["how"] or ""
        why = HOW.get(how, f"matched by {how}" if how else "")
        events.append(Event(_aware(b["created_at"]), "decision", b["system"],
                            f"bound to {b['system']} {kind_of(mapper, b['system'], b['type'])} {b['external_id']}"
                            + (" (alias)" if b["alias"] else "") + (f": {why}" if why else ""),
                            {"external_id": b["external_id"], "how": how or None}))
    # each change with the value before it: for a read or a rule, as syncd held it; for a write, as
    # that system last held it (read from it or written to it)
    known: dict[str, Any] = {}
    held_by: dict[str, dict[str, Any]] = {}
    for r in conn.execute(select(t.changelog).where(t.changelog.c.entity_id == eid).order_by(t.changelog.c.id)).mappings():
        fields = _changed(r["fields"])
        origin = r["origin"]
        verb = {"pull": "read from", "push": "written to", "rules": "set by rules", "review": "settled by a person"
                }.get(origin, origin)
        there = held_by.setdefault(r["system"], {})
        base = there if origin == "push" else known
        changes = {k: [base.get(k), v] for k, v in sorted(fields.items())}
        moved = [k for k, (a, b) in changes.items() if a != b]
        said = ", ".join(f"{k} {_short(changes[k][0])} → {_short(changes[k][1])}" for k in moved[:SHOWN])
        if len(moved) > SHOWN:
            said += f" and {len(moved) - SHOWN} more"
        if len(changes) > len(moved):
            said += ("; " if said else "") + f"{len(changes) - len(moved)} field(s) as before"
        said = said or "(no field)"
        if origin in ("pull", "push"):
            there.update(fields)
        if origin != "push":
            known.update(fields)
        events.append(Event(_aware(r["observed_at"]), "write" if origin == "push" else "change", r["system"],
                            f"{verb} {r['system']}: {said}" if origin in ("pull", "push") else f"{verb}: {said}",
                            {"fields": fields, "changes": changes, "source_version": r["source_version"],
                             "source_time": _aware(r["source_time"]).isoformat() if r["source_time"] else None,
                             "run": r["run_id"], "origin": origin}))
    for r in conn.execute(select(t.conflicts).where(t.conflicts.c.entity_id == eid).order_by(t.conflicts.c.id)).mappings():
        cands = json.loads(r["candidates"])
        how = f"won by {r['winner']}" if r["winner"] else "held for a person"
        events.append(Event(_aware(r["created_at"]), "decision", r["winner"] or "",
                            f"conflict on {r['field']} ({r['policy']}): {how}" + (
                                " — open" if r["status"] == "open" else ""),
                            {"conflict": r["id"], "field": r["field"], "policy": r["policy"], "status": r["status"],
                             "candidates": cands}))
    for r in conn.execute(select(t.review).where(t.review.c.entity_id == eid).order_by(t.review.c.id)).mappings():
        events.append(Event(_aware(r["created_at"]), "hold", r["system"],
                            f"identity review: {r['reason']}" + (" — open" if r["status"] == "open" else " — settled"),
                            {"review": r["id"], "status": r["status"], "candidates": json.loads(r["candidates"])}))
    keys = [(b["system"], b["external_id"]) for b in binds]
    qcond = or_(t.quarantine.c.entity_id == eid, *[
        (t.quarantine.c.system == s) & (t.quarantine.c.external_id == x) for s, x in keys]) if keys else (
        t.quarantine.c.entity_id == eid)
    for r in conn.execute(select(t.quarantine).where(qcond).order_by(t.quarantine.c.id)).mappings():
        events.append(Event(_aware(r["created_at"]), "hold", r["system"],
                            f"quarantined ({r['status']}): {r['reason']}",
                            {"quarantine": r["id"], "status": r["status"], "kind": r["kind"]}))
    for r in conn.execute(select(t.outbox).where(t.outbox.c.entity_id == eid).order_by(t.outbox.c.id)).mappings():
        planned = Event(_aware(r["created_at"]), "write", r["system"],
                        f"write to {r['system']} planned ({r['origin'] or 'change'})",
                        {"row": r["id"], "status": r["status"], "changes_coalesced": r["gen"]})
        events.append(planned)
        state = {"done": "confirmed", "dead": "a dead letter", "blocked": "waiting", "pending": "queued",
                 "sending": "being sent"}.get(r["status"], r["status"])
        if r["status"] != "pending" or r["attempts"]:
            note = f"; the last one failed: {r['last_error']}" if r["last_error"] else ""
            if r["status"] == "blocked" and r["blocked_why"]:
                on = r["blocked_on"] or ""
                if on and r["blocked_why"] in ("create", "held", "dead", "record"):
                    other = conn.execute(select(t.entities.c.type).where(t.entities.c.id == on)).scalar()
                    on = f"{kind_of(mapper, r['system'], other)} {on}" if other else on
                note += "; waiting " + WAITS.get(r["blocked_why"], "for {on}").format(on=on, system=r["system"])
            events.append(Event(_aware(r["updated_at"]), "write", r["system"],
                                f"write to {r['system']} {state} after {r['attempts']} attempt(s){note}",
                                {"row": r["id"], "status": r["status"], "attempts": r["attempts"],
                                 "sent": _changed(r["payload"]) if r["status"] == "done" else None,
                                 "blocked_on": r["blocked_on"], "blocked_why": r["blocked_why"],
                                 "key": r["external_key"]}))
    events.sort(key=lambda e: (e.at or dt.datetime.min.replace(tzinfo=dt.timezone.utc)))
    fields = schema.jsonable(schema.decode(ent["fields"]))
    # what it still waits for: a field the system syncd created the record in owns and fills itself
    # (the number a shop gives the order syncd uploaded: read-only there, `owner` in the conflicts),
    # not reported yet
    for b in binds:
        if mapper is None or b["alias"] or b["how"] != "created":
            continue
        em = mapper.push_map(b["system"], etype)
        if em is None:
            continue
        from syncd.pipeline import resolve

        owed = sorted(n for n, fm in em.fields.items() if fm.direction == "pull" and fields.get(n) in (None, "", [])
                      and resolve.rule_for(mapper.ms.conflicts, n).owner == b["system"])
        if owed:
            events.append(Event(None, "waiting", b["system"],
                                f"waiting for {b['system']} to report {', '.join(owed)} (it fills them in the "
                                f"{kind_of(mapper, b['system'], etype)} syncd created there; they come with its "
                                "next export)", {"fields": owed}))
    return {"entity_id": eid, "type": ent["type"], "hold": ent["hold"], "merged_into": ent["merged_into"],
            "fields": fields, "ids": ids, "aliases": aliases,
            "kinds": {s: kind_of(mapper, s, etype) for s in ids},
            "links": {s: (link(s, ent["type"], x) if link else None) for s, x in ids.items()},
            "events": [e.as_dict() for e in events]}


def trace(store: Store, mapper: Mapper, query: str, *, link: Callable[[str, str, str], str | None] | None = None,
          region: str = "RU") -> dict[str, Any]:
    """The story of every record a query names (JSON-ready)."""
    with store.read() as conn:
        ids = find(conn, mapper, query, region=region)
        records = [r for r in (trace_entity(conn, eid, link=link, mapper=mapper) for eid in ids) if r is not None]
    return {"query": query, "records": records}


def record_links(connectors: Mapping[str, Any], mapper: Mapper) -> Callable[[str, str, str], str | None]:
    """A record's address in its system's UI, where its connector knows one (`record_url`)."""

    def link(system: str, etype: str, ext: str) -> str | None:
        conn = connectors.get(system)
        fn = getattr(conn, "record_url", None)
        em = mapper.push_map(system, etype) or next((m for m in mapper.ms.maps if m.system == system
                                                     and m.entity == etype), None)
        if fn is None or em is None:
            return None
        try:
            return fn(em.kind, ext)
        except Exception:  # noqa: BLE001 - a link is a convenience
            return None

    return link


def api(rt: Any, query: str) -> dict[str, Any]:
    """What the daemon's `/api/trace?q=` answers (its status page renders it)."""
    return trace(rt.store, rt.mapper, query, link=record_links(rt.connectors, rt.mapper), region=rt.mapper.ms.region)


def local_time(at: str | None, zone: str) -> str:
    """An event's time in the configured zone, with the zone's name ("2026-12-07 17:08:52 MSK")."""
    if not at:
        return ""
    from zoneinfo import ZoneInfo

    return dt.datetime.fromisoformat(at).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


__all__ = ["find", "trace", "trace_entity", "record_links", "api", "Event", "kind_of", "local_time"]
