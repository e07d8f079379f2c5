"""What every group of REST methods shares: the call's context, a page of results, argument and
value helpers. Kept apart from `methods` so the method groups (tasks, timeline, im) and `methods`,
which dispatches to them, do not import each other."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from syncd.sandbox.bitrix24.portal import ALL_SCOPES, TZ, BxError, Portal

PAGE = 50
ID_TYPES = {"integer", "user", "crm_company", "crm_contact", "crm_lead", "crm_category", "crm_deal"}


@dataclass
class Ctx:
    portal: Portal
    user_id: int
    auth: str                       # "webhook" | "oauth"
    scopes: list[str] = field(default_factory=lambda: list(ALL_SCOPES))
    who: str = ""
    in_batch: bool = False
    source: str = "rest"            # "rest" | "ui"


@dataclass
class Page:
    rows: Any
    total: int | None
    next: int | None
    wrap: str | None = None         # {"tasks": rows} style answers


class NotFound(BxError):
    def __init__(self, what: str = "Not found") -> None:
        super().__init__("ERROR_NOT_FOUND", what, 404)


def core(msg: str) -> BxError:
    return BxError("ERROR_CORE", msg, 400)


def parse_dt(v: Any) -> dt.datetime | None:
    if v in (None, "", False):
        return None
    s = str(v).strip()
    for fmt in ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y"):
        try:
            return dt.datetime.strptime(s, fmt).replace(tzinfo=TZ)
        except ValueError:
            pass
    try:
        d = dt.datetime.fromisoformat(s)
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=TZ)


def fmt_dt(d: dt.datetime) -> str:
    return d.astimezone(TZ).replace(microsecond=0).isoformat()


def norm_value(ftype: str, v: Any) -> Any:
    if v is None or v == "":
        return None if ftype != "string" else ("" if v == "" else None)
    if isinstance(v, (list, dict)) and ftype != "multi":
        if ftype in ID_TYPES and isinstance(v, list):
            return [norm_value(ftype, x) for x in v]
        return v
    if ftype in ID_TYPES:
        try:
            return str(int(float(v)))
        except (TypeError, ValueError):
            raise core(f"Некорректное значение: {v!r}")
    if ftype == "double":
        try:
            return f"{float(v):.2f}"
        except (TypeError, ValueError):
            raise core(f"Некорректное число: {v!r}")
    if ftype == "char":
        return "Y" if str(v).upper() in ("Y", "1", "TRUE") or v is True else "N"
    if ftype in ("date", "datetime"):
        d = parse_dt(v)
        if d is None:
            raise core(f"Некорректная дата: {v!r}")
        return fmt_dt(d)
    if ftype == "boolean":
        return "1" if str(v).upper() in ("Y", "1", "TRUE") or v is True else "0"
    return str(v)


def cmp_value(v: Any, ftype: str | None) -> Any:
    if v is None or v == "":
        return None
    if ftype in ("date", "datetime"):
        d = parse_dt(v)
        return d.timestamp() if d else str(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v).lower()


def paginate(rows: list[Any], start: Any) -> Page:
    try:
        s = int(start or 0)
    except (TypeError, ValueError):
        s = 0
    if s == -1:
        return Page(rows[:PAGE], None, None)
    s = max(0, s)
    chunk = rows[s:s + PAGE]
    return Page(chunk, len(rows), s + PAGE if s + PAGE < len(rows) else None)


def arg(params: dict[str, Any], name: str, default: Any = None) -> Any:
    for k, v in params.items():
        if str(k).lower() == name.lower():
            return v
    return default


def id_arg(params: dict[str, Any], name: str = "id") -> int:
    v = arg(params, name)
    try:
        return int(v)
    except (TypeError, ValueError):
        raise BxError("ERROR_CORE" if v not in (None, "") else "ERROR_ARGUMENT",
                      "ID is not defined or invalid.", 400)
