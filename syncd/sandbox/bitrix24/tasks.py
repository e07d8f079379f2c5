"""`tasks.task.add/update/get/list` as the portal answers them (b24restdocs `api-reference/tasks/`).

Stored and answered in camelCase (`id`, `title`, `responsibleId`, `ufCrmTask`…); filter, order and
select take the UPPER_CASE names. `list`: filter prefixes `!`, `<`, `<=`, `>`, `>=`; `TITLE` is a
LIKE pattern (`%` any run, `_` one character, case-insensitive), other fields compare as values;
`UF_CRM_TASK` matches a task bound to that entity; default order `ID` descending; 50 per page with
`total`/`next`. Errors as documented: a task that does not exist (or is not visible) answers 400
`0` "Action on the task is not allowed (internal error)", an update without fields `100`, an
unknown responsible `ERROR_CORE`.
"""

from __future__ import annotations

import re
from typing import Any

from syncd.sandbox.bitrix24.common import Ctx, Page, arg, cmp_value, norm_value, paginate
from syncd.sandbox.bitrix24.portal import BxError

# filter/select/order name -> (stored key, type)
FIELDS: dict[str, tuple[str, str]] = {
    "ID": ("id", "integer"), "PARENT_ID": ("parentId", "integer"), "TITLE": ("title", "like"),
    "DESCRIPTION": ("description", "string"), "PRIORITY": ("priority", "integer"),
    "STATUS": ("status", "integer"), "REAL_STATUS": ("status", "integer"), "GROUP_ID": ("groupId", "integer"),
    "CREATED_BY": ("createdBy", "integer"), "CREATED_DATE": ("createdDate", "datetime"),
    "RESPONSIBLE_ID": ("responsibleId", "integer"), "CHANGED_BY": ("changedBy", "integer"),
    "CHANGED_DATE": ("changedDate", "datetime"), "STATUS_CHANGED_DATE": ("statusChangedDate", "datetime"),
    "CLOSED_BY": ("closedBy", "integer"), "CLOSED_DATE": ("closedDate", "datetime"),
    "DEADLINE": ("deadline", "datetime"), "UF_CRM_TASK": ("ufCrmTask", "string"),
    "AUDITORS": ("auditors", "integer"), "ACCOMPLICES": ("accomplices", "integer"),
}
WRITABLE = ("TITLE", "DESCRIPTION", "PRIORITY", "STATUS", "GROUP_ID", "RESPONSIBLE_ID", "DEADLINE", "UF_CRM_TASK",
            "PARENT_ID", "AUDITORS", "ACCOMPLICES")
NOT_ALLOWED = "Action on the task is not allowed (internal error)"
STATUS_COMPLETED = "5"


def _task_id(params: dict[str, Any]) -> int:
    v = arg(params, "taskId")
    if v in (None, ""):
        raise BxError("100", "CTaskItem All parameters in the constructor must have real class type "
                             "(internal error)", 400)
    try:
        return int(v)
    except (TypeError, ValueError):
        raise BxError("0", "wrong task id", 400)


def _as_list(v: Any) -> list[str]:
    if v in (None, ""):
        return []
    if isinstance(v, dict):
        v = list(v.values())
    return [str(x) for x in (v if isinstance(v, list) else [v])]


def _apply(ctx: Ctx, t: dict[str, Any], f: dict[str, Any]) -> None:
    p = ctx.portal
    now = p.now_bx()
    for k in WRITABLE:
        if k not in f:
            continue
        key = FIELDS[k][0]
        v = f[k]
        if k in ("UF_CRM_TASK", "AUDITORS", "ACCOMPLICES"):
            t[key] = _as_list(v)
        elif k == "DEADLINE":
            t[key] = norm_value("datetime", v) if v not in (None, "") else None
        elif k == "RESPONSIBLE_ID":
            try:
                uid = int(v)
            except (TypeError, ValueError):
                uid = 0
            if uid not in p.users:
                raise BxError("ERROR_CORE", 'Пользователь, указанный в поле "Исполнитель", не найден<br>', 400)
            t[key] = str(uid)
        elif k == "STATUS":
            st = str(v)
            if st not in ("1", "2", "3", "4", "5", "6", "7"):
                raise BxError("ERROR_CORE", "Неверный статус<br>", 400)
            if st != t.get("status"):
                t["statusChangedDate"] = now
                t["statusChangedBy"] = str(ctx.user_id)
            t[key] = st
            t["closedDate"] = now if st == STATUS_COMPLETED else None
            t["closedBy"] = str(ctx.user_id) if st == STATUS_COMPLETED else None
        else:
            t[key] = "" if v is None else str(v)
    t["changedDate"] = now
    t["changedBy"] = str(ctx.user_id)


