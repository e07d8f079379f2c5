"""Tasks and notes: neither has a field for syncd's key, so each is found by what it is.

- a task by its entity, responsible user and exact text among the entity's open tasks;
- a note by its entity and exact text among the entity's common notes.

A create retried after a lost answer finds what the first attempt made instead of adding another.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from connectors.amocrm.client import AmoClient
from connectors.amocrm.values import to_unix, utc_version
from syncd.connector import WriteOp, WriteResult
from syncd.errors import BadInput, PermanentError

# the record a task or note belongs to, first found wins (a lead before its contact)
OWNERS = (("lead_id", "leads"), ("contact_id", "contacts"), ("company_id", "companies"))
TASK_FIELDS = ("text", "responsible_user_id", "complete_till", "task_type_id", "lead_id", "contact_id",
               "company_id", "is_completed", "result")
NOTE_FIELDS = ("text", "lead_id", "contact_id", "company_id")
DEFAULT_DEADLINE = 86400           # a task without a deadline is due in a day (amoCRM requires one)


def _owner(op: WriteOp) -> tuple[str, int] | None:
    src: Mapping[str, Any] = {**op.full, **op.fields}
    for key, etype in OWNERS:
        v = src.get(key)
        if v not in (None, ""):
            try:
                return etype, int(v)
            except (TypeError, ValueError):
                raise BadInput(f"amoCRM {op.kind}.{key}: {v!r} is not an id", record=op.entity_id) from None
    return None


class Activity:
    client: AmoClient
    name: str

    # -- tasks ------------------------------------------------------------------------------------------
    def _task_body(self, op: WriteOp, create: bool) -> dict[str, Any]:
        f = op.fields
        body: dict[str, Any] = {}
        try:
            if "text" in f or create:
                body["text"] = str(f.get("text") or "").strip()
            if f.get("responsible_user_id") not in (None, ""):
                body["responsible_user_id"] = int(f["responsible_user_id"])
            if f.get("complete_till") not in (None, ""):
                body["complete_till"] = to_unix(f["complete_till"])
            elif create:
                body["complete_till"] = int(time.time()) + DEFAULT_DEADLINE
            if f.get("task_type_id") not in (None, "") or create:
                body["task_type_id"] = int(f.get("task_type_id") or 1)      # 1: call (Связаться)
            if "is_completed" in f and f["is_completed"] is not None:
                body["is_completed"] = bool(f["is_completed"])
        except (TypeError, ValueError) as exc:
            raise BadInput(f"amoCRM task: {exc}", record=op.entity_id) from None
        if create:
            if not body["text"]:
                raise PermanentError("amoCRM task needs a text", connector=self.name, op_id=op.op_id)
            owner = _owner(op)
            if owner is not None:
                body["entity_type"], body["entity_id"] = owner
        return body

    def _find_task(self, body: Mapping[str, Any]) -> str | None:
        params: dict[str, Any] = {"filter[is_completed]": 0}
        if body.get("entity_type"):
            params["filter[entity_type]"] = body["entity_type"]
            params["filter[entity_id][0]"] = body["entity_id"]
        if body.get("responsible_user_id"):
            params["filter[responsible_user_id][0]"] = body["responsible_user_id"]
        for t in self.client.all("tasks", "tasks", params):
            if t.get("text") == body["text"] and t.get("entity_id") == body.get("entity_id") \
                    and t.get("entity_type") == body.get("entity_type"):
                return str(t["id"])
        return None

    def _write_task(self, op: WriteOp) -> WriteResult:
        if op.external_id is not None:
            body = self._task_body(op, False)
            if not body:
                return WriteResult(op.external_id, dict(op.fields))
            ans = self.client.request("PATCH", f"tasks/{op.external_id}", json=body,
                                      what=f"update task {op.external_id}")
            return WriteResult(op.external_id, dict(op.fields), version=utc_version((ans.data or {}).get("updated_at")))
        body = self._task_body(op, True)
        found = None if op.unsent else self._find_task(body)
        if found is not None:
            return WriteResult(found, dict(op.fields), found=True)
        ans = self.client.request("POST", "tasks", json=[{**body, "request_id": "0"}], what="create task")
        got = ((ans.data or {}).get("_embedded") or {}).get("tasks") or []
        return WriteResult(str(got[0]["id"]), dict(op.fields))

    # -- notes ------------------------------------------------------------------------------------------
    def _write_note(self, op: WriteOp) -> WriteResult:
        if op.external_id is not None:
            # a note's text is what was said then: syncd does not rewrite it
            return WriteResult(op.external_id, dict(op.fields))
        owner = _owner(op)
        text = str(op.fields.get("text") or "").strip()
        if owner is None or not text:
            raise PermanentError("amoCRM note needs a text and lead_id, contact_id or company_id",
                                 connector=self.name, op_id=op.op_id)
        etype, eid = owner
        if not op.unsent:
            for n in self.client.all(f"{etype}/{eid}/notes", "notes", {"filter[note_type][0]": "common"}):
                if str((n.get("params") or {}).get("text") or "").strip() == text:
                    return WriteResult(str(n["id"]), dict(op.fields), found=True)
        ans = self.client.request("POST", f"{etype}/{eid}/notes",
                                  json=[{"note_type": "common", "params": {"text": text}, "request_id": "0"}],
                                  what=f"add note to {etype} {eid}")
        got = ((ans.data or {}).get("_embedded") or {}).get("notes") or []
        return WriteResult(str(got[0]["id"]), dict(op.fields))
