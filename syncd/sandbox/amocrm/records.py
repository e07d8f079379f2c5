"""Leads, contacts and companies: checking a write, applying it, the record's HAL view, list filters
and ``leads/complex``. The caller holds ``Account.lock``.

A write is all or nothing: one refused item refuses the whole request (400 with an entry per refused
item), nothing is saved.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from typing import Any

from syncd.sandbox.amocrm.state import LOST, WON, Account, CustomField, invalid, issue, problem, self_link

FIELDS = {
    "leads": ("id", "name", "price", "responsible_user_id", "group_id", "status_id", "pipeline_id",
              "loss_reason_id", "created_by", "updated_by", "created_at", "updated_at", "closed_at",
              "closest_task_at", "is_deleted", "custom_fields_values", "score", "account_id", "labor_cost"),
    "contacts": ("id", "name", "first_name", "last_name", "responsible_user_id", "group_id", "created_by",
                 "updated_by", "created_at", "updated_at", "closest_task_at", "is_deleted", "is_unsorted",
                 "custom_fields_values", "account_id"),
    "companies": ("id", "name", "responsible_user_id", "group_id", "created_by", "updated_by", "created_at",
                  "updated_at", "closest_task_at", "is_deleted", "custom_fields_values", "account_id"),
}
MAX_BATCH = 250
MAX_COMPLEX = 50                   # the docs ask for at most 50 leads per /leads/complex (unconfirmed limit)
_TYPE_INT, _TYPE_STR = "This value should be of type int.", "This value should be of type string."
_TYPE_ARRAY = "This value should be of type array."
_CHOICE = "The value you selected is not a valid choice."

Rec = dict[str, Any]
Issues = list[dict[str, str]]
Done = list[tuple[str, Rec]]       # (request_id, record) per item, in order


@dataclass
class Event:
    """A change that webhooks report: entity type, action (add, update, status, responsible, delete,
    note), a snapshot of the record (or {"note": …}) and extras such as old_status_id."""

    etype: str
    action: str
    data: Rec
    extra: dict[str, Any] = field(default_factory=dict)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_ts(v: Any) -> bool:
    """Unix times: ints, and floats too, truncated (amocrm-api sends ``datetime.timestamp()``)."""
    return is_int(v) or (isinstance(v, float) and math.isfinite(v) and v >= 0)


def request_id(item: Any, index: int) -> str:
    rid = item.get("request_id") if isinstance(item, dict) else None
    return str(index) if rid is None else str(rid)


def batch(items: Any, limit: int = MAX_BATCH) -> list[Any]:
    if not isinstance(items, list) or not items:
        raise problem(400, "Request body must be a non-empty JSON array")
    if len(items) > limit:
        raise problem(400, f"Too many entities in one request: at most {limit}")
    return items


def values_of(v: Any) -> list[Any]:
    """A query parameter's values: ``a[]=1&a[]=2`` and ``a[0]=1`` arrive as {"0": …}, ``a=1`` as one."""
    return list(v.values()) if isinstance(v, dict) else v if isinstance(v, list) else [v]


def filter_of(params: dict[str, Any]) -> dict[str, Any]:
    flt = params.get("filter")
    return flt if isinstance(flt, dict) else {}