def add(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    p = ctx.portal
    f = {str(k).upper(): v for k, v in (arg(params, "fields") or {}).items()}
    if not f.get("TITLE"):
        raise BxError("ERROR_CORE", "Не указано название задачи<br>", 400)
    f.setdefault("RESPONSIBLE_ID", ctx.user_id)
    with p.lock:
        now = p.now_bx()
        t: dict[str, Any] = {"id": "", "parentId": "0", "title": "", "description": "", "priority": "1",
                             "status": "2", "groupId": "0", "createdBy": str(ctx.user_id), "createdDate": now,
                             "responsibleId": str(ctx.user_id), "statusChangedDate": now, "closedBy": None,
                             "closedDate": None, "deadline": None, "ufCrmTask": [], "auditors": [],
                             "accomplices": []}
        _apply(ctx, t, f)
        tid = p.next_id("task")
        t["id"] = str(tid)
        p.tables["task"][tid] = t
        return {"task": dict(t)}


def update(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    p = ctx.portal
    tid = _task_id(params)
    f = {str(k).upper(): v for k, v in (arg(params, "fields") or {}).items()}
    if not f:
        raise BxError("100", "Could not find value for parameter {fields} (internal error)", 400)
    with p.lock:
        t = p.tables["task"].get(tid)
        if t is None:
            raise BxError("0", NOT_ALLOWED, 400)
        new = dict(t)
        _apply(ctx, new, f)
        p.tables["task"][tid] = new
        return {"task": dict(new)}


def get(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    p = ctx.portal
    tid = _task_id(params)
    with p.lock:
        t = p.tables["task"].get(tid)
        if t is None:
            raise BxError("0", NOT_ALLOWED, 400)
        return {"task": _select(t, arg(params, "select"))}


def _like(pattern: str) -> re.Pattern[str]:
    out = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile(out, re.IGNORECASE | re.DOTALL)


def _matches(t: dict[str, Any], name: str, op: str, want: Any) -> bool:
    key, ftype = FIELDS[name]
    have = t.get(key)
    wants = [str(x) for x in (want if isinstance(want, list) else [want])]
    if ftype == "like":
        hit = any(_like(w).fullmatch(str(have or "")) for w in wants)
        return not hit if op == "!" else hit
    if isinstance(have, list):                       # UF_CRM_TASK, AUDITORS: any member
        hit = any(h == w for h in have for w in wants)
        return not hit if op == "!" else hit
    a = cmp_value(have, ftype)
    if op in ("", "!"):
        hit = any(a == cmp_value(w, ftype) for w in wants)
        return not hit if op == "!" else hit
    b = cmp_value(wants[0], ftype)
    if a is None or b is None or isinstance(a, float) != isinstance(b, float):
        return False
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]


def _select(t: dict[str, Any], select: Any) -> dict[str, Any]:
    names = list(select.values()) if isinstance(select, dict) else list(select or [])
    if not names or "*" in names:
        return dict(t)
    keys = {"id"}
    for n in names:
        n = str(n)
        keys.add(FIELDS[n.upper()][0] if n.upper() in FIELDS else n)
    return {k: v for k, v in t.items() if k in keys}


def list_(ctx: Ctx, params: dict[str, Any]) -> Page:
    p = ctx.portal
    with p.lock:
        rows = [dict(t) for t in p.tables["task"].values()]
    for k, v in (arg(params, "filter") or {}).items():
        k = str(k)
        op = next((o for o in (">=", "<=", "!", ">", "<") if k.startswith(o)), "")
        name = k[len(op):].upper()
        if name not in FIELDS:
            continue        # the portal ignores filter keys it does not know (sandbox choice: docs are silent)
        rows = [r for r in rows if _matches(r, name, op, v)]
    order = arg(params, "order") or {"ID": "DESC"}
    for name, direction in reversed([(str(k).upper(), d) for k, d in order.items() if str(k).upper() in FIELDS]):
        key, ftype = FIELDS[name]

        def sort_key(r: dict[str, Any], key: str = key, ftype: str = ftype) -> tuple[Any, ...]:
            v = cmp_value(r.get(key), "string" if ftype == "like" else ftype)
            return (v is None, (0, v, "") if isinstance(v, float) else (1, 0.0, str(v)))
        rows = sorted(rows, key=sort_key, reverse=str(direction).upper() == "DESC")
    page = paginate(rows, arg(params, "start"))
    page.rows = [_select(r, arg(params, "select")) for r in page.rows]
    page.wrap = "tasks"
    return page
