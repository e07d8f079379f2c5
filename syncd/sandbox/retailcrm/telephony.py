"""Telephony: integration modules (``integration-modules/{code}``, ``integrations.telephony``) and the
calls history upload (``telephony/calls/upload``). See the package docstring for sources and
assumptions."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from typing import Any

from syncd.sandbox.retailcrm.state import FMT, ApiError, Sandbox

Row = dict[str, Any]
TYPES = ("in", "out")
# retailcrm/api-client-php src/Enum/Telephony/CallResult.php
RESULTS = ("answered", "busy", "failed", "no answer", "not allowed", "unknown")
NO_TELEPHONY = "Telephony module is not enabled"       # assumption: the live text is not published
MAX_CALLS = 50                                          # retailcrm/api-client-dotnet: "50 or less records"


def _digits(v: Any) -> str:
    d = re.sub(r"\D", "", str(v or ""))
    return d[-10:]


def module_edit(sb: Sandbox, code: str, data: Row) -> tuple[int, Row]:
    """integration-modules/{code}/edit: register (201) or change (200) a module; `code` is the path's."""
    if data.get("code") not in (None, code):
        raise ApiError(400, "Errors in the entity format", {"code": "The code must match the one in the path."})
    have = sb.modules.get(code)
    errors = {k: "This value should not be blank." for k in ("integrationCode", "name", "clientId")
              if not data.get(k) and not (have or {}).get(k)}
    if errors:
        raise ApiError(400, "Errors in the entity format", errors)
    row = {**(have or {}), **copy.deepcopy(data), "code": code}
    row.setdefault("active", True)
    sb.modules[code] = row
    return (200 if have else 201), {"success": True, "info": {}}


def module_get(sb: Sandbox, code: str) -> Row:
    m = sb.modules.get(code)
    if m is None:
        raise ApiError(404, "Not found")
    return copy.deepcopy(m)


def _telephony_modules(sb: Sandbox) -> list[Row]:
    return [m for m in sb.modules.values() if m.get("active") and (m.get("integrations") or {}).get("telephony")]


def upload(sb: Sandbox, raw: Any, sites: list[str]) -> Row:
    """telephony/calls/upload: every call checked first (nothing saved if one is bad); a call whose
    externalId was uploaded before is not saved again but listed in ``duplicateCalls``."""
    modules = _telephony_modules(sb)
    if not modules:
        raise ApiError(400, NO_TELEPHONY)
    if raw in (None, ""):
        raise ApiError(400, "Parameter 'calls' is missing")
    try:
        calls = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        calls = None
    if not isinstance(calls, list) or not calls or not all(isinstance(c, dict) for c in calls):
        raise ApiError(400, "Errors in the entity format", {"calls": "This value should be a list of calls."})
    if len(calls) > MAX_CALLS:
        raise ApiError(400, "Errors in the entity format", {"calls": f"This collection should contain "
                                                                      f"{MAX_CALLS} elements or less."})
    errors: dict[str, str] = {}
    clients = {str(m.get("clientId")) for m in modules}
    for i, c in enumerate(calls):
        try:
            dt.datetime.strptime(str(c.get("date")), FMT)
        except ValueError:
            errors[f"calls[{i}].date"] = "This value is not a valid datetime."
        if c.get("type") not in TYPES:
            errors[f"calls[{i}].type"] = "The value you selected is not a valid choice."
        if not c.get("phone"):
            errors[f"calls[{i}].phone"] = "This value should not be blank."
        if c.get("result") not in (None, "") and c["result"] not in RESULTS:
            errors[f"calls[{i}].result"] = "The value you selected is not a valid choice."
        if c.get("duration") not in (None, "") and not str(c["duration"]).isdigit():
            errors[f"calls[{i}].duration"] = "This value should be of type integer."
        if c.get("clientId") not in (None, "") and str(c["clientId"]) not in clients:
            errors[f"calls[{i}].clientId"] = "Telephony module not found."
        if c.get("site") not in (None, "") and c["site"] not in sites:
            errors[f"calls[{i}].site"] = "Site not found."
        if c.get("userId") not in (None, "") and int(c["userId"]) not in sb.users:
            errors[f"calls[{i}].userId"] = "User not found."
    if errors:
        raise ApiError(400, "Errors in the entity format", errors)
    done, duplicates = 0, []
    seen = {str(c["externalId"]) for c in sb.calls.values() if c.get("externalId")}
    for c in calls:
        ext = str(c["externalId"]) if c.get("externalId") not in (None, "") else None
        if ext is not None and ext in seen:
            duplicates.append(ext)
            continue
        cid = sb.next_id("call")
        row: Row = {"id": cid, "date": c["date"], "type": c["type"], "phone": str(c["phone"]),
                    "result": c.get("result") or "unknown", "duration": int(c.get("duration") or 0),
                    "externalId": ext, "recordUrl": c.get("recordUrl"), "externalPhone": c.get("externalPhone"),
                    "code": c.get("code"), "site": c.get("site"), "clientId": c.get("clientId"),
                    "createdAt": sb.now_s()}
        row["userId"] = int(c["userId"]) if c.get("userId") not in (None, "") else next(
            (u["id"] for u in sb.users.values() if c.get("code") and str(u.get("code")) == str(c["code"])), None)
        tail = _digits(c["phone"])
        found = [cu["id"] for cu in sb.customers.values()
                 if (not c.get("site") or cu["site"] == c["site"]) and tail
                 and any(_digits(p.get("number")) == tail for p in cu.get("phones", []))]
        row["customerId"] = found[0] if found else None          # the oldest customer with the number
        sb.calls[cid] = row
        if ext:
            seen.add(ext)
        done += 1
    out: Row = {"success": True, "processedCallsCount": done}
    if duplicates:
        out["duplicateCalls"] = duplicates
    return out