# -- checking one item ---------------------------------------------------------------------------------
def check(acc: Account, etype: str, item: Any, current: Rec | None = None) -> tuple[Rec, Issues]:
    """The changes an item asks for (plain fields; ``custom_fields_values`` as {field id: values};
    ``_tags``, ``_tags_to_add``, ``_tags_to_delete``, ``_links``) and the problems found in it."""
    if not isinstance(item, dict):
        return {}, [issue("InvalidType", "", _TYPE_ARRAY)]
    out: Rec = {}
    errs: Issues = []
    for k in ("name", "first_name", "last_name") if etype == "contacts" else ("name",):
        if item.get(k) is not None:
            if isinstance(item[k], str):
                out[k] = item[k]
            else:
                errs.append(issue("InvalidType", k, _TYPE_STR))
    for k in ("responsible_user_id", "created_by", "updated_by"):
        v = item.get(k)
        if v is None:
            continue
        if not is_int(v):
            errs.append(issue("InvalidType", k, _TYPE_INT))
        elif v in acc.users or (v == 0 and k != "responsible_user_id"):
            out[k] = v
        else:
            errs.append(issue("NotSupportedChoice", k, _CHOICE))
    for k in ("created_at", "updated_at") + (("closed_at",) if etype == "leads" else ()):
        if item.get(k) is not None:
            if is_ts(item[k]):
                out[k] = int(item[k])
            else:
                errs.append(issue("InvalidType", k, _TYPE_INT))
    if etype == "leads":
        for k in ("price", "loss_reason_id"):
            if item.get(k) is not None:
                if is_int(item[k]) and item[k] >= 0:
                    out[k] = item[k]
                else:
                    errs.append(issue("InvalidType", k, _TYPE_INT))
        _pipeline_status(acc, item, current, out, errs)
    if "custom_fields_values" in item:
        out["custom_fields_values"] = _check_fields(acc, etype, item["custom_fields_values"], errs)
    _check_tags(acc, etype, item, out, errs)
    _check_links(acc, etype, item, out, errs)
    return out, errs


def _pipeline_status(acc: Account, item: Rec, current: Rec | None, out: Rec, errs: Issues) -> None:
    pid, sid = item.get("pipeline_id"), item.get("status_id")
    if pid is None and sid is None:
        if current is None:
            main = acc.main_pipeline()
            out["pipeline_id"], out["status_id"] = main.id, main.first_status().id
        return
    for k, v in (("pipeline_id", pid), ("status_id", sid)):
        if v is not None and not is_int(v):
            errs.append(issue("InvalidType", k, _TYPE_INT))
            return
    if pid is not None:
        found = acc.pipelines.get(pid)
        if found is None:
            errs.append(issue("NotSupportedChoice", "pipeline_id", _CHOICE))
            return
        p = found
    elif current is not None:
        p = acc.pipelines[current["pipeline_id"]]
    else:   # a status alone names its pipeline (142/143, in every pipeline, mean the main one)
        p = next((q for q in acc.pipelines.values() if sid not in (WON, LOST) and q.status(sid)),
                 acc.main_pipeline())
    if sid is None:
        sid = current["status_id"] if current and current["pipeline_id"] == p.id else p.first_status().id
    elif p.status(sid) is None:
        errs.append(issue("NotSupportedChoice", "status_id", _CHOICE))
        return
    out["pipeline_id"], out["status_id"] = p.id, sid


def _check_fields(acc: Account, etype: str, raw: Any, errs: Issues) -> dict[int, list[Any]]:
    changes: dict[int, list[Any]] = {}
    if raw is None:
        return changes
    if not isinstance(raw, list):
        errs.append(issue("InvalidType", "custom_fields_values", _TYPE_ARRAY))
        return changes
    for i, entry in enumerate(raw):
        path = f"custom_fields_values.{i}"
        if not isinstance(entry, dict):
            errs.append(issue("InvalidType", path, _TYPE_ARRAY))
            continue
        f = acc.field(etype, field_id=entry.get("field_id"), code=entry.get("field_code"))
        if f is None:
            key = ".field_id" if entry.get("field_id") is not None else ".field_code"
            errs.append(issue("NotSupportedChoice", path + key, _CHOICE))
            continue
        values = entry.get("values")
        if values in (None, []):
            changes[f.id] = []               # null or no values clears the field
            continue
        if not isinstance(values, list):
            errs.append(issue("InvalidType", path + ".values", _TYPE_ARRAY))
            continue
        good = [c for j, v in enumerate(values)
                if (c := _value(f, v, f"{path}.values.{j}", errs)) is not None]
        if len(good) == len(values):
            changes[f.id] = good
    return changes


