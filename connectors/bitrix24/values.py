"""Names, constants and value helpers shared by the Bitrix24 connector's parts."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from syncd.schema import to_datetime

ORIGINATOR = "syncd"
STREAMS: dict[str, str] = {"deals": "deal", "contacts": "contact", "companies": "company", "leads": "lead"}
CRM_KINDS = ("deal", "contact", "company", "lead")
MULTI = ("PHONE", "EMAIL", "WEB", "IM")
MULTI_KINDS = {"contact", "company", "lead"}
REQ_FIELDS = ("RQ_INN", "RQ_KPP", "RQ_OGRN", "RQ_COMPANY_FULL_NAME", "RQ_DIRECTOR")
BANK_FIELDS = ("RQ_BIK", "RQ_ACC_NUM", "RQ_COR_ACC_NUM", "RQ_BANK_NAME", "RQ_BANK_ADDR")
ADDRESS_PARTS = ("ADDRESS_1", "ADDRESS_2", "CITY", "REGION", "PROVINCE", "POSTAL_CODE", "COUNTRY")
ROW_FIELDS = ("ID", "PRODUCT_ID", "PRODUCT_NAME", "PRICE", "QUANTITY", "DISCOUNT_TYPE_ID", "DISCOUNT_RATE",
              "DISCOUNT_SUM", "TAX_RATE", "TAX_INCLUDED", "MEASURE_CODE", "MEASURE_NAME", "SORT")
PSEUDO: dict[str, tuple[str, ...]] = {
    "deal": ("PRODUCT_ROWS", "DELIVERY_PRICE"),
    "company": REQ_FIELDS + ("BANK_DETAILS", "ADDRESS_LEGAL"),
}
WRITES = frozenset({"deal", "contact", "company", "lead", "product", "task", "comment", "notify", "call"})
EVENT_STREAMS = {"DEAL": "deals", "CONTACT": "contacts", "COMPANY": "companies", "LEAD": "leads",
                 "REQUISITE": "companies", "BANKDETAIL": "companies"}
REQ_OWNER_COMPANY = 4
LOOKUP_KEYS = 500          # external keys per look-up command (`@ORIGIN_ID` list)
ADDRESS_OWNER_REQUISITE = 8
ADDRESS_LEGAL = 6


def parse_bx_time(v: Any) -> dt.datetime | None:
    if not v:
        return None
    try:
        return to_datetime(str(v))     # the canonical parser: ISO with Z, naive = UTC
    except ValueError:
        return None


def utc_version(v: Any) -> str | None:
    d = parse_bx_time(v)
    return d.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00") if d else None


def parse_cursor(cursor: str | None) -> tuple[dt.datetime | None, int, str | None]:
    """`DATE_MODIFY|ID` (companies add `|<requisite DATE_MODIFY>`)."""
    if not cursor:
        return None, 0, None
    parts = cursor.split("|")
    t = parse_bx_time(parts[0])
    try:
        i = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    except ValueError:
        i = 0
    return t, i, (parts[2] if len(parts) > 2 and parts[2] else None)


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


def multi_items(value: Any) -> list[dict[str, Any]]:
    """PHONE/EMAIL as given by a mapping: a string, a list of strings or of {VALUE, VALUE_TYPE}."""
    if value is None or value == "":
        return []
    if isinstance(value, (str, int)):
        value = [value]
    if isinstance(value, Mapping):
        value = list(value.values())
    out = []
    for x in value:
        if isinstance(x, Mapping):
            v = x.get("VALUE", x.get("value"))
            if v in (None, ""):
                continue
            out.append({"VALUE": str(v), "VALUE_TYPE": str(x.get("VALUE_TYPE") or x.get("valueType") or "WORK")})
        elif x not in (None, ""):
            out.append({"VALUE": str(x), "VALUE_TYPE": "WORK"})
    return out


def merge_multi(kind: str, current: Any, given: Any) -> list[dict[str, Any]]:
    """The entries of `given` that `current` lacks (normalized compare); nothing is deleted."""
    have = {norm_multi(kind, x.get("VALUE") if isinstance(x, Mapping) else x) for x in (current or [])}
    out = []
    for it in multi_items(given):
        n = norm_multi(kind, it["VALUE"])
        if n and n not in have:
            have.add(n)
            out.append(it)
    return out


def multi_values(v: Any) -> list[str]:
    if not v:
        return []
    return [str(x.get("VALUE")) if isinstance(x, Mapping) else str(x) for x in v]


def result_rows(result: Any) -> list[dict[str, Any]]:
    if isinstance(result, list):
        return result
    if isinstance(result, Mapping):
        for v in result.values():
            if isinstance(v, list):
                return v
    return []


def address_text(a: Mapping[str, Any] | None) -> str | None:
    if not a:
        return None
    parts = [str(a.get(k)).strip() for k in ADDRESS_PARTS if a.get(k) not in (None, "")]
    return ", ".join(parts) or None
