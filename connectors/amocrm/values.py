"""Values between amoCRM's wire form and the fields the engine sees: records decoded, custom field
values encoded, PHONE/EMAIL merged, syncd's key stamp and the source it names."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation, ROUND_HALF_UP
from typing import Any

from connectors.amocrm.meta import Catalog, CustomField
from syncd.schema import to_bool, to_datetime

MULTI = ("PHONE", "EMAIL")
RECORD_KINDS = ("lead", "contact", "company")
BUILTINS: dict[str, tuple[str, ...]] = {
    "lead": ("name", "price", "pipeline", "status", "pipeline_id", "status_id", "responsible_user_id",
             "contact_id", "company_id", "created_at", "updated_at", "closed_at"),
    "contact": ("name", "first_name", "last_name", "responsible_user_id", "company_id", "created_at",
                "updated_at"),
    "company": ("name", "responsible_user_id", "created_at", "updated_at"),
}


def utc_version(ts: Any) -> str | None:
    """A record's version: its updated_at as an ISO UTC string (sorts like the time)."""
    if ts in (None, ""):
        return None
    return dt.datetime.fromtimestamp(int(ts), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def to_unix(v: Any) -> int | None:
    """Unix seconds from an int, a float, digits or an ISO date/datetime (naive = UTC)."""
    if v in (None, ""):
        return None
    if isinstance(v, bool):
        raise ValueError(f"not a time: {v!r}")
    if isinstance(v, (int, float, Decimal)):
        return int(v)
    if isinstance(v, dt.datetime):
        return int((v if v.tzinfo else v.replace(tzinfo=dt.UTC)).timestamp())
    if isinstance(v, dt.date):
        return int(dt.datetime(v.year, v.month, v.day, tzinfo=dt.UTC).timestamp())
    s = str(v).strip()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return int(float(s))
    return int(to_datetime(s).timestamp())


def to_price(v: Any) -> int:
    """amoCRM keeps a lead's price in whole units: "1234.50" -> 1235 (half up)."""
    if v in (None, ""):
        return 0
    try:
        return int(Decimal(str(v)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    except InvalidOperation:
        raise ValueError(f"price {v!r} is not a number") from None


# -- the key stamp ----------------------------------------------------------------------------------
def origin_of(stamp: str | None) -> tuple[str, str] | None:
    """The record a stamp names: "<system>:<id>" -> (system, id); syncd's own keys ("syncd-…") and
    anything else name none."""
    if not stamp or stamp.startswith("syncd-") or ":" not in stamp:
        return None
    system, _, ext = stamp.partition(":")
    return (system, ext) if re.fullmatch(r"[A-Za-z0-9_.\-]+", system) and ext else None


def stamp_of(origin: tuple[str, str] | None, external_key: str) -> str:
    """The key a create carries: its source record ("shop:1001"), else syncd's key."""
    return f"{origin[0]}:{origin[1]}" if origin is not None else external_key


# -- decoding -----------------------------------------------------------------------------------------
def custom_values(rec: Mapping[str, Any], known: list[CustomField]) -> dict[str, Any]:
    """Custom fields by code (else cf_<id>): multitext and multiselect as lists of values, others as
    the single value; a field the account has but the record leaves empty is None ([] for lists)."""
    out: dict[str, Any] = {f.key: ([] if f.type in ("multitext", "multiselect") else None) for f in known}
    for e in rec.get("custom_fields_values") or []:
        key = e.get("field_code") or f"cf_{e.get('field_id')}"
        vals = [v.get("value") for v in e.get("values") or [] if isinstance(v, Mapping)]
        if e.get("field_type") in ("multitext", "multiselect") or key in MULTI:
            out[key] = [str(v) for v in vals if v not in (None, "")]
        else:
            out[key] = vals[0] if vals else None
    return out


def decode(kind: str, rec: Mapping[str, Any], catalog: Catalog) -> dict[str, Any]:
    fields: dict[str, Any] = {"name": rec.get("name")}
    emb = rec.get("_embedded") or {}
    uid = rec.get("responsible_user_id")
    fields["responsible_user_id"] = str(uid) if uid not in (None, 0) else None
    for k in ("created_at", "updated_at"):
        fields[k] = rec.get(k)
    companies = [str(c["id"]) for c in emb.get("companies") or [] if c.get("id")]
    if kind == "lead":
        fields["price"] = rec.get("price")
        fields["pipeline_id"], fields["status_id"] = rec.get("pipeline_id"), rec.get("status_id")
        fields["pipeline"], fields["status"] = catalog.names_of(rec.get("pipeline_id"), rec.get("status_id"))
        fields["closed_at"] = rec.get("closed_at")
        contacts = emb.get("contacts") or []
        main = next((c for c in contacts if c.get("is_main")), contacts[0] if contacts else None)
        fields["contact_id"] = str(main["id"]) if main else None
        fields["company_id"] = companies[0] if companies else None
    elif kind == "contact":
        fields["first_name"], fields["last_name"] = rec.get("first_name"), rec.get("last_name")
        fields["company_id"] = companies[0] if companies else None
    fields.update(custom_values(rec, catalog.fields(kind)))
    return fields


# -- encoding -----------------------------------------------------------------------------------------
def norm_multi(kind: str, value: Any) -> str:
    s = str(value or "").strip()
    if kind == "PHONE":
        d = re.sub(r"\D", "", s)
        if len(d) == 11 and d.startswith("8"):
            d = "7" + d[1:]
        elif len(d) == 10:
            d = "7" + d
        return d
    return s.lower()


def multi_list(value: Any) -> list[str]:
    """PHONE/EMAIL as a mapping gives them: a string, a list of strings or of {VALUE}/{value} dicts."""
    if value in (None, ""):
        return []
    if isinstance(value, (str, int)):
        value = [value]
    out = []
    for x in value:
        v = x.get("VALUE", x.get("value")) if isinstance(x, Mapping) else x
        if v not in (None, ""):
            out.append(str(v))
    return out


def merge_multi(kind: str, current: list[Any], given: Any) -> list[str]:
    """The values of `given` that `current` lacks (by digits / lower case); nothing is deleted."""
    have = {norm_multi(kind, v) for v in current}
    out = []
    for v in multi_list(given):
        n = norm_multi(kind, v)
        if n and n not in have:
            have.add(n)
            out.append(v)
    return out


def cf_values(f: CustomField, value: Any) -> list[dict[str, Any]] | None:
    """A custom field's `values` for a write (None clears the field)."""
    if value is None or value == "" or value == [] or value == ():
        return None
    if f.type == "multitext":
        return [{"value": v, "enum_code": "WORK"} for v in multi_list(value)] or None
    if f.type == "multiselect":
        items = value if isinstance(value, (list, tuple, set)) else [value]
        return [{"enum_id": f.enums[str(v)]} if str(v) in f.enums else {"value": str(v)} for v in items]
    if f.type in ("select", "radiobutton"):
        return [{"enum_id": f.enums[str(value)]} if str(value) in f.enums else {"value": str(value)}]
    if f.type == "checkbox":
        return [{"value": bool(to_bool(value))}]
    if f.type in ("date", "date_time", "birthday"):
        return [{"value": to_unix(value)}]
    if f.type == "numeric":
        return [{"value": str(value)}]
    return [{"value": str(value)}]


def current_multi(rec: Mapping[str, Any] | None, f: CustomField) -> list[dict[str, Any]]:
    """A multitext field's values on a record as a write gives them back (amoCRM replaces a
    field's values whole: a merge sends what is there plus what is new)."""
    for e in (rec or {}).get("custom_fields_values") or []:
        if e.get("field_id") == f.id:
            return [{"value": v["value"], **({"enum_id": v["enum_id"]} if v.get("enum_id") else {})}
                    for v in e.get("values") or []]
    return []
