"""Notes of leads, contacts and companies, and tasks. The caller holds ``Account.lock``."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from syncd.sandbox.amocrm.records import (Done, Event, Issues, Rec, batch, filter_of, is_int, is_ts, order,
                                          request_id, values_of)
from syncd.sandbox.amocrm.state import ENTITY_TYPES, Account, invalid, issue, self_link

NOTE_TYPES = ("common", "call_in", "call_out", "service_message", "extended_service_message",
              "message_cashier", "geolocation", "sms_in", "sms_out", "attachment", "invoice_paid")
TASK_TYPES = (1, 2)                 # 1 "Связаться", 2 "Встреча"; account task types are not modelled
_TASK_FIELDS = ("id", "created_by", "updated_by", "created_at", "updated_at", "responsible_user_id",
                "group_id", "entity_id", "entity_type", "duration", "is_completed", "task_type_id", "text",
                "result", "complete_till", "account_id")
_CHOICE = "The value you selected is not a valid choice."
_BLANK = "This value should not be blank."


def _check_note(acc: Account, etype: str, item: Any, entity_id: int | None) -> Issues:
    if not isinstance(item, dict):
        return [issue("InvalidType", "", "This value should be of type array.")]
    errs = []
    eid = entity_id if entity_id is not None else item.get("entity_id")
    if not is_int(eid) or eid not in acc.records[etype]:
        errs.append(issue("NotFound", "entity_id", "Entity not found"))
    params, kind = item.get("params") or {}, item.get("note_type")
    if kind not in NOTE_TYPES:
        errs.append(issue("NotSupportedChoice", "note_type", _CHOICE))
    elif not isinstance(params, dict):
        errs.append(issue("InvalidType", "params", "This value should be of type array."))
    elif kind in ("common", "service_message", "sms_in", "sms_out") and not (
            isinstance(params.get("text"), str) and params["text"].strip()):
        errs.append(issue("NotBlank", "params.text", _BLANK))
    elif kind in ("call_in", "call_out"):
        # a call needs the number and where it came from (uniq, duration, source, phone in the docs)
        errs += [issue("NotBlank", f"params.{k}", _BLANK) for k in ("phone", "source")
                 if not isinstance(params.get(k), str) or not params[k]]
        if params.get("duration") is not None and not is_int(params["duration"]):
            errs.append(issue("InvalidType", "params.duration", "This value should be of type int."))
    errs += [issue("NotSupportedChoice", k, _CHOICE) for k in ("responsible_user_id", "created_by")
             if item.get(k) is not None and item[k] not in acc.users]
    return errs


def add_notes(acc: Account, etype: str, items: Any, user_id: int, *,
              entity_id: int | None = None) -> tuple[Done, list[Event]]:
    """``POST /api/v4/{etype}/notes`` (items carry entity_id) or ``/{etype}/{id}/notes``."""
    items = batch(items)
    errors = {request_id(it, i): e for i, it in enumerate(items)
              if (e := _check_note(acc, etype, it, entity_id))}
    if errors:
        raise invalid(errors)
    out: Done = []
    for i, item in enumerate(items):
        now = acc.ts()
        note = {"id": acc.next_id("note"), "entity_id": item["entity_id"] if entity_id is None else entity_id,
                "created_by": item.get("created_by", user_id), "updated_by": user_id,
                "created_at": int(item["created_at"]) if is_ts(item.get("created_at")) else now,
                "updated_at": now, "responsible_user_id": item.get("responsible_user_id", user_id),
                "group_id": 0, "note_type": item["note_type"], "params": dict(item.get("params") or {}),
                "account_id": acc.id, "_etype": etype}
        acc.notes[note["id"]] = note
        out.append((request_id(item, i), note))
    return out, [Event(etype, "note", {"note": note_view(n, "")}) for _, n in out]


def update_notes(acc: Account, etype: str, items: Any, user_id: int, *, entity_id: int | None = None,
                 one_id: int | None = None) -> Done:
    """``PATCH /api/v4/{etype}/notes`` (items carry id), ``/{etype}/{id}/notes`` (items carry id) and
    ``/{etype}/{id}/notes/{note_id}`` — amoCRM's "Редактирование примечаний"
    (https://www.amocrm.ru/developers/content/crm_platform/events-and-notes#notes-edit; the PHP client's
    ``apiv4Update`` sends ``PATCH /api/v4/{entity_type}/{entity_id}/notes`` with the notes' ids). A call
    integration updates its call note so (duration, recording link). Assumed here: ``params`` given
    replace the note's params whole and are checked as on a create; ``note_type`` may be repeated
    but not changed (NotSupportedChoice); an unknown id is 400 NotFound; no webhook is sent."""
    items = batch(items)
    plans, errors = [], {}
    for i, item in enumerate(items):
        rid = request_id(item, i)
        nid = one_id if one_id is not None else item.get("id") if isinstance(item, dict) else None
        note = acc.notes.get(nid) if is_int(nid) else None          # type: ignore[arg-type]
        if not isinstance(item, dict):
            errors[rid] = [issue("InvalidType", "", "This value should be of type array.")]
            continue
        if note is None or note["_etype"] != etype or entity_id not in (None, note["entity_id"]):
            errors[rid] = [issue("NotFound", "id", "Note not found")]
            continue
        if item.get("note_type") not in (None, note["note_type"]):
            errs: Issues = [issue("NotSupportedChoice", "note_type", _CHOICE)]
        else:
            errs = _check_note(acc, etype, {**item, "note_type": note["note_type"],
                                            "params": item.get("params", note["params"])}, note["entity_id"])
        if errs:
            errors[rid] = errs
        plans.append((rid, note, item))
    if errors:
        raise invalid(errors)
    out: Done = []
    for rid, note, item in plans:
        if "params" in item:
            note["params"] = dict(item.get("params") or {})
        if item.get("responsible_user_id") is not None:
            note["responsible_user_id"] = item["responsible_user_id"]
        note.update(updated_by=user_id, updated_at=acc.ts())
        out.append((rid, note))
    return out


def note_view(note: Rec, base: str) -> Rec:
    d = {k: copy.deepcopy(v) for k, v in note.items() if not k.startswith("_")}
    d["_links"] = self_link(f"{base}/{note['_etype']}/{note['entity_id']}/notes/{note['id']}")
    return d


def notes_of(acc: Account, etype: str, entity_id: int | None, params: dict[str, Any]) -> list[Rec]:
    """Notes of one type of entity (of one entity with `entity_id`); ``filter[note_type]`` narrows."""
    rows = [n for n in acc.notes.values() if n["_etype"] == etype and entity_id in (None, n["entity_id"])]
    kinds = filter_of(params).get("note_type")
    if kinds is not None:
        rows = [n for n in rows if n["note_type"] in values_of(kinds)]
    return order(rows, params, ("id", "updated_at"))


def _check_task(acc: Account, item: Any, current: Rec | None) -> tuple[Rec, Issues]:
    if not isinstance(item, dict):
        return {}, [issue("InvalidType", "", "This value should be of type array.")]
    out: Rec = {}
    errs: Issues = []
    if current is None or "text" in item:
        if isinstance(item.get("text"), str) and item["text"].strip():
            out["text"] = item["text"]
        else:
            errs.append(issue("NotBlank", "text", _BLANK))
    if current is None or "complete_till" in item:
        if is_ts(item.get("complete_till")):
            out["complete_till"] = int(item["complete_till"])
        else:
            errs.append(issue("InvalidType", "complete_till", "This value should be of type int."))
    if item.get("entity_type") is not None or item.get("entity_id") is not None:
        et, eid = item.get("entity_type"), item.get("entity_id")
        if et not in ENTITY_TYPES or not is_int(eid) or eid not in acc.records[et]:
            errs.append(issue("NotFound", "entity_id", "Entity not found"))
        else:
            out.update(entity_type=et, entity_id=eid)
    valid: dict[str, Callable[[Any], bool]] = {
        "responsible_user_id": lambda v: v in acc.users, "task_type_id": lambda v: v in TASK_TYPES,
        "duration": lambda v: is_int(v) and v >= 0, "is_completed": lambda v: isinstance(v, bool)}
    for k, ok in valid.items():
        if item.get(k) is not None:
            if ok(item[k]):
                out[k] = item[k]
            else:
                errs.append(issue("NotSupportedChoice", k, _CHOICE))
    if isinstance(item.get("result"), dict) and isinstance(item["result"].get("text"), str):
        out["result"] = {"text": item["result"]["text"]}
    return out, errs


def write_tasks(acc: Account, items: Any, user_id: int, *, update: bool, one_id: int | None = None) -> Done:
    """``POST /api/v4/tasks``, ``PATCH /api/v4/tasks`` (items with id) and ``PATCH /api/v4/tasks/{id}``."""
    plans, errors = [], {}
    for i, item in enumerate(batch(items)):
        rid, cur = request_id(item, i), None
        if update:
            wanted = one_id if one_id is not None else item.get("id") if isinstance(item, dict) else None
            cur = acc.tasks.get(wanted) if is_int(wanted) else None     # type: ignore[arg-type]
            if cur is None:
                errors[rid] = [issue("NotFound", "id", "Task not found")]
                continue
        change, errs = _check_task(acc, item, cur)
        if errs:
            errors[rid] = errs
        plans.append((rid, cur, change))
    if errors:
        raise invalid(errors)
    out: Done = []
    for rid, cur, change in plans:
        now = acc.ts()
        if cur is None:
            cur = {"id": acc.next_id("task"), "created_by": user_id, "created_at": now,
                   "responsible_user_id": user_id, "group_id": 0, "entity_id": None, "entity_type": None,
                   "duration": 0, "is_completed": False, "task_type_id": 1, "result": [],
                   "account_id": acc.id}
            acc.tasks[cur["id"]] = cur
        cur.update(change, updated_by=user_id, updated_at=now)
        out.append((rid, cur))
    return out


def task_view(task: Rec, base: str) -> Rec:
    d = {k: copy.deepcopy(task.get(k)) for k in _TASK_FIELDS}
    d["_links"] = self_link(f"{base}/tasks/{task['id']}")
    return d


def select_tasks(acc: Account, params: dict[str, Any]) -> list[Rec]:
    """``filter[...]``: id, responsible_user_id, entity_type, entity_id, is_completed, task_type(_id),
    updated_at (range); ``order[...]``: complete_till, created_at, id."""
    rows = list(acc.tasks.values())
    for key, cond in filter_of(params).items():
        if key == "updated_at" and isinstance(cond, dict):
            lo, hi = int(cond.get("from") or 0), int(cond.get("to") or 2**62)
            rows = [t for t in rows if lo <= t["updated_at"] <= hi]
        elif key == "is_completed":
            rows = [t for t in rows if t["is_completed"] == (str(cond).lower() in ("1", "true"))]
        elif key in ("id", "responsible_user_id", "entity_type", "entity_id", "task_type", "task_type_id"):
            wanted = {str(x) for x in values_of(cond)}
            rows = [t for t in rows if str(t["task_type_id" if key == "task_type" else key]) in wanted]
    return order(rows, params, ("complete_till", "created_at", "id"))