def _value(f: CustomField, v: Any, path: str, errs: Issues) -> Rec | None:
    if not isinstance(v, dict):
        errs.append(issue("InvalidType", path, _TYPE_ARRAY))
        return None
    val = v.get("value")
    if f.type == "multitext":           # PHONE/EMAIL: an enum code (WORK by default) on every value
        e = f.enum(v.get("enum_id"), v.get("enum_code") or ("WORK" if v.get("enum_id") is None else None))
        if e is None:
            key = ".enum_id" if "enum_id" in v else ".enum_code"
            errs.append(issue("NotSupportedChoice", path + key, _CHOICE))
        elif not isinstance(val, str) or not val.strip():
            errs.append(issue("InvalidType", path + ".value", _TYPE_STR))
        else:
            return {"value": val, "enum_id": e.id, "enum_code": e.value}
        return None
    if f.type in ("select", "multiselect", "radiobutton"):
        e = f.enum(v.get("enum_id"), val)
        if e is None:
            key = ".enum_id" if "enum_id" in v else ".value"
            errs.append(issue("NotSupportedChoice", path + key, _CHOICE))
            return None
        return {"value": e.value, "enum_id": e.id}
    if f.type == "checkbox":
        ok = isinstance(val, bool)
    elif f.type in ("date", "date_time", "birthday"):
        ok = is_ts(val)
        val = int(val) if ok else val  # type: ignore[arg-type]
    elif f.type == "numeric":
        ok = (isinstance(val, (int, float)) and not isinstance(val, bool)) or (
            isinstance(val, str) and re.fullmatch(r"-?\d+(\.\d+)?", val.strip()) is not None)
    else:                               # text, textarea, url, streetaddress: numbers are taken as text
        ok = isinstance(val, (str, int, float)) and not isinstance(val, bool)
        val = str(val) if ok else val
    if not ok:
        errs.append(issue("InvalidType", path + ".value", f"This value is not valid for a {f.type} field."))
        return None
    return {"value": val}


def _check_tags(acc: Account, etype: str, item: Rec, out: Rec, errs: Issues) -> None:
    emb = item["_embedded"] if isinstance(item.get("_embedded"), dict) else {}
    by_id = {v: k for k, v in acc.tags[etype].items()}
    for key, path, raw in (("tags_to_add", "tags_to_add", item.get("tags_to_add")),
                           ("tags_to_delete", "tags_to_delete", item.get("tags_to_delete")),
                           ("tags", "_embedded.tags", emb.get("tags"))):
        if raw is None:
            continue
        names = []
        for i, t in enumerate(raw if isinstance(raw, list) else [None]):
            name = (t.get("name") or by_id.get(t.get("id", 0))) if isinstance(t, dict) else None
            if isinstance(name, str) and name:
                names.append(name)
            else:
                errs.append(issue("NotSupportedChoice", f"{path}.{i}", "Unknown tag"))
        out["_" + key] = names


def _check_links(acc: Account, etype: str, item: Rec, out: Rec, errs: Issues) -> None:
    """``_embedded.contacts`` / ``_embedded.companies`` of a write: existing records to link."""
    emb = item.get("_embedded")
    if not isinstance(emb, dict):
        return
    for other in ("contacts", "companies"):
        refs = emb.get(other)
        if other == etype or refs is None:
            continue
        for i, ref in enumerate(refs if isinstance(refs, list) else [None]):
            rid = ref.get("id") if isinstance(ref, dict) else None
            if is_int(rid) and rid in acc.records[other]:
                out.setdefault("_links", []).append((other, rid, bool(ref.get("is_main"))))
            else:
                errs.append(issue("NotFound", f"_embedded.{other}.{i}.id", "Entity not found"))


# -- applying -------------------------------------------------------------------------------------------
def _new(acc: Account, etype: str, user_id: int) -> Rec:
    now = acc.ts()
    rec: Rec = {"id": acc.next_id(etype), "name": "", "responsible_user_id": user_id, "group_id": 0,
                "created_by": user_id, "updated_by": user_id, "created_at": now, "updated_at": now,
                "is_deleted": False, "custom_fields_values": None, "tags": []}
    if etype == "leads":
        rec.update(price=0, status_id=None, pipeline_id=None, loss_reason_id=None, closed_at=None, score=None,
                   labor_cost=None)
    if etype == "contacts":
        rec.update(first_name="", last_name="", is_unsorted=False)
    return rec


