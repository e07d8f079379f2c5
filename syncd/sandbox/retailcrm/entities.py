"""Orders, customers, corporate customers and payments: validation, storage, rendering and the change
history. Entities are stored as the API prints them (camelCase, empty values left out); an order keeps
`customer` as a short link and the full customer is rendered on the way out. Writes validate a copy
first, so a refused write changes nothing."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from syncd.sandbox.retailcrm.state import Actor, ApiError, Sandbox

Row = dict[str, Any]
ORDER_STR = ("externalId", "number", "firstName", "lastName", "patronymic", "email", "phone",
             "additionalPhone", "customerComment", "managerComment", "statusComment", "countryIso")
CUSTOMER_STR = ("externalId", "firstName", "lastName", "patronymic", "email")
ORDER_CODES = {"status": ("statuses", "status"), "orderMethod": ("order-methods", "order method"),
               "orderType": ("order-types", "order type")}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ORDER_INVALID = "Order is not loaded"              # seen in live answers of orders/create
ENTITY_INVALID = "Errors in the entity format"     # the vendor PHP client's ValidationException message


def snake(name: str) -> str:
    """History names fields in snake_case: managerComment -> manager_comment."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def num(v: Any) -> float | int:
    """Numbers come back as JSON numbers, integral ones without a fraction (779, 616.16)."""
    try:
        f = round(float(v or 0), 2)
    except (TypeError, ValueError):
        raise ApiError(400, ENTITY_INVALID, {"value": f"{v!r} is not a number."}) from None
    return int(f) if f.is_integer() else f


def _int(v: Any) -> int:
    return int(v) if str(v).isdigit() else -1


def _validate(sb: Sandbox, data: Row, errors: dict[str, str]) -> None:
    if data.get("email") and not EMAIL.match(str(data["email"])):
        errors["email"] = "This value is not a valid email address."
    manager = data.get("managerId")
    if manager not in (None, "") and not sb.users.get(_int(manager), {}).get("isManager"):
        errors["managerId"] = f"Manager with id={data['managerId']} not found."


def _fields(sb: Sandbox, obj: Row, data: Row, strings: tuple[str, ...], entity: str) -> None:
    """Plain fields, managerId and the defined custom fields (undefined codes are ignored)."""
    for k in strings + ("managerId",):
        if k in data:
            if data[k] in (None, ""):
                obj.pop(k, None)                   # the API leaves empty fields out
            else:
                obj[k] = int(data[k]) if k == "managerId" else str(data[k])
    if data.get("createdAt"):
        obj["createdAt"] = str(data["createdAt"])
    if isinstance(data.get("customFields"), dict):
        cur = obj.setdefault("customFields", {})
        for code, v in data["customFields"].items():
            if code in sb.custom_fields[entity] and v in (None, ""):
                cur.pop(code, None)
            elif code in sb.custom_fields[entity]:
                cur[code] = v
        if not cur:
            obj.pop("customFields")


# ---- history ------------------------------------------------------------------------------------
def _hist(sb: Sandbox, entity: str, actor: Actor, field: str, old: Any, new: Any, ref: Row, *,
          created: bool = False, deleted: bool = False, extra: Row | None = None) -> None:
    e: Row = {"id": sb.next_id(f"history:{entity}"), "createdAt": sb.now_s(),
              **({"created": True} if created else {}), **({"deleted": True} if deleted else {}),
              "source": actor.source}
    if actor.source == "user":
        e["user"] = {"id": actor.user_id}
    e.update(field=field, _key=actor.api_key, oldValue=old, newValue=new)
    e["order" if entity == "order" else "customer"] = ref
    sb.history[entity].append({**e, **(extra or {})})


def render_history(e: Row, caller_key: str) -> Row:
    """`apiKey.current` is true only for changes made with the key that asks (how a client skips its
    own writes); it is present on API changes only, right after `field` as the API prints it."""
    out: Row = {}
    for k, v in e.items():
        if k != "_key":
            out[k] = copy.deepcopy(v)
        if k == "field" and e["source"] == "api":
            out["apiKey"] = {"current": e["_key"] == caller_key}
    return out


