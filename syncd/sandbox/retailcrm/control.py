"""The control API under /_sandbox (not part of RetailCRM): configuration, faults, limits, clock, the
request log, and "UI" writes that land in history as a manager's (`source: "user"`)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from syncd.sandbox.retailcrm import entities as E
from syncd.sandbox.retailcrm.state import ENTITIES, REF_KINDS, Actor, ApiError, Sandbox

# Required fields and defaults of a new reference row, per kind.
REF_DEFAULTS: dict[str, dict[str, Any]] = {
    "sites": {"url": "", "defaultForCrm": False, "countryIso": "RU", "currency": "RUB"},
    "statuses": {"ordering": 990, "group": None},
    "status-groups": {"ordering": 990, "process": True},
    "order-methods": {"defaultForCrm": False, "defaultForApi": False},
    "order-types": {"ordering": 990, "defaultForCrm": False, "defaultForApi": False},
    "payment-types": {"defaultForCrm": False, "defaultForApi": False, "deliveryTypes": [],
                      "paymentStatuses": []},
    "payment-statuses": {"defaultForCrm": False, "defaultForApi": False, "paymentComplete": False,
                         "ordering": 990, "paymentTypes": []},
    "delivery-types": {"defaultCost": 0, "defaultNetCost": 0, "paymentTypes": [], "deliveryServices": [],
                       "defaultForCrm": False},
}


class Bad(Exception):
    pass


def _patch(obj: Any, body: dict[str, Any]) -> dict[str, Any]:
    names = {f.name: f.type for f in dataclasses.fields(obj)}
    unknown = sorted(set(body) - set(names))
    if unknown:
        raise Bad(f"unknown keys {unknown}; known: {sorted(names)}")
    for k, v in body.items():
        setattr(obj, k, v)
    return dataclasses.asdict(obj)


def _add_ref(sb: Sandbox, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    if kind not in REF_KINDS:
        raise Bad(f"unknown reference {kind!r}; known: {sorted(REF_KINDS)}")
    code, name = body.get("code"), body.get("name")
    if not code or not name:
        raise Bad("code and name are required")
    row = {"name": name, "code": code, "active": True, **REF_DEFAULTS[kind], **body}
    if kind == "statuses" and row["group"] not in sb.ref("status-groups"):
        raise Bad(f"status group {row['group']!r} does not exist")
    if kind == "sites":
        row.setdefault("id", max((s["id"] for s in sb.ref("sites").values()), default=0) + 1)
        row.setdefault("_suffix", chr(ord("A") + len(sb.ref("sites")) % 26))   # numbers like 12B
    sb.refs[kind][code] = row
    return sb.render_ref(kind, [code])[code]


def _add_user(sb: Sandbox, body: dict[str, Any]) -> dict[str, Any]:
    uid = max(sb.users, default=0) + 1
    manager = bool(body.get("isManager", True))
    u = {"id": uid, "createdAt": sb.now_s(), "active": bool(body.get("active", True)),
         "email": body.get("email", f"user{uid}@shop.example"),
         "firstName": body.get("firstName", f"User{uid}"),
         "lastName": body.get("lastName", ""), "status": body.get("status", "free"),
         "online": bool(body.get("online", True)), "isAdmin": bool(body.get("isAdmin", False)),
         "isManager": manager, **({"code": str(body["code"])} if body.get("code") else {}),
         "groups": [{"id": 1, "name": "Менеджеры", "code": "manager"}] if manager else []}
    sb.users[uid] = u
    return u


def _actor(sb: Sandbox, body: dict[str, Any]) -> Actor:
    uid = body.get("user_id") or next((u["id"] for u in sb.users.values() if u["isManager"]), None)
    if uid not in sb.users:
        raise Bad(f"user {uid!r} does not exist")
    return Actor("user", user_id=int(uid))


UI_KINDS = {"orders": "order", "customers": "customer", "customers-corporate": "customerCorporate",
            "tasks": "task"}


def _ui(sb: Sandbox, method: str, parts: list[str], body: dict[str, Any]) -> Any:
    """What a manager does in the web UI: create, edit (by CRM id) or delete orders, customers, corporate
    customers and tasks (tasks have no history; the others land in it as the manager's, source "user")."""
    what = parts[0] if parts else ""
    if what not in UI_KINDS:
        raise Bad(f"ui: {' | '.join(UI_KINDS)}")
    rows = {"orders": sb.orders, "customers": sb.customers, "customers-corporate": sb.corporate,
            "tasks": sb.tasks}[what]
    actor = _actor(sb, body)
    data = body.get(UI_KINDS[what]) or {}
    if method == "POST" and len(parts) == 1:
        site = body.get("site") or next(iter(sb.ref("sites")))
        if what == "orders":
            obj = E.create_order(sb, actor, data, site)
        elif what == "tasks":
            obj = E.create_task(sb, actor, data, body.get("site"))
        else:
            obj = E.create_customer(sb, actor, data, site, corporate=what == "customers-corporate")
        return {"id": obj["id"]}
    if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) not in rows:
        raise KeyError(parts)
    obj = rows[int(parts[1])]
    if method == "PATCH":
        if what == "orders":
            E.edit_order(sb, actor, obj, data)
        elif what == "tasks":
            E.edit_task(sb, obj, data, body.get("site"))
        else:
            E.edit_customer(sb, actor, obj, data)
        return {"id": obj["id"]}
    if method == "DELETE" and what == "orders":
        E.delete_order(sb, actor, obj)
        return {"deleted": obj["id"]}
    raise Bad(f"{method} not supported here")