def _apply(acc: Account, etype: str, rec: Rec, change: Rec, user_id: int) -> list[Event]:
    """Apply checked changes; the events to report (none when nothing changed)."""
    before = copy.deepcopy(rec)
    rec.update({k: v for k, v in change.items() if not k.startswith("_") and k != "custom_fields_values"})
    if change.get("custom_fields_values"):
        cur = {e["field_id"]: e for e in rec["custom_fields_values"] or []}
        for fid, vals in change["custom_fields_values"].items():
            f = acc.fields[fid]
            cur[fid] = {"field_id": fid, "field_name": f.name, "field_code": f.code, "field_type": f.type,
                        "values": vals}
            if not vals:
                del cur[fid]
        rec["custom_fields_values"] = list(cur.values()) or None
    tags = change["_tags"] if "_tags" in change else _tag_names(acc, etype, rec)
    tags = [t for t in tags + change.get("_tags_to_add", []) if t not in change.get("_tags_to_delete", [])]
    rec["tags"] = [acc.tag_id(etype, n) for n in dict.fromkeys(tags)]
    if etype == "contacts" and "name" not in change and ("first_name" in change or "last_name" in change):
        rec["name"] = f"{rec['first_name']} {rec['last_name']}".strip()
    if etype == "leads":                # closing sets closed_at, reopening clears it
        if rec["status_id"] in (WON, LOST) and before["status_id"] not in (WON, LOST):
            rec["closed_at"] = change.get("closed_at", acc.ts())
        elif rec["status_id"] not in (WON, LOST):
            rec["closed_at"] = None
    for other, oid, main in change.get("_links", []):
        link(acc, (etype, rec["id"]), (other, oid), main=main)
    if rec == before and not change.get("_links"):
        return []
    if "updated_at" not in change:
        rec["updated_at"] = acc.ts()
    if "updated_by" not in change:
        rec["updated_by"] = user_id
    events = [Event(etype, "update", copy.deepcopy(rec))]
    if etype == "leads" and (rec["status_id"], rec["pipeline_id"]) != (before["status_id"],
                                                                        before["pipeline_id"]):
        events.append(Event(etype, "status", copy.deepcopy(rec), {"old_status_id": before["status_id"],
                                                                   "old_pipeline_id": before["pipeline_id"]}))
    if rec["responsible_user_id"] != before["responsible_user_id"]:
        events.append(Event(etype, "responsible", copy.deepcopy(rec),
                            {"old_responsible_user_id": before["responsible_user_id"]}))
    return events


def link(acc: Account, a: tuple[str, int], b: tuple[str, int], *, main: bool = False) -> None:
    """Link two records. A lead's first contact becomes its main contact; `main` moves the mark."""
    pair = {a[0]: a, b[0]: b}
    lead, contact = pair.get("leads"), pair.get("contacts")
    if lead is None or contact is None:
        acc.link(a, b)
        return
    others = [(cid, m) for cid, m in acc.linked(lead, "contacts") if cid != contact[1]]
    if main:
        for cid, _ in others:
            acc.link(lead, ("contacts", cid), {"main_contact": False})
    acc.link(lead, contact, {"main_contact": main or not any(m.get("main_contact") for _, m in others)})


def _tag_names(acc: Account, etype: str, rec: Rec) -> list[str]:
    by_id = {v: k for k, v in acc.tags[etype].items()}
    return [by_id[t] for t in rec.get("tags", [])]


def create(acc: Account, etype: str, items: Any, user_id: int) -> tuple[Done, list[Event]]:
    """``POST /api/v4/{etype}``: the new records with their request_ids, and the events."""
    checked, errors = [], {}
    for i, item in enumerate(batch(items)):
        change, errs = check(acc, etype, item)
        if errs:
            errors[request_id(item, i)] = errs
        checked.append((request_id(item, i), change))
    if errors:
        raise invalid(errors)
    out: Done = []
    for rid, change in checked:
        rec = _new(acc, etype, user_id)
        _apply(acc, etype, rec, change, user_id)
        acc.records[etype][rec["id"]] = rec
        out.append((rid, rec))
    return out, [Event(etype, "add", copy.deepcopy(rec)) for _, rec in out]