def _changes(sb: Sandbox, entity: str, actor: Actor, old: Row, new: Row, ref: Row) -> None:
    for k in list(old) + [k for k in new if k not in old]:
        if old.get(k) != new.get(k):
            _hist(sb, entity, actor, k, old.get(k), new.get(k), ref)


def _members(sb: Sandbox, entity: str, actor: Actor, field: str, old: dict[Any, Any], new: dict[Any, Any],
             ref: Row, extra: Callable[[Any], Row] = lambda v: {}) -> None:
    """Collections change one member per record: removed (old value, null), then added (null, new)."""
    for k, v in old.items():
        if k not in new:
            _hist(sb, entity, actor, field, v, None, ref, extra=extra(v))
    for k, v in new.items():
        if k not in old:
            _hist(sb, entity, actor, field, None, v, ref, extra=extra(v))


def _code(v: Any) -> Row | None:
    return {"code": v} if v else None


def _track(obj: Row, strings: tuple[str, ...]) -> Row:
    t = {snake(k): obj.get(k) for k in strings}
    t["manager"] = {"id": obj["managerId"]} if obj.get("managerId") else None
    t.update({f"custom_{k}": v for k, v in (obj.get("customFields") or {}).items()})
    return t


def _order_track(o: Row) -> Row:
    d = o.get("delivery") or {}
    return {"status": _code(o["status"]), "order_method": _code(o.get("orderMethod")),
            "order_type": _code(o.get("orderType")), "customer": o.get("customer"),
            "created_at": o.get("createdAt"),
            "delivery_type": _code(d.get("code")), "delivery_cost": d.get("cost"),
            "delivery_address.text": (d.get("address") or {}).get("text"), **_track(o, ORDER_STR)}


def order_ref(o: Row) -> Row:
    return {k: o[k] for k in ("id", "externalId", "managerId", "site", "status") if k in o}


def customer_ref(c: Row) -> Row:
    keys = ("id", "externalId", "site") if c["type"] == "customer" else ("type", "id", "externalId", "site")
    return {k: c[k] for k in keys if k in c}


def _item_ref(it: Row) -> Row:
    return {"id": it["id"], **({"offer": it["offer"]} if "offer" in it else {})}


def find_dup(rows: dict[int, Row], site: str, ext: Any, skip: int = 0) -> bool:
    return ext not in (None, "") and any(r.get("externalId") == str(ext) and r["site"] == site
                                         and r["id"] != skip for r in rows.values())


def _dup(what: str, ext: Any, msg: str) -> ApiError:
    return ApiError(400, msg, {"externalId": f"{what} with externalId={ext} already exists."})


# ---- customers -----------------------------------------------------------------------------------
def _apply_customer(sb: Sandbox, c: Row, data: Row) -> None:
    errors: dict[str, str] = {}
    _validate(sb, data, errors)
    corporate = c["type"] == "customer_corporate"
    if corporate and not data.get("nickName", c.get("nickName")):
        errors["nickName"] = "This value should not be blank."
    if errors:
        raise ApiError(400, ENTITY_INVALID, errors)
    _fields(sb, c, data, CUSTOMER_STR + (("nickName",) if corporate else ()), c["type"])
    c.update({k: str(data[k]).lower() in ("1", "true") for k in ("vip", "bad") if k in data})
    if isinstance(data.get("phones"), list):
        c["phones"] = [{"number": str(p.get("number") if isinstance(p, dict) else p)} for p in data["phones"]]
    if isinstance(data.get("address"), dict):
        c["address"] = {"id": c["id"], **{k: v for k, v in data["address"].items() if k != "id"}}