def _seed(sb: Sandbox, body: dict[str, Any]) -> dict[str, Any]:
    """Bulk data that was "already there" (made by a manager): N customers and N orders."""
    actor, site = _actor(sb, body), body.get("site") or next(iter(sb.ref("sites")))
    made: dict[str, list[int]] = {"customers": [], "orders": []}
    for i in range(int(body.get("customers", 0))):
        customer = {"firstName": f"Клиент{i + 1}", "email": f"client{i + 1}@example.com"}
        c = E.create_customer(sb, actor, customer, site)
        made["customers"].append(c["id"])
    for i in range(int(body.get("orders", 0))):
        order = {"externalId": f"seed-{sb.next_id('seed')}", "firstName": f"Покупатель{i + 1}",
                 "items": [{"productName": "Товар", "initialPrice": 100 + i, "quantity": 1}]}
        o = E.create_order(sb, actor, order, site)
        made["orders"].append(o["id"])
    return made


def _route(sb: Sandbox, method: str, parts: list[str], body: dict[str, Any]) -> Any:
    head = parts[0] if parts else ""
    if head == "" and method == "GET":
        return {"api_key": sb.api_key, "keys": [dataclasses.asdict(k) for k in sb.keys.values()],
                "now": sb.now_s(), "counts": {"orders": len(sb.orders), "customers": len(sb.customers),
                                              "customers_corporate": len(sb.corporate)}}
    if head == "reset" and method == "POST":
        sb.reset(references=bool(body.get("references")))
        return {"ok": True}
    if head == "seed" and method == "POST":
        return _seed(sb, body)
    if head == "api-keys" and method == "POST":
        return dataclasses.asdict(sb.add_key(body.get("key"), body.get("sites")))
    if head == "reference" and method == "POST" and len(parts) == 2:
        return _add_ref(sb, parts[1], body)
    if head == "users" and method == "POST":
        return _add_user(sb, body)
    if head == "custom-fields" and method == "POST":
        if body.get("entity") not in ENTITIES or not body.get("code"):
            raise Bad(f"entity ({' | '.join(ENTITIES)}) and code are required")
        sb.custom_fields[body["entity"]][body["code"]] = {"name": body.get("name", body["code"]),
                                                          "type": body.get("type", "string")}
        return {"entity": body["entity"], "code": body["code"]}
    if head in ("faults", "limits"):
        target = sb.faults if head == "faults" else sb.limits
        return _patch(target, body) if method == "PATCH" else dataclasses.asdict(target)
    if head == "clock":
        if method == "PATCH":
            unknown = set(body) - {"advance", "now"}
            if unknown:
                raise Bad(f"unknown clock keys {sorted(unknown)} (advance, now)")
            return sb.set_clock(**body)
        return sb.set_clock()
    if head == "log":
        if method == "DELETE":
            sb.log.clear()
            return {"ok": True}
        return {"entries": list(sb.log)}
    if head == "calls" and method == "GET" and len(parts) == 1:
        return {"calls": [dict(c) for c in sb.calls.values()]}
    if head == "tasks" and method == "GET" and len(parts) == 1:
        return {"tasks": [E.render_task(t) for t in sb.tasks.values()]}
    if head == "ui":
        return _ui(sb, method, parts[1:], body)
    raise KeyError(parts)


async def handle(sb: Sandbox, request: Request, path: str) -> Response:
    parts = [p for p in path.split("/")[2:] if p]
    try:
        raw = await request.body()
        body = json.loads(raw) if raw.strip() else {}
        if not isinstance(body, dict):
            raise Bad("the body must be a JSON object")
        with sb.lock:
            return JSONResponse(_route(sb, request.method, parts, body))
    except (Bad, ValueError, TypeError) as e:
        return JSONResponse({"error": "bad_request", "detail": str(e)}, 400)
    except ApiError as e:                          # a UI write refused by validation
        return JSONResponse({"error": "bad_request", "detail": e.msg, "errors": e.errors}, 400)
    except KeyError:
        return JSONResponse({"error": "not_found"}, 404)
