"""What the engine sees of RetailCRM records (the API's own field names, decoded and flattened) and
how syncd's field sets become the API's entities again."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

# kind -> (API path, list answer key, entity parameter / single answer key)
KINDS: dict[str, tuple[str, str, str]] = {
    "order": ("orders", "orders", "order"),
    "customer": ("customers", "customers", "customer"),
    "customer_corporate": ("customers-corporate", "customersCorporate", "customerCorporate"),
}
STREAMS: dict[str, str] = {"orders": "order", "customers": "customer", "customers_corporate": "customer_corporate"}
WRITES = frozenset({*KINDS, "task", "call"})

ORDER_PLAIN = ("number", "externalId", "status", "orderMethod", "firstName", "lastName", "patronymic", "email",
               "phone", "customerComment", "managerComment", "createdAt", "statusUpdatedAt", "site")
ORDER_MONEY = ("summ", "totalSumm", "prepaySum")
CUSTOMER_PLAIN = ("externalId", "firstName", "lastName", "patronymic", "email", "createdAt", "site")
CORPORATE_PLAIN = ("externalId", "nickName", "email", "createdAt", "site")
REQUISITES = ("INN", "KPP", "OGRN")            # of a corporate customer's main company's contragent
ITEM_FIELDS = ("offer", "productName", "initialPrice", "quantity")
TASK_FIELDS = ("text", "commentary", "datetime", "performerId", "order_id", "customer_id", "complete")
# computed by RetailCRM (or set once by it): read, never written
READ_ONLY: dict[str, frozenset[str]] = {
    "order": frozenset({"summ", "totalSumm", "prepaySum", "statusUpdatedAt", "site"}),
    "customer": frozenset({"site"}),
    "customer_corporate": frozenset({"site"}),
}
PSEUDO: dict[str, tuple[str, ...]] = {
    "order": ("delivery_cost", "delivery_address", "items", "customer_id", "managerId"),
    "customer": ("phones", "managerId"),
    "customer_corporate": ("phones", "managerId", *REQUISITES),
    "task": TASK_FIELDS,
}


def money(v: Any) -> str | None:
    """Money as a two-place decimal string (the API prints 1299.5 or 779)."""
    if v in (None, ""):
        return None
    try:
        return str(Decimal(str(v)).quantize(Decimal("0.01")))
    except InvalidOperation:
        return None


def number(v: Any) -> str | None:
    """A quantity: "2", "1.5" (no trailing zeros)."""
    if v in (None, ""):
        return None
    try:
        d = Decimal(str(v)).normalize()
    except InvalidOperation:
        return None
    return str(d.quantize(Decimal(1))) if d == d.to_integral() else str(d)


def digits(phone: Any) -> str:
    """A phone compared by its digits, 8XXXXXXXXXX as 7XXXXXXXXXX (a Russian trunk prefix)."""
    d = re.sub(r"\D", "", str(phone or ""))
    return "7" + d[1:] if len(d) == 11 and d.startswith("8") else d


def local_time(value: Any, tz: str) -> dt.datetime | None:
    """The account prints local time without an offset ("2024-03-01 12:30:00")."""
    if not value:
        return None
    try:
        t = dt.datetime.strptime(str(value)[:19], "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return t.replace(tzinfo=zoneinfo.ZoneInfo(tz))


def _custom(fields: dict[str, Any], entity: Mapping[str, Any]) -> None:
    custom = entity.get("customFields")
    if isinstance(custom, Mapping):                 # PHP prints an empty map as []
        for code, v in custom.items():
            fields[f"custom_{code}"] = v


def _nonzero(v: str | None) -> str | None:
    return None if v is None or Decimal(v) == 0 else v


def _str(v: Any) -> str | None:
    return None if v in (None, "") else str(v)


def decode_order(o: Mapping[str, Any]) -> dict[str, Any]:
    f: dict[str, Any] = {k: o.get(k) for k in ORDER_PLAIN if o.get(k) not in (None, "")}
    # a sum of 0 is no sum: RetailCRM prints 0 for an order without delivery, payments or lines
    f.update({k: _nonzero(money(o.get(k))) for k in ORDER_MONEY})
    f["managerId"] = _str(o.get("managerId"))
    d = o.get("delivery") or {}
    f["delivery_cost"] = _nonzero(money(d.get("cost")))
    f["delivery_address"] = _str((d.get("address") or {}).get("text"))
    f["items"] = [{"offer": _str((it.get("offer") or {}).get("externalId")), "productName": it.get("productName"),
                   "initialPrice": number(it.get("initialPrice")), "quantity": number(it.get("quantity"))}
                  for it in o.get("items") or []]
    f["customer_id"] = _str((o.get("customer") or {}).get("id"))
    _custom(f, o)
    return f


def decode_customer(c: Mapping[str, Any], company: Mapping[str, Any] | None = None) -> dict[str, Any]:
    corporate = c.get("type") == "customer_corporate"
    plain = CORPORATE_PLAIN if corporate else CUSTOMER_PLAIN
    f: dict[str, Any] = {k: c.get(k) for k in plain if c.get(k) not in (None, "")}
    f["phones"] = [str(p.get("number")) for p in c.get("phones") or [] if isinstance(p, Mapping) and p.get("number")]
    f["managerId"] = _str(c.get("managerId"))
    if corporate:
        agent = (company or {}).get("contragent") or {}
        f.update({k: _str(agent.get(k)) for k in REQUISITES})
    _custom(f, c)
    return f


def decode_task(t: Mapping[str, Any]) -> dict[str, Any]:
    return {"text": t.get("text"), "commentary": t.get("commentary"), "datetime": t.get("datetime"),
            "performerId": _str(t.get("performer")), "order_id": _str((t.get("order") or {}).get("id")),
            "customer_id": _str((t.get("customer") or {}).get("id")), "complete": bool(t.get("complete"))}


def _int_or(v: Any) -> Any:
    return int(v) if str(v).isdigit() else v


def encode(kind: str, fields: Mapping[str, Any], *, current: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """syncd's fields (system names) as the API's entity; `current` (the record as read) lets an order's
    items keep their ids (an item sent without its id is a new line) and phones merge."""
    out: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    skip = READ_ONLY.get(kind, frozenset())
    for k, v in fields.items():
        if k in skip or k in PSEUDO.get(kind, ()):
            continue
        if k.startswith("custom_"):
            custom[k[len("custom_"):]] = v
        else:
            out[k] = v
    if custom:
        out["customFields"] = custom
    if "managerId" in fields:
        out["managerId"] = _int_or(fields["managerId"]) if fields["managerId"] not in (None, "") else None
    if kind == "order":
        _encode_order(out, fields, current)
    elif kind in ("customer", "customer_corporate"):
        if "phones" in fields:
            merged = merge_phones((current or {}).get("phones"), fields["phones"])
            if merged is not None:
                out["phones"] = [{"number": p} for p in merged]
    return out


def _encode_order(out: dict[str, Any], fields: Mapping[str, Any], current: Mapping[str, Any] | None) -> None:
    delivery: dict[str, Any] = {}
    if "delivery_cost" in fields:
        delivery["cost"] = fields["delivery_cost"] if fields["delivery_cost"] not in (None, "") else 0
    if "delivery_address" in fields:
        delivery["address"] = {"text": fields["delivery_address"] or ""}
    if delivery:
        out["delivery"] = delivery
    if fields.get("customer_id") not in (None, ""):
        out["customer"] = {"id": _int_or(fields["customer_id"])}
    if "items" in fields:
        # the whole composition (the API removes what is left out); lines that were there keep their
        # ids, matched by offer and name, so an unchanged line is not removed and added again
        pool = list((current or {}).get("items") or [])
        items = []
        for it in fields["items"] or []:
            it = dict(it)
            row: dict[str, Any] = {k: it[k] for k in ("productName", "initialPrice", "quantity")
                                   if it.get(k) not in (None, "")}
            if it.get("offer") not in (None, ""):
                row["offer"] = {"externalId": str(it["offer"])}
            for j, have in enumerate(pool):
                if (_str((have.get("offer") or {}).get("externalId")) == _str(it.get("offer"))
                        and (have.get("productName") or None) == (it.get("productName") or None)):
                    row["id"] = have["id"]
                    del pool[j]
                    break
            items.append(row)
        out["items"] = items


def merge_phones(have: Any, want: Any) -> list[str] | None:
    """The numbers the record keeps: its own plus those of `want` whose digits it lacks (never deleted:
    a number a manager typed stays). None when nothing is new."""
    cur = [str(p.get("number") if isinstance(p, Mapping) else p) for p in have or []]
    known = {digits(p) for p in cur}
    add = []
    for p in want if isinstance(want, (list, tuple)) else [want] if want else []:
        if p and digits(p) not in known:
            known.add(digits(p))
            add.append(str(p))
    return cur + add if add else None


def encode_task(fields: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: fields[k] for k in ("text", "commentary", "datetime", "complete") if k in fields}
    if "datetime" in out and out["datetime"]:
        out["datetime"] = task_datetime(out["datetime"])
    if fields.get("performerId") not in (None, ""):
        out["performerId"] = _int_or(fields["performerId"])
    if fields.get("order_id") not in (None, ""):
        out["order"] = {"id": _int_or(fields["order_id"])}
    if fields.get("customer_id") not in (None, ""):
        out["customer"] = {"id": _int_or(fields["customer_id"])}
    return out


def task_datetime(v: Any) -> str:
    """"Y-m-d H:i", as the API takes a task's time (an ISO datetime is cut to the minute)."""
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M")
    s = str(v).replace("T", " ")
    return s[:16] if re.match(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}", s) else (s + " 00:00" if len(s) == 10 else s)