def create_customer(sb: Sandbox, actor: Actor, data: Row, site: str, *, corporate: bool = False) -> Row:
    rows = sb.corporate if corporate else sb.customers
    if find_dup(rows, site, data.get("externalId")):
        raise _dup("Customer", data["externalId"], ENTITY_INVALID)
    kind = "customer_corporate" if corporate else "customer"
    c: Row = {"type": kind, "id": sb.next_id("customer"), "createdAt": sb.now_s(), "vip": False, "bad": False,
              "site": site, **({} if corporate else {"contragent": {"contragentType": "individual"}})}
    _apply_customer(sb, c, data)
    for i, r in enumerate(data.get("companies") or [] if corporate else []):   # companies: on create only
        if not isinstance(r, dict) or not r.get("name"):
            raise ApiError(400, ENTITY_INVALID, {f"companies[{i}].name": "This value should not be blank."})
        c.setdefault("_companies", []).append({
            "isMain": bool(r.get("isMain", i == 0)), "id": sb.next_id("company"), "active": True,
            "name": str(r["name"]), "createdAt": c["createdAt"],
            "contragent": {"contragentType": "legal-entity", **(r.get("contragent") or {})}})
    rows[c["id"]] = c
    _hist(sb, kind, actor, "id", None, c["id"], render_customer(sb, c), created=True)
    return c


def edit_customer(sb: Sandbox, actor: Actor, c: Row, data: Row) -> Row:
    rows = sb.customers if c["type"] == "customer" else sb.corporate
    if "externalId" in data and find_dup(rows, c["site"], data["externalId"], skip=c["id"]):
        raise _dup("Customer", data["externalId"], ENTITY_INVALID)
    strings = (*CUSTOMER_STR, "nickName", "vip", "bad")
    trial = copy.deepcopy(c)
    _apply_customer(sb, trial, data)
    before, phones = _track(c, strings), {p["number"]: p["number"] for p in c.get("phones", [])}
    before["address.text"] = (c.get("address") or {}).get("text")
    c.clear()
    c.update(trial)
    after = {**_track(c, strings), "address.text": (c.get("address") or {}).get("text")}
    _changes(sb, c["type"], actor, before, after, customer_ref(c))
    now = {p["number"]: p["number"] for p in c.get("phones", [])}
    _members(sb, c["type"], actor, "phones", phones, now, customer_ref(c))   # one number per record
    return c


def render_customer(sb: Sandbox, c: Row) -> Row:
    r = {k: copy.deepcopy(v) for k, v in c.items() if not k.startswith("_")}
    mine = [o for o in sb.orders.values() if (o.get("customer") or {}).get("id") == c["id"]]
    total = num(sum(o["totalSumm"] for o in mine))
    r.update(marginSumm=total, totalSumm=total, averageSumm=num(total / len(mine)) if mine else 0,
             ordersCount=len(mine), customFields=r.get("customFields") or [], personalDiscount=0,
             cumulativeDiscount=0, tags=[])
    main = next((x for x in c.get("_companies", []) if x["isMain"]), None)
    if main:
        r["mainCompany"] = {"id": main["id"], "name": main["name"]}
    return r


def render_company(c: Row, comp: Row) -> Row:
    return {**copy.deepcopy(comp), "customer": customer_ref(c), "customFields": []}


# ---- orders --------------------------------------------------------------------------------------
def _items(sb: Sandbox, old: list[Row], raw: Any, errors: dict[str, str]) -> list[Row]:
    """`items` in a write is the order's whole composition: items left out are removed."""
    by_id, out = {it["id"]: it for it in old}, []
    for i, r in enumerate(raw if isinstance(raw, list) else []):
        r = r if isinstance(r, dict) else {}
        prev = by_id.get(_int(r.get("id")))
        it = copy.deepcopy(prev) if prev else {"id": sb.next_id("item"), "createdAt": sb.now_s(),
                                               "status": "new", "discountTotal": 0}
        price = num(r.get("initialPrice", it.get("initialPrice")))
        qty = num(r.get("quantity", it.get("quantity", 1)))
        if qty <= 0:
            errors[f"items[{i}].quantity"] = "This value should be greater than 0."
        it.update(initialPrice=price, quantity=qty, prices=[{"price": price, "quantity": qty}])
        if isinstance(r.get("offer"), dict):
            it["offer"] = {k: v for k, v in r["offer"].items()
                           if k in ("id", "externalId", "xmlId", "name") and v}
        if r.get("productName"):
            it["productName"] = str(r["productName"])
        if not it.get("offer") and not it.get("productName"):
            errors[f"items[{i}].productName"] = "This value should not be blank."
        out.append(it)
    return out