def update(acc: Account, etype: str, items: Any, user_id: int, *,
           one_id: int | None = None) -> tuple[Done, list[Event]]:
    """``PATCH /api/v4/{etype}`` (items carry ids) or, with `one_id`, ``PATCH /api/v4/{etype}/{id}``."""
    checked, errors = [], {}
    for i, item in enumerate(batch(items)):
        rid = request_id(item, i)
        wanted = one_id if one_id is not None else item.get("id") if isinstance(item, dict) else None
        rec = acc.records[etype].get(wanted) if is_int(wanted) else None   # type: ignore[arg-type]
        if rec is None:
            errors[rid] = [issue("NotFound", "id", "Entity not found")]
            continue
        change, errs = check(acc, etype, item, rec)
        if errs:
            errors[rid] = errs
        checked.append((rid, rec, change))
    if errors:
        raise invalid(errors)
    out: Done = []
    events: list[Event] = []
    for rid, rec, change in checked:
        events += _apply(acc, etype, rec, change, user_id)
        out.append((rid, rec))
    return out, events


def delete(acc: Account, etype: str, rid: int) -> list[Event]:
    """A record deleted in the UI (API v4 has no delete for leads/contacts/companies)."""
    rec = acc.records[etype].pop(rid, None)
    if rec is None:
        return []
    for other in list(acc.links.get((etype, rid), {})):
        acc.unlink((etype, rid), other)
    return [Event(etype, "delete", rec)]


def _complex_part(acc: Account, other: str, given: Any, errs: Issues) -> int | Rec | None:
    """The contact or company of a complex lead: an existing id, the changes of a new one, or None."""
    if not isinstance(given, list) or len(given) > 1:
        errs.append(issue("InvalidType", f"_embedded.{other}", "At most one entity is allowed"))
        return None
    if not given:
        return None
    sub = given[0]
    if isinstance(sub, dict) and sub.get("id") is not None:
        if sub["id"] in acc.records[other]:
            return int(sub["id"])
        errs.append(issue("NotFound", f"_embedded.{other}.0.id", "Entity not found"))
        return None
    change, sub_errs = check(acc, other, sub)
    errs += [{**e, "path": f"_embedded.{other}.0.{e['path']}".rstrip(".")} for e in sub_errs]
    return change


def complex_add(acc: Account, items: Any, user_id: int) -> tuple[list[Rec], list[Event]]:
    """``POST /api/v4/leads/complex``: each lead with at most one new (or existing, by id) contact and
    company in ``_embedded``; all of them linked together."""
    plans, errors = [], {}
    for i, item in enumerate(batch(items, MAX_COMPLEX)):
        emb = dict(item.get("_embedded") or {}) if isinstance(item, dict) else {}
        errs: Issues = []
        parts = {other: _complex_part(acc, other, emb.pop(other, None) or [], errs)
                 for other in ("contacts", "companies")}
        lead = {**item, "_embedded": emb} if isinstance(item, dict) else item
        change, lead_errs = check(acc, "leads", lead)
        if errs + lead_errs:
            errors[request_id(item, i)] = errs + lead_errs
        plans.append((request_id(item, i), change, parts))
    if errors:
        raise invalid(errors)
    results, events = [], []
    for rid, change, parts in plans:
        ids: dict[str, int | None] = {}
        for other in ("companies", "contacts"):
            part = parts[other]
            if isinstance(part, dict):
                rec = _new(acc, other, user_id)
                _apply(acc, other, rec, part, user_id)
                acc.records[other][rec["id"]] = rec
                events.append(Event(other, "add", copy.deepcopy(rec)))
                part = rec["id"]
            ids[other] = part
        links = [(other, ids[other], other == "contacts") for other in ("contacts", "companies")
                 if ids[other]]
        rec = _new(acc, "leads", user_id)
        _apply(acc, "leads", rec, {**change, "_links": change.get("_links", []) + links}, user_id)
        acc.records["leads"][rec["id"]] = rec
        if ids["contacts"] and ids["companies"]:
            acc.link(("contacts", ids["contacts"]), ("companies", ids["companies"]))
        events.append(Event("leads", "add", copy.deepcopy(rec)))
        results.append({"id": rec["id"], "contact_id": ids["contacts"], "company_id": ids["companies"],
                        "request_id": [rid], "merged": False})
    return results, events