def _link_customer(sb: Sandbox, o: Row, ref: Any, errors: dict[str, str]) -> None:
    if not isinstance(ref, dict) or not (ref.get("id") or ref.get("externalId")):
        return
    key = "id" if ref.get("id") else "externalId"
    site = ref.get("site") or o["site"]
    c = next((c for c in sb.customers.values() if (c["id"] == _int(ref["id"]) if key == "id" else
              c.get("externalId") == str(ref["externalId"]) and c["site"] == site)), None)
    if c is None:
        errors[f"customer.{key}"] = f"Customer with {key}={ref[key]} not found."
    else:
        o["customer"] = customer_ref(c)


def _apply_order(sb: Sandbox, o: Row, data: Row) -> None:
    errors: dict[str, str] = {}
    _validate(sb, data, errors)
    for k, (kind, label) in ORDER_CODES.items():
        if data.get(k) and str(data[k]) not in sb.ref(kind):
            errors[k] = f'"{data[k]}" is not a valid {label} code.'
    d = data.get("delivery") if isinstance(data.get("delivery"), dict) else {}
    if d.get("code") and str(d["code"]) not in sb.ref("delivery-types"):
        errors["delivery.code"] = f'"{d["code"]}" is not a valid delivery type code.'
    items = _items(sb, o["items"], data["items"], errors) if "items" in data else o["items"]
    _link_customer(sb, o, data.get("customer"), errors)
    if errors:
        raise ApiError(400, ORDER_INVALID, errors)
    if data.get("status") and data["status"] != o["status"]:
        o["statusUpdatedAt"] = sb.now_s()
    o.update({k: str(data[k]) for k in ORDER_CODES if data.get(k)}, items=items)
    cur = o["delivery"]
    cur.update({k: str(d[k]) for k in ("code", "date") if d.get(k)})
    cur.update({k: num(d[k]) for k in ("cost", "netCost") if k in d})
    if isinstance(d.get("address"), dict):
        cur["address"] = {**cur["address"], **d["address"]}
    _fields(sb, o, data, ORDER_STR, "order")
    totals(sb, o)


def totals(sb: Sandbox, o: Row) -> None:
    """summ = goods, totalSumm = goods + delivery, prepaySum = payments in a paymentComplete status."""
    o["summ"] = num(sum(i["initialPrice"] * i["quantity"] - i.get("discountTotal", 0) for i in o["items"]))
    o["totalSumm"] = num(o["summ"] + o["delivery"].get("cost", 0))
    done = {c for c, r in sb.ref("payment-statuses").items() if r.get("paymentComplete")}
    o["prepaySum"] = num(sum(p.get("amount", 0) for p in o["payments"].values() if p["status"] in done))


def create_order(sb: Sandbox, actor: Actor, data: Row, site: str) -> Row:
    if find_dup(sb.orders, site, data.get("externalId")):
        raise _dup("Order", data["externalId"], ORDER_INVALID)
    api, oid, now = actor.source == "api", sb.next_id("order"), sb.now_s()
    flag = "defaultForApi" if api else "defaultForCrm"
    o: Row = {"slug": oid, "id": oid, "site": site, "createdAt": now, "statusUpdatedAt": now,
              "status": "new" if "new" in sb.ref("statuses") else next(iter(sb.ref("statuses"))),
              "orderMethod": sb.default_code("order-methods", flag),
              "orderType": sb.default_code("order-types", flag),
              "contragent": {"contragentType": "individual"}, "items": [], "payments": {},
              "delivery": {"cost": 0, "netCost": 0, "address": {}}, "call": False, "expired": False,
              "fromApi": api, "shipped": False}
    _apply_order(sb, o, data)
    raw = data.get("payments")                     # payments may come with the order on create only
    for i, p in enumerate(raw.values() if isinstance(raw, dict) else raw or []):
        _new_payment(sb, actor, o, p if isinstance(p, dict) else {}, f"payments[{i}].")
    totals(sb, o)
    o.setdefault("number", f"{oid}{sb.ref('sites')[site].get('_suffix', 'A')}")
    if "customer" not in o:                        # RetailCRM makes a customer from the order's contact data
        contact = {k: o[k] for k in ("firstName", "lastName", "patronymic", "email") if k in o}
        c = create_customer(sb, actor, {**contact, "phones": [o["phone"]] if o.get("phone") else []}, site)
        o["customer"] = customer_ref(c)
    sb.orders[oid] = o
    sb.payments.update({int(pid): oid for pid in o["payments"]})
    _hist(sb, "order", actor, "status", None, {"code": o["status"]}, render_order(sb, o), created=True)
    return o


def edit_order(sb: Sandbox, actor: Actor, o: Row, data: Row) -> Row:
    if "externalId" in data and find_dup(sb.orders, o["site"], data["externalId"], skip=o["id"]):
        raise _dup("Order", data["externalId"], ORDER_INVALID)
    trial = copy.deepcopy(o)
    _apply_order(sb, trial, {k: v for k, v in data.items() if k != "payments"})
    before, items = _order_track(o), {it["id"]: it for it in o["items"]}
    o.clear()
    o.update(trial)
    ref, now = order_ref(o), {it["id"]: it for it in o["items"]}
    _changes(sb, "order", actor, before, _order_track(o), ref)
    _members(sb, "order", actor, "order_product", {k: _item_ref(v) for k, v in items.items()},
             {k: _item_ref(v) for k, v in now.items()}, ref, lambda v: {"item": v})
    for iid in set(items) & set(now):
        for k in ("quantity", "initialPrice"):
            if items[iid][k] != now[iid][k]:
                _hist(sb, "order", actor, f"order_product.{snake(k)}", items[iid][k], now[iid][k], ref,
                      extra={"item": _item_ref(now[iid])})
    return o


def delete_order(sb: Sandbox, actor: Actor, o: Row) -> None:
    _hist(sb, "order", actor, "id", o["id"], None, render_order(sb, o), deleted=True)
    del sb.orders[o["id"]]
    for pid in o["payments"]:
        sb.payments.pop(int(pid), None)


def render_order(sb: Sandbox, o: Row) -> Row:
    r = copy.deepcopy(o)
    c = sb.customers.get(r.pop("customer", {}).get("id", 0))
    if c is not None:
        r["customer"] = render_customer(sb, c)
    r["customFields"] = r.get("customFields") or []    # PHP prints an empty map as []
    return r


# ---- payments ------------------------------------------------------------------------------------
def _payment_fields(sb: Sandbox, p: Row, data: Row, where: str) -> None:
    errors: dict[str, str] = {}
    if ("type" in data or "type" not in p) and str(data.get("type")) not in sb.ref("payment-types"):
        errors[f"{where}type"] = f'"{data.get("type")}" is not a valid payment type code.'
    if data.get("status") and str(data["status"]) not in sb.ref("payment-statuses"):
        errors[f"{where}status"] = f'"{data["status"]}" is not a valid payment status code.'
    if errors:
        raise ApiError(400, ORDER_INVALID if where else ENTITY_INVALID, errors)
    p.update({k: str(data[k]) for k in ("type", "status", "externalId", "paidAt", "comment") if data.get(k)})
    p.setdefault("status", sb.default_code("payment-statuses", "defaultForApi") or "not-paid")
    if "amount" in data:
        p["amount"] = num(data["amount"])


def _new_payment(sb: Sandbox, actor: Actor, o: Row, data: Row, where: str = "") -> Row:
    p: Row = {"id": 0}
    _payment_fields(sb, p, data, where)
    p["id"] = sb.next_id("payment")
    p.setdefault("amount", o.get("totalSumm", 0))
    o["payments"][str(p["id"])] = p
    if not where:                                  # a payment of its own, not one inside a new order
        sb.payments[p["id"]] = o["id"]
        totals(sb, o)
        _hist(sb, "order", actor, "payments", None, {"id": p["id"], "type": p["type"]}, order_ref(o),
              extra={"payment": {k: p[k] for k in ("id", "status", "type", "amount")}})
    return p