# -- reading --------------------------------------------------------------------------------------------
def view(acc: Account, etype: str, rec: Rec, base: str, with_: set[str] | frozenset[str] = frozenset()
         ) -> Rec:
    """A record as the API shows it: ``_embedded`` has tags, a lead's companies (and contacts with
    ``with=contacts``), a contact's companies (and leads with ``with=leads``)."""
    d = {k: rec.get(k) for k in FIELDS[etype]}
    d["account_id"] = acc.id
    d["closest_task_at"] = min((t["complete_till"] for t in acc.tasks.values() if not t["is_completed"]
                                and (t["entity_type"], t["entity_id"]) == (etype, rec["id"])), default=None)
    d["_links"] = self_link(f"{base}/{etype}/{rec['id']}")
    by_id = {v: k for k, v in acc.tags[etype].items()}
    emb: Rec = {"tags": [{"id": t, "name": by_id[t], "color": None} for t in rec["tags"]]}
    shown = {"leads": {"companies"} | ({"contacts"} & with_), "contacts": {"companies"} | ({"leads"} & with_),
             "companies": {"contacts", "leads"} & with_}[etype]
    for other in sorted(shown):
        refs = []
        for oid, meta in acc.linked((etype, rec["id"]), other):
            ref: Rec = {"id": oid}
            if etype == "leads" and other == "contacts":
                ref["is_main"] = bool(meta.get("main_contact"))
            ref["_links"] = self_link(f"{base}/{other}/{oid}")
            refs.append(ref)
        emb[other] = refs
    d["_embedded"] = emb
    return d


def _in_range(value: Any, cond: Any) -> bool:
    if isinstance(cond, dict) and ("from" in cond or "to" in cond):
        lo, hi = cond.get("from") or None, cond.get("to") or None
        return value is not None and (lo is None or value >= int(lo)) and (hi is None or value <= int(hi))
    return value in {int(x) for x in values_of(cond)}


def matches_query(rec: Rec, query: str) -> bool:
    """``query=``: a substring of the name or of any field value; a query of digits also finds phone
    numbers written with other characters (+7 (916) …)."""
    q = query.strip().lower()
    texts = [str(rec.get(k) or "") for k in ("name", "first_name", "last_name")]
    texts += [str(v.get("value")) for e in rec.get("custom_fields_values") or [] for v in e["values"]]
    digits = re.sub(r"\D", "", q)
    return any(q in t.lower() for t in texts) or (
        len(digits) >= 5 and re.fullmatch(r"[\d\s()+\-]+", q) is not None
        and any(digits in re.sub(r"\D", "", t) for t in texts))


def select(acc: Account, etype: str, params: dict[str, Any]) -> list[Rec]:
    """Records matching ``filter[...]`` and ``query``, in ``order[...]`` (default: by id, ascending)."""
    rows = list(acc.records[etype].values())
    try:
        for key, cond in filter_of(params).items():
            if key in ("id", "responsible_user_id", "created_by", "updated_by", "pipeline_id", "created_at",
                       "updated_at", "closed_at", "price"):
                rows = [r for r in rows if _in_range(r.get(key), cond)]
            elif key == "name":
                rows = [r for r in rows if r["name"] in values_of(cond)]
            elif key == "statuses" and etype == "leads":
                pairs = {(int(c.get("pipeline_id", 0)), int(c.get("status_id", 0)))
                         for c in values_of(cond) if isinstance(c, dict)}
                rows = [r for r in rows if (r["pipeline_id"], r["status_id"]) in pairs]
    except ValueError:
        raise problem(400, "Invalid filter value") from None
    if params.get("query") not in (None, ""):
        rows = [r for r in rows if matches_query(r, str(params["query"]))]
    return order(rows, params, ("id", "created_at", "updated_at"))


def order(rows: list[Rec], params: dict[str, Any], allowed: tuple[str, ...]) -> list[Rec]:
    spec = params.get("order")
    spec = spec if isinstance(spec, dict) else {}
    key, direction = next(((k, str(v).lower()) for k, v in spec.items() if k in allowed), ("id", "asc"))
    return sorted(rows, key=lambda r: (r.get(key) or 0, r["id"]), reverse=direction == "desc")