def create_payment(sb: Sandbox, actor: Actor, data: Row, sites: list[str]) -> Row:
    ref = data.get("order")
    if not isinstance(ref, dict) or not any(ref.get(k) for k in ("id", "externalId", "number")):
        raise ApiError(400, ENTITY_INVALID, {"order": "This value should not be blank."})
    for o in sb.orders.values():
        keys = ("id", "externalId", "number")
        if o["site"] in sites and any(ref.get(k) and str(o.get(k)) == str(ref[k]) for k in keys):
            return _new_payment(sb, actor, o, data)
    raise ApiError(400, ENTITY_INVALID, {"order": "Order not found."})


def edit_payment(sb: Sandbox, actor: Actor, o: Row, p: Row, data: Row) -> None:
    before = dict(p)
    _payment_fields(sb, p, {k: v for k, v in data.items() if k != "id"}, "")
    totals(sb, o)
    for k, name, wrap in (("status", "status", True), ("amount", "amount", False),
                          ("paidAt", "paid_at", False), ("type", "type", True)):
        if before.get(k) != p.get(k):
            old, new = (_code(before.get(k)), _code(p.get(k))) if wrap else (before.get(k), p.get(k))
            _hist(sb, "order", actor, f"payments.{name}", old, new, order_ref(o),
                  extra={"payment": {"id": p["id"], "type": p["type"]}})


# ---- tasks ---------------------------------------------------------------------------------------
TASK_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$")      # "Y-m-d H:i", as the API takes it


def _task_link(sb: Sandbox, rows: dict[int, Row], ref: Any, what: str, site: str | None,
               errors: dict[str, str]) -> Row | None:
    """A task's order or customer, by id or externalId (externalId within the call's site)."""
    if not isinstance(ref, dict) or not (ref.get("id") or ref.get("externalId")):
        return None
    key = "id" if ref.get("id") else "externalId"
    found = next((r for r in rows.values() if (r["id"] == _int(ref["id"]) if key == "id" else
                  r.get("externalId") == str(ref["externalId"]) and (site is None or r["site"] == site))), None)
    if found is None:
        errors[f"{what}.{key}"] = f"{what.capitalize()} with {key}={ref[key]} not found."
    return found


def _apply_task(sb: Sandbox, t: Row, data: Row, site: str | None) -> None:
    errors: dict[str, str] = {}
    text = data.get("text", t.get("text"))
    if not text:
        errors["text"] = "This value should not be blank."
    performer = data.get("performerId", t.get("performer"))
    if performer in (None, ""):
        errors["performerId"] = "This value should not be blank."
    elif not sb.users.get(_int(performer), {}).get("active"):
        errors["performerId"] = f"User with id={performer} not found."
    if data.get("datetime") and not TASK_DATETIME.match(str(data["datetime"])):
        errors["datetime"] = 'This value is not a valid datetime (format "Y-m-d H:i").'
    order = _task_link(sb, sb.orders, data.get("order"), "order", site, errors)
    customer = _task_link(sb, sb.customers, data.get("customer"), "customer", site, errors)
    if errors:
        raise ApiError(400, ENTITY_INVALID, errors)
    for k in ("text", "commentary", "datetime"):
        if k in data:
            if data[k] in (None, ""):
                t.pop(k, None)
            else:
                t[k] = str(data[k])
    if performer not in (None, ""):
        t["performer"] = int(performer)
    if "complete" in data:
        t["complete"] = str(data["complete"]).lower() in ("1", "true")
    if order is not None:
        t["order"] = {k: order[k] for k in ("id", "externalId", "number") if k in order}
    if customer is not None:
        t["customer"] = customer_ref(customer)


def create_task(sb: Sandbox, actor: Actor, data: Row, site: str | None) -> Row:
    t: Row = {"id": 0, "createdAt": sb.now_s(), "complete": False, "performerType": "user"}
    _apply_task(sb, t, data, site)
    t["id"] = sb.next_id("task")
    if actor.user_id is not None:
        t["creator"] = actor.user_id
    sb.tasks[t["id"]] = t
    return t


def edit_task(sb: Sandbox, t: Row, data: Row, site: str | None) -> Row:
    trial = copy.deepcopy(t)
    _apply_task(sb, trial, {k: v for k, v in data.items() if k != "id"}, site)
    t.clear()
    t.update(trial)
    return t


def render_task(t: Row) -> Row:
    return copy.deepcopy(t)
