"""External telephony as the cloud portal answers it: ``telephony.externalCall.register|finish|attachRecord|
show|hide|searchCrmEntities``, ``voximplant.statistic.get`` and the call activities they leave in
``crm.activity.list|get``; users carry ``UF_PHONE_INNER`` (their extension).

Sources (read for this module):

* b24restdocs (github bitrix24/b24restdocs, = apidocs.bitrix24.com) ``api-reference/telephony/``
  ``telephony-external-call-register.md``, ``-finish.md``, ``-attach-record.md``,
  ``-search-crm-entities.md``, ``voximplant/voximplant-statistic-get.md``: parameters, answers, error
  texts ("Unknown TYPE", "USER_ID or USER_PHONE_INNER should be set", "User is not found or is not
  active", "Unsupported phone number format", "PHONE_NUMBER is empty", attachRecord's errors with an
  empty code), "the method works only in the context of an application" (WRONG_AUTH_TYPE) for
  register and finish, the 30-minute re-registration rule and its keys (PHONE_NUMBER, TYPE, user,
  LINE_NUMBER, EXTERNAL_CALL_ID; CRM fields and CALL_START_DATE are not keys), "to create a CRM
  activity for the call, you must also call finish", STATUS_CODE defaults (200 if DURATION > 0 else 304).
* The voximplant module's own code as published (``Bitrix\\Voximplant\\Rest\\Helper``,
  ``CVoxImplantCrmHelper``, ``CVoxImplantRestService``): finish looks the call up among *active*
  calls and deletes it at the end (so a second finish answers "Call is not found (call should be
  registered prior to finishing" — that text, its missing parenthesis included); CALL_STATUS is 1 iff
  DURATION > 0; CALL_START_DATE in finish's answer is a DateTime object, which JSON-encodes as ``{}``
  (the docs' example shows exactly that); the activity is made at finish (``AddCall``): TYPE_ID 2
  (call), PROVIDER_ID VOXIMPLANT_CALL, ORIGIN_ID ``VI_<CALL_ID>``, DIRECTION 1 incoming (TYPE 2, 3) /
  2 outgoing, START_TIME = call start, END_TIME = start + duration, RESPONSIBLE_ID = the finishing
  user; incoming and callback calls are COMPLETED unless missed (304: COMPLETED N and
  ``SETTINGS.MISSED_CALL``), outgoing ones always COMPLETED; entities auto-created for the call get
  the finishing user as responsible; no lead is created when the number belongs to a portal user's
  extension, or when the call's main entity is already a lead or a known client; the lead is
  titled "<number> - Входящий звонок" (Исходящий / Обратный), has the number as a WORK phone and
  SOURCE_ID = CRM_SOURCE when it is a known source, else CALL; attachRecord needs a *finished*
  call ("Call is not found in the statistic table. Looks like it is not finished yet.") and a
  .wav/.mp3 name; a new record replaces the previous one; FILENAME without content answers
  ``uploadUrl`` + ``fieldName`` "file"; searchCrmEntities returns CRM_ENTITY_TYPE/ID, ASSIGNED_BY_ID,
  NAME and ASSIGNED_BY {ID, TIMEMAN_STATUS, USER_PHONE_INNER, WORK_PHONE, PERSONAL_PHONE,
  PERSONAL_MOBILE}.

Sandbox choices and assumptions where the sources are silent or beyond reach:

* Number matching: a phone is compared by its digits only (any spelling: ``+7 (912) 345-67-01``,
  ``8 912 345 67 01``, ``79123456701``); the portal is Russian, so an 11-digit number starting with 8
  and a bare 10-digit number count as +7 numbers (Bitrix normalises through its phone parser with
  the portal's country). Search order and the call's main entity: contacts, then companies, then
  leads (oldest first). A contact's or company's open deal (the newest) is bound to the activity too.
* No-leads mode ("simple CRM", control knob ``leads_enabled: false``): CRM_CREATE makes a contact
  (NAME = the number as written by the caller) and a deal titled like the lead would be; the
  contact is the call's main entity, the deal is bound to the activity as well;
  CRM_CREATED_LEAD is null and CRM_CREATED_ENTITIES lists both.
* register/finish through an inbound webhook answer 401 WRONG_AUTH_TYPE (docs: application context
  only). Knob ``app_only: false`` lets webhooks call them. The other methods take webhooks (their docs'
  examples use one). REST_APP_ID is 1 and REST_APP_NAME "syncd sandbox app" for the OAuth app.
* A RECORD_URL given to finish (deprecated by the docs) or attachRecord is not downloaded: the
  record is registered as a file of the activity at once (the portal downloads it in the background);
  a loopback/private/link-local address is refused, as documented ("Record URL resolves to a
  non-public address and was blocked."), except through finish, where the portal's agent fails quietly
  (the sandbox then records nothing). FILE_ID / file ids come from one per-portal counter.
* show/hide answer true for an active call and false otherwise (as ``Helper`` does) and the sandbox
  keeps which users see the card. OnExternalCallStart / OnExternalCallBackStart (click-to-call from
  the portal UI) are not modelled.
* TYPE 5 (informational call, listed by the current docs) is accepted besides 1-4.
* crm.activity.list: filter (ops ``= ! > >= < <= % @``) on any field, OWNER_ID/OWNER_TYPE_ID match
  any binding as on the portal; order, select (COMMUNICATIONS only when selected), 50 per page.

Control API (see ``app.py``): ``GET|PATCH /_sandbox/<p>/telephony`` (settings ``leads_enabled``,
``app_only``; GET adds active calls, statistics and call activities), ``GET /_sandbox/<p>/telephony/
calls|statistics|activities``; ``POST|PATCH /_sandbox/<p>/users[/<id>]`` take ``phone_inner``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlparse

from syncd.sandbox.bitrix24.common import Ctx, Page, arg, fmt_dt, paginate, parse_dt
from syncd.sandbox.bitrix24.portal import TZ, BxError, Portal

TYPE_OWNER = {"LEAD": 1, "DEAL": 2, "CONTACT": 3, "COMPANY": 4}
OWNER_NAME = {v: k for k, v in TYPE_OWNER.items()}
TABLE = {"LEAD": "lead", "DEAL": "deal", "CONTACT": "contact", "COMPANY": "company"}
INCOMING_TYPES = ("2", "3")
TITLES = {"1": "Исходящий звонок", "2": "Входящий звонок", "3": "Входящий звонок", "4": "Обратный звонок",
          "5": "Исходящий звонок"}
DEDUP_WINDOW = 30 * 60
APP_ID, APP_NAME = 1, "syncd sandbox app"
ACTIVITY_FIELDS = ("ID", "OWNER_ID", "OWNER_TYPE_ID", "TYPE_ID", "PROVIDER_ID", "PROVIDER_TYPE_ID",
                   "PROVIDER_GROUP_ID", "ASSOCIATED_ENTITY_ID", "SUBJECT", "CREATED", "LAST_UPDATED",
                   "START_TIME", "END_TIME", "DEADLINE", "COMPLETED", "STATUS", "RESPONSIBLE_ID", "PRIORITY",
                   "NOTIFY_TYPE", "NOTIFY_VALUE", "DESCRIPTION", "DESCRIPTION_TYPE", "DIRECTION", "LOCATION",
                   "SETTINGS", "ORIGINATOR_ID", "ORIGIN_ID", "AUTHOR_ID", "EDITOR_ID", "FILES",
                   "RESULT_MARK", "RESULT_STREAM")
STAT_FIELDS = ("ID", "PORTAL_USER_ID", "PORTAL_NUMBER", "PHONE_NUMBER", "CALL_ID", "EXTERNAL_CALL_ID",
               "CALL_CATEGORY", "CALL_LOG", "CALL_DURATION", "CALL_START_DATE", "CALL_RECORD_URL", "CALL_VOTE",
               "COST", "COST_CURRENCY", "CALL_FAILED_CODE", "CALL_FAILED_REASON", "CRM_ENTITY_TYPE",
               "CRM_ENTITY_ID", "CRM_ACTIVITY_ID", "REST_APP_ID", "REST_APP_NAME", "TRANSCRIPT_ID",
               "TRANSCRIPT_PENDING", "SESSION_ID", "REDIAL_ATTEMPT", "COMMENT", "RECORD_DURATION",
               "RECORD_FILE_ID", "CALL_TYPE")
STAT_INT = {"ID", "PORTAL_USER_ID", "CALL_DURATION", "CALL_VOTE", "CRM_ENTITY_ID", "CRM_ACTIVITY_ID", "CALL_TYPE",
            "REST_APP_ID", "RECORD_FILE_ID", "COST"}


@dataclass
class Settings:
    leads_enabled: bool = True      # False: the portal works without leads (deal + contact instead)
    app_only: bool = True           # register/finish refuse inbound webhooks (WRONG_AUTH_TYPE)


def settings(p: Portal) -> Settings:
    s = getattr(p, "telephony_settings", None)
    if s is None:
        s = p.telephony_settings = Settings()
    return s


def _calls(p: Portal) -> dict[str, dict[str, Any]]:
    return p.tables["telephony_call"]           # active (registered, not finished) calls by CALL_ID


def _stats(p: Portal) -> dict[int, dict[str, Any]]:
    return p.tables["telephony_stat"]


def _acts(p: Portal) -> dict[int, dict[str, Any]]:
    return p.tables["activity"]


# ---------------------------------------------------------------------------------------------
# numbers
def norm_phone(v: Any) -> str:
    """Digits of a phone number, Russian trunk prefix folded: 8XXXXXXXXXX and XXXXXXXXXX -> 7XXXXXXXXXX."""
    d = re.sub(r"\D", "", str(v or ""))
    if len(d) == 11 and d[0] == "8":
        d = "7" + d[1:]
    elif len(d) == 10:
        d = "7" + d
    return d


def pretty_phone(v: str) -> str:
    d = norm_phone(v)
    if len(d) == 11 and d[0] == "7":
        return f"+7 {d[1:4]} {d[4:7]}-{d[7:9]}-{d[9:]}"
    return v


def user_by_inner(p: Portal, inner: Any) -> int | None:
    inner = str(inner or "").strip()
    if not inner:
        return None
    for uid, u in sorted(p.users.items()):
        if u.get("UF_PHONE_INNER") not in (None, "") and str(u["UF_PHONE_INNER"]) == inner and u["ACTIVE"]:
            return uid
    return None


def find_by_phone(p: Portal, phone: str) -> list[tuple[str, int, dict[str, Any]]]:
    """(CONTACT|COMPANY|LEAD, id, record) whose PHONE matches `phone`, contacts first."""
    want = norm_phone(phone)
    if not want:
        return []
    out = []
    for kind in ("CONTACT", "COMPANY", "LEAD"):
        for rid, rec in sorted(p.tables[TABLE[kind]].items()):
            if any(norm_phone(x.get("VALUE")) == want for x in rec.get("PHONE") or []):
                out.append((kind, rid, rec))
    return out


def _open_deal(p: Portal, kind: str, rid: int) -> int | None:
    key = {"CONTACT": "CONTACT_IDS", "COMPANY": "COMPANY_ID"}.get(kind)
    if key is None:
        return None
    best = None
    for did, d in p.tables["deal"].items():
        vals = d.get(key) if isinstance(d.get(key), list) else [d.get(key)]
        if d.get("CLOSED") != "Y" and str(rid) in [str(x) for x in vals if x is not None]:
            best = did if best is None or did > best else best
    return best


# ---------------------------------------------------------------------------------------------
# helpers
def _up(params: dict[str, Any]) -> dict[str, Any]:
    return {str(k).upper(): v for k, v in params.items()}


def _flag(v: Any, default: bool) -> bool:
    if v is None or v == "":
        return default
    return str(v).strip().upper() not in ("0", "N", "FALSE", "NO")


def _app_only(ctx: Ctx) -> None:
    if settings(ctx.portal).app_only and ctx.auth != "oauth":
        raise BxError("WRONG_AUTH_TYPE", "Current authorization type is denied for this method", 401)


def _user(ctx: Ctx, f: dict[str, Any]) -> int:
    try:
        uid = int(f.get("USER_ID") or 0)
    except (TypeError, ValueError):
        uid = 0
    if uid == 0:
        uid = user_by_inner(ctx.portal, f.get("USER_PHONE_INNER")) or 0
    if not uid:
        raise BxError("ERROR_CORE", "USER_ID or USER_PHONE_INNER should be set", 400)
    return uid


def _check_user(p: Portal, uid: int) -> None:
    u = p.users.get(uid)
    if u is None or not u["ACTIVE"]:
        raise BxError("ERROR_CORE", "User is not found or is not active", 400)


def _public_address(url: str) -> bool:
    host = (urlparse(url).hostname or "").strip("[]").lower()
    if not host or host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return True                 # a name: the sandbox does not resolve it
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_unspecified)


@dataclass
class CrmOps:
    """What telephony takes from the CRM methods (methods.py hands them over when it loads, so the
    import runs one way: methods -> telephony)."""

    entities: Any = None
    write: Any = None
    apply_filter: Any = None
    apply_order: Any = None


CRM = CrmOps()


def _write(ctx: Ctx, uid: int, kind: str, fields: dict[str, Any], rid: int | None = None) -> int:
    return CRM.write(Ctx(ctx.portal, uid, ctx.auth, ctx.scopes, ctx.who), CRM.entities[TABLE[kind]], fields, rid)


# ---------------------------------------------------------------------------------------------
# register
def register(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    _app_only(ctx)
    p = ctx.portal
    f = _up(params)
    uid = _user(ctx, f)
    ctype = str(f.get("TYPE") or "")
    if ctype not in ("1", "2", "3", "4", "5"):
        raise BxError("ERROR_CORE", "Unknown TYPE", 400)
    if f.get("CALL_START_DATE") not in (None, ""):
        start = parse_dt(f["CALL_START_DATE"])
        if start is None:
            raise BxError("ERROR_CORE", "CALL_START_DATE should be in the ISO-8601 format", 400)
    else:
        start = dt.datetime.fromtimestamp(p.now(), TZ)
    raw = str(f.get("PHONE_NUMBER") or "").strip()
    caller = ("+" if raw.startswith("+") else "") + re.sub(r"[^0-9#*]", "", raw)
    if not caller.strip("+"):
        raise BxError("ERROR_CORE", "Unsupported phone number format", 400)
    line = str(f.get("LINE_NUMBER") or "").strip()[:50]
    ext_id = f.get("EXTERNAL_CALL_ID")
    ext_id = str(ext_id) if ext_id not in (None, "") else None
    app = APP_ID if ctx.auth == "oauth" else None
    show = _flag(f.get("SHOW"), True)
    with p.lock:
        _check_user(p, uid)
        now = p.now()
        for c in _calls(p).values():                     # re-registration within 30 minutes
            if (c["USER_ID"] == uid and c["CALLER_ID"] == caller and c["INCOMING"] == ctype
                    and c["REST_APP_ID"] == app and c["_registered"] > now - DEDUP_WINDOW
                    and (not line or c["PORTAL_NUMBER"] == line)
                    and (ext_id is None or c["EXTERNAL_CALL_ID"] == ext_id)):
                if show:
                    c["_shown_to"] = sorted(set(c["_shown_to"]) | {uid})
                return _register_answer(c)
        portal_call = user_by_inner(p, caller) is not None
        call_id = "externalCall." + hashlib.md5(secrets.token_bytes(16)).hexdigest() + "." + str(int(now))
        c: dict[str, Any] = {"CALL_ID": call_id, "USER_ID": uid, "CALLER_ID": caller, "INCOMING": ctype,
                             "DATE_CREATE": fmt_dt(start), "EXTERNAL_CALL_ID": ext_id,
                             "PORTAL_NUMBER": line or f"REST_APP:{app or 0}", "REST_APP_ID": app,
                             "CRM": "N" if portal_call else "Y", "CALL_LIST_ID": f.get("CALL_LIST_ID") or None,
                             "CRM_ENTITY_TYPE": "", "CRM_ENTITY_ID": None, "CREATED": [], "CREATED_LEAD": None,
                             "BINDINGS": [], "_registered": now, "_shown_to": [], "_raw_phone": raw}
        etype = str(f.get("CRM_ENTITY_TYPE") or "").upper()
        if etype in TYPE_OWNER and f.get("CRM_ENTITY_ID") not in (None, "", 0, "0"):
            c["CRM_ENTITY_TYPE"], c["CRM_ENTITY_ID"] = etype, int(f["CRM_ENTITY_ID"])
        elif not portal_call:
            found = find_by_phone(p, caller)
            if found:
                c["CRM_ENTITY_TYPE"], c["CRM_ENTITY_ID"] = found[0][0], found[0][1]
        if c["CRM_ENTITY_TYPE"]:
            c["BINDINGS"] = [(c["CRM_ENTITY_TYPE"], c["CRM_ENTITY_ID"])]
            deal = _open_deal(p, c["CRM_ENTITY_TYPE"], c["CRM_ENTITY_ID"])
            if deal:
                c["BINDINGS"].append(("DEAL", deal))
        _calls(p)[call_id] = c
    if _flag(f.get("CRM_CREATE"), False) and not portal_call and not c["CRM_ENTITY_TYPE"]:
        _create_in_crm(ctx, c, f.get("CRM_SOURCE"))
    with p.lock:
        if show:
            c["_shown_to"] = [uid]
        return _register_answer(c)


def _create_in_crm(ctx: Ctx, c: dict[str, Any], source: Any) -> None:
    p = ctx.portal
    uid = c["USER_ID"]
    title = f"{pretty_phone(c['CALLER_ID'])} - {TITLES[c['INCOMING']]}"
    src = str(source) if str(source or "") in ("CALL", "EMAIL", "WEB", "STORE", "OTHER") else "CALL"
    phone = [{"VALUE": c["CALLER_ID"], "VALUE_TYPE": "WORK"}]
    try:
        if settings(p).leads_enabled:
            lead = _write(ctx, uid, "LEAD", {"TITLE": title, "PHONE": phone, "SOURCE_ID": src,
                                              "ASSIGNED_BY_ID": uid})
            created = [("LEAD", lead)]
            c["CREATED_LEAD"] = lead
            main = ("LEAD", lead)
        else:
            contact = _write(ctx, uid, "CONTACT", {"NAME": c["_raw_phone"] or c["CALLER_ID"], "PHONE": phone,
                                                    "SOURCE_ID": src, "ASSIGNED_BY_ID": uid})
            deal = _write(ctx, uid, "DEAL", {"TITLE": title, "CONTACT_ID": contact, "SOURCE_ID": src,
                                              "ASSIGNED_BY_ID": uid})
            created = [("CONTACT", contact), ("DEAL", deal)]
            main = ("CONTACT", contact)
    except BxError as e:                                # the call is registered all the same
        c["LEAD_CREATION_ERROR"] = e.description
        return
    with p.lock:
        c["CREATED"] = created
        c["CRM_ENTITY_TYPE"], c["CRM_ENTITY_ID"] = main
        c["BINDINGS"] = [main] + [x for x in created if x != main]


def _register_answer(c: dict[str, Any]) -> dict[str, Any]:
    out = {"CALL_ID": c["CALL_ID"], "CRM_CREATED_LEAD": c["CREATED_LEAD"] or None,
           "CRM_CREATED_ENTITIES": [{"ENTITY_TYPE": t, "ENTITY_ID": i} for t, i in c["CREATED"]],
           "CRM_ENTITY_TYPE": c["CRM_ENTITY_TYPE"] or "", "CRM_ENTITY_ID": c["CRM_ENTITY_ID"] or None}
    if c.get("LEAD_CREATION_ERROR"):
        out["LEAD_CREATION_ERROR"] = c["LEAD_CREATION_ERROR"]
    return out


# ---------------------------------------------------------------------------------------------
# finish
def finish(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    _app_only(ctx)
    p = ctx.portal
    f = _up(params)
    uid = _user(ctx, f)
    call_id = f.get("CALL_ID")
    if not isinstance(call_id, str):
        raise BxError("INVALID_ARGUMENT", "CALL_ID must be a string", 400)
    with p.lock:
        c = _calls(p).get(call_id)
        if c is None:
            raise BxError("ERROR_CORE", "Call is not found (call should be registered prior to finishing", 400)
        _check_user(p, uid)
    try:
        duration = int(float(f.get("DURATION") or 0))
    except (TypeError, ValueError):
        duration = 0
    code = str(f.get("STATUS_CODE") or "") or ("200" if duration > 0 else "304")
    try:
        vote = int(f.get("VOTE") or 0)
    except (TypeError, ValueError):
        vote = 0
    try:
        cost = float(f.get("COST") or 0)
    except (TypeError, ValueError):
        cost = 0.0
    for kind, rid in c["CREATED"]:                     # auto-created entities go to the finishing user
        _write(ctx, uid, kind, {"ASSIGNED_BY_ID": uid}, rid)
    stat: dict[str, Any] = {
        "CALL_ID": c["CALL_ID"], "EXTERNAL_CALL_ID": c["EXTERNAL_CALL_ID"], "PORTAL_USER_ID": uid,
        "PHONE_NUMBER": c["CALLER_ID"], "PORTAL_NUMBER": c["PORTAL_NUMBER"], "INCOMING": c["INCOMING"],
        "CALL_DURATION": duration, "CALL_START_DATE": c["DATE_CREATE"], "CALL_STATUS": 1 if duration > 0 else 0,
        "CALL_VOTE": vote, "COST": cost, "COST_CURRENCY": str(f.get("COST_CURRENCY") or ""),
        "CALL_FAILED_CODE": code, "CALL_FAILED_REASON": str(f.get("FAILED_REASON") or ""),
        "REST_APP_ID": c["REST_APP_ID"], "REST_APP_NAME": APP_NAME if c["REST_APP_ID"] else False,
        "CRM_ACTIVITY_ID": None, "COMMENT": None}
    if c["CRM_ENTITY_TYPE"] and c["CRM_ENTITY_ID"]:
        stat["CRM_ENTITY_TYPE"], stat["CRM_ENTITY_ID"] = c["CRM_ENTITY_TYPE"], c["CRM_ENTITY_ID"]
    errors: dict[str, Any] = {}
    record_url = str(f.get("RECORD_URL") or "")
    with p.lock:
        if c["BINDINGS"]:
            stat["CRM_ACTIVITY_ID"] = _add_activity(p, c, stat)
        else:
            errors["ACTIVITY_CREATION"] = "Could not find associated crm entity for the current call"
        sid = p.next_id("telephony_stat")
        stat["ID"] = sid
        _stats(p)[sid] = {**stat, "CALL_RECORD_URL": None, "RECORD_FILE_ID": None, "_files": []}
        if record_url and _public_address(record_url):
            _attach(p, _stats(p)[sid], _name_from(record_url, ""), record_url, None)
        del _calls(p)[call_id]
    if stat["CRM_ACTIVITY_ID"]:
        p.fire("ONCRMACTIVITYADD", stat["CRM_ACTIVITY_ID"])
    out = {**stat, "CALL_START_DATE": {}}               # a PHP DateTime object, JSON-encoded as {}
    if errors:
        out["ERRORS"] = errors
    return out


def _add_activity(p: Portal, c: dict[str, Any], stat: dict[str, Any]) -> int:
    incoming = c["INCOMING"] in INCOMING_TYPES
    missed = stat["CALL_FAILED_CODE"] == "304"
    start = parse_dt(c["DATE_CREATE"]) or dt.datetime.fromtimestamp(p.now(), TZ)
    end = fmt_dt(start + dt.timedelta(seconds=stat["CALL_DURATION"]))
    completed = (not missed) if (incoming or c["INCOMING"] == "4") else True
    settings_: dict[str, Any] = {}
    if (incoming or c["INCOMING"] == "4") and missed:
        settings_["MISSED_CALL"] = True
    owner_kind, owner_id = c["BINDINGS"][0]
    aid = p.next_id("activity")
    now = p.now_bx()
    uid = str(stat["PORTAL_USER_ID"])
    subject = f"{TITLES[c['INCOMING']]} {'от' if incoming else ''} {c['CALLER_ID']}".replace("  ", " ")
    _acts(p)[aid] = {
        "ID": str(aid), "OWNER_ID": str(owner_id), "OWNER_TYPE_ID": str(TYPE_OWNER[owner_kind]), "TYPE_ID": "2",
        "PROVIDER_ID": "VOXIMPLANT_CALL", "PROVIDER_TYPE_ID": "CALLBACK" if c["INCOMING"] == "4" else "CALL",
        "PROVIDER_GROUP_ID": None, "ASSOCIATED_ENTITY_ID": "0", "SUBJECT": subject, "CREATED": now,
        "LAST_UPDATED": now, "START_TIME": fmt_dt(start), "END_TIME": end, "DEADLINE": end,
        "COMPLETED": "Y" if completed else "N", "STATUS": "2" if completed else "1", "RESPONSIBLE_ID": uid,
        "PRIORITY": "2", "NOTIFY_TYPE": "0", "NOTIFY_VALUE": "0", "DESCRIPTION": "", "DESCRIPTION_TYPE": "1",
        "DIRECTION": "1" if incoming else "2", "LOCATION": "", "SETTINGS": settings_, "ORIGINATOR_ID": None,
        "ORIGIN_ID": "VI_" + c["CALL_ID"], "AUTHOR_ID": uid, "EDITOR_ID": uid, "FILES": [],
        "RESULT_MARK": "1" if stat["CALL_VOTE"] > 3 else ("2" if stat["CALL_VOTE"] > 0 else "0"),
        "RESULT_STREAM": ("1" if incoming else "2") if stat["CALL_FAILED_CODE"] == "200" else "4",
        "COMMUNICATIONS": [{"ID": "0", "TYPE": "PHONE", "VALUE": c["CALLER_ID"],
                            "ENTITY_ID": str(c["CRM_ENTITY_ID"] or owner_id),
                            "ENTITY_TYPE_ID": str(TYPE_OWNER.get(c["CRM_ENTITY_TYPE"] or owner_kind))}],
        "_bindings": [(TYPE_OWNER[k], int(i)) for k, i in c["BINDINGS"]]}
    return aid


# ---------------------------------------------------------------------------------------------
# records
def _name_from(url: str, filename: str) -> str:
    return filename or (urlparse(url).path.rsplit("/", 1)[-1] or "record.mp3")


def _attach(p: Portal, stat: dict[str, Any], name: str, url: str | None, size: int | None) -> int:
    fid = p.next_id("file")
    f = {"id": fid, "name": name, "url": url, "size": size}
    stat["_files"] = [f]                                  # a new record replaces the earlier one
    stat["RECORD_FILE_ID"] = fid
    stat["CALL_RECORD_URL"] = url or f"{p.base_url}{p.prefix}/disk/downloadFile/{fid}/"
    act = _acts(p).get(int(stat["CRM_ACTIVITY_ID"] or 0))
    if act is not None:
        act["FILES"] = [{"id": fid, "url": stat["CALL_RECORD_URL"], "name": name}]
        act["LAST_UPDATED"] = p.now_bx()
    return fid


def attach_record(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    p = ctx.portal
    f = _up(params)
    call_id = str(f.get("CALL_ID") or "")
    url = str(f.get("RECORD_URL") or "")
    name = str(f.get("FILENAME") or "")
    content = f.get("FILE_CONTENT")
    if not url and not name:
        raise BxError("", "Required parameters are not set. Request should contain either URL or FILENAME "
                          "parameter", 400)
    with p.lock:
        stat = next((s for s in _stats(p).values() if s["CALL_ID"] == call_id), None)
        if stat is None:
            raise BxError("", "Call is not found in the statistic table. Looks like it is not finished yet.", 400)
        if url:
            if not _public_address(url):
                raise BxError("", "Record URL resolves to a non-public address and was blocked.", 400)
            fid = _attach(p, stat, _name_from(url, name), url, None)
        else:
            if content is None:
                return {"uploadUrl": f"{p.base_url}{p.prefix}/rest/upload.json?token=telephony%7C"
                                     f"{secrets.token_urlsafe(24)}", "fieldName": "file"}
            if name.rsplit(".", 1)[-1].lower() not in ("wav", "mp3") or "." not in name:
                raise BxError("ERROR_CORE", "Wrong file extension. Only wav and mp3 are allowed", 400)
            if str(content) == "":
                raise BxError("ERROR_CORE", "File content is empty.", 400)
            try:
                data = base64.b64decode(str(content), validate=True)
            except (binascii.Error, ValueError):
                raise BxError("ERROR_CORE", "File content is not properly encoded. Base64 encoding is expected.", 400)
            fid = _attach(p, stat, name, None, len(data))
    return {"FILE_ID": fid}


# ---------------------------------------------------------------------------------------------
# card, search, statistics
def _users_arg(v: Any, default: int) -> list[int]:
    if v in (None, ""):
        return [default]
    vals = list(v.values()) if isinstance(v, dict) else (v if isinstance(v, list) else [v])
    return [int(x) for x in vals if str(x).strip().lstrip("-").isdigit()]


def card(ctx: Ctx, params: dict[str, Any], visible: bool) -> bool:
    p = ctx.portal
    f = _up(params)
    with p.lock:
        c = _calls(p).get(str(f.get("CALL_ID") or ""))
        if c is None:
            return False
        users = set(_users_arg(f.get("USER_ID"), c["USER_ID"]))
        shown = set(c["_shown_to"])
        c["_shown_to"] = sorted(shown | users if visible else shown - users)
        return True


def search_crm_entities(ctx: Ctx, params: dict[str, Any]) -> list[dict[str, Any]]:
    p = ctx.portal
    phone = str(_up(params).get("PHONE_NUMBER") or "").strip()
    if not phone:
        raise BxError("ERROR_CORE", "PHONE_NUMBER is empty", 400)
    out = []
    with p.lock:
        for kind, rid, rec in find_by_phone(p, phone):
            if kind == "COMPANY":
                name = rec.get("TITLE") or ""
            else:
                name = " ".join(x for x in (rec.get("NAME"), rec.get("LAST_NAME")) if x) or rec.get("TITLE") or ""
            aid = int(rec.get("ASSIGNED_BY_ID") or 0)
            u = p.users.get(aid, {})
            out.append({"CRM_ENTITY_TYPE": kind, "CRM_ENTITY_ID": rid, "ASSIGNED_BY_ID": aid, "NAME": name,
                        "ASSIGNED_BY": {"ID": str(aid), "TIMEMAN_STATUS": u.get("_workday", "CLOSED"),
                                        "USER_PHONE_INNER": u.get("UF_PHONE_INNER") or None,
                                        "WORK_PHONE": u.get("WORK_PHONE") or None,
                                        "PERSONAL_PHONE": u.get("PERSONAL_PHONE") or None,
                                        "PERSONAL_MOBILE": u.get("PERSONAL_MOBILE") or None}})
    return out


def _stat_row(s: dict[str, Any]) -> dict[str, Any]:
    row = {k: s.get(k) for k in STAT_FIELDS}
    row["CALL_TYPE"] = s["INCOMING"]
    row["CALL_CATEGORY"] = "external"
    row["TRANSCRIPT_PENDING"] = "N"
    row["COST"] = f"{float(s.get('COST') or 0):.4f}"
    row["REST_APP_NAME"] = s["REST_APP_NAME"] or None
    for k in ("ID", "PORTAL_USER_ID", "CALL_DURATION", "CRM_ENTITY_ID", "CRM_ACTIVITY_ID", "REST_APP_ID",
              "CALL_TYPE"):
        row[k] = None if row[k] in (None, "") else str(row[k])
    row["CALL_VOTE"] = str(s["CALL_VOTE"]) if s.get("CALL_VOTE") else None
    return row


def statistic_get(ctx: Ctx, params: dict[str, Any]) -> Page:
    apply_filter, apply_order = CRM.apply_filter, CRM.apply_order
    p = ctx.portal
    f = _up(params)
    with p.lock:
        rows = [_stat_row(s) for _, s in sorted(_stats(p).items())]
    types = {k: ("integer" if k in STAT_INT else "string") for k in STAT_FIELDS}
    types["CALL_START_DATE"] = "datetime"
    flt = f.get("FILTER")
    rows = apply_filter(rows, flt if isinstance(flt, dict) else {}, types)
    if f.get("SORT") and f.get("ORDER"):
        rows = apply_order(rows, {str(f["SORT"]).upper(): str(f["ORDER"]).upper()}, types)
    return paginate(rows, arg(params, "start"))


# ---------------------------------------------------------------------------------------------
# crm.activity.list / get
def _act_out(a: dict[str, Any], select: Any = None) -> dict[str, Any]:
    names = list(select.values()) if isinstance(select, dict) else list(select or [])
    names = [str(n).upper() for n in names]
    keys = list(ACTIVITY_FIELDS) if not names or "*" in names else [n for n in names if n in ACTIVITY_FIELDS]
    if "COMMUNICATIONS" in names:
        keys.append("COMMUNICATIONS")
    out = {k: (dict(a[k]) if isinstance(a[k], dict) else (list(a[k]) if isinstance(a[k], list) else a[k]))
           for k in keys}
    out.setdefault("ID", a["ID"])
    return out


def activity_list(ctx: Ctx, params: dict[str, Any]) -> Page:
    apply_filter, apply_order = CRM.apply_filter, CRM.apply_order
    p = ctx.portal
    flt = arg(params, "filter") or {}
    flt = {str(k).upper(): v for k, v in flt.items()} if isinstance(flt, dict) else {}
    owner_id = flt.pop("OWNER_ID", flt.pop("=OWNER_ID", None))
    owner_type = flt.pop("OWNER_TYPE_ID", flt.pop("=OWNER_TYPE_ID", None))
    with p.lock:
        acts = [a for _, a in sorted(_acts(p).items())]
    if owner_id is not None or owner_type is not None:
        acts = [a for a in acts if any((owner_type is None or str(t) == str(owner_type))
                                       and (owner_id is None or str(i) == str(owner_id)) for t, i in a["_bindings"])]
    types = {k: "integer" for k in ("ID", "OWNER_ID", "OWNER_TYPE_ID", "TYPE_ID", "RESPONSIBLE_ID", "AUTHOR_ID",
                                    "DIRECTION", "STATUS", "PRIORITY")}
    types.update({k: "datetime" for k in ("CREATED", "LAST_UPDATED", "START_TIME", "END_TIME", "DEADLINE")})
    acts = apply_filter(acts, flt, types)
    order = arg(params, "order")
    acts = apply_order(acts, order if isinstance(order, dict) and order else {"ID": "ASC"}, types)
    page = paginate(acts, arg(params, "start"))
    page.rows = [_act_out(a, arg(params, "select")) for a in page.rows]
    return page


def activity_get(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    from syncd.sandbox.bitrix24.common import NotFound, id_arg
    rid = id_arg(params)
    with ctx.portal.lock:
        a = _acts(ctx.portal).get(rid)
        if a is None:
            raise NotFound()
        return _act_out(a, ["*", "COMMUNICATIONS"])


# ---------------------------------------------------------------------------------------------
# dispatch and control
METHODS = {"telephony.externalcall.register": register, "telephony.externalcall.finish": finish,
           "telephony.externalcall.attachrecord": attach_record,
           "telephony.externalcall.show": lambda ctx, prm: card(ctx, prm, True),
           "telephony.externalcall.hide": lambda ctx, prm: card(ctx, prm, False),
           "telephony.externalcall.searchcrmentities": search_crm_entities,
           "voximplant.statistic.get": statistic_get,
           "crm.activity.list": activity_list, "crm.activity.get": activity_get}


def public_call(c: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in c.items() if not k.startswith("_")}
    out.update(CREATED=[{"ENTITY_TYPE": t, "ENTITY_ID": i} for t, i in c["CREATED"]],
               BINDINGS=[{"ENTITY_TYPE": t, "ENTITY_ID": i} for t, i in c["BINDINGS"]], SHOWN_TO=c["_shown_to"],
               REGISTERED_AT=dt.datetime.fromtimestamp(c["_registered"], TZ).replace(microsecond=0).isoformat())
    return out


def control(p: Portal, meth: str, rest: list[str], body: dict[str, Any], query: Any) -> dict[str, Any]:
    """`/_sandbox/<p>/telephony[/calls|statistics|activities]`: settings (PATCH) and what was logged."""
    s = settings(p)
    if meth in ("PATCH", "PUT", "POST") and not rest:
        bad = set(body) - set(asdict(s))
        if bad:
            raise ValueError(f"unknown telephony settings: {sorted(bad)} (leads_enabled, app_only)")
        with p.lock:
            for k, v in body.items():
                setattr(s, k, bool(v))
    with p.lock:
        calls = [public_call(c) for c in _calls(p).values()]
        stats = [{**{k: v for k, v in st.items() if not k.startswith("_")}, "FILES": list(st["_files"])}
                 for _, st in sorted(_stats(p).items())]
        acts = [{**{k: v for k, v in a.items() if not k.startswith("_")},
                 "BINDINGS": [{"OWNER_TYPE_ID": t, "OWNER_ID": i} for t, i in a["_bindings"]]}
                for _, a in sorted(_acts(p).items())]
    ot, oi = query.get("owner_type_id"), query.get("owner_id")
    if ot or oi:
        acts = [a for a in acts if any((not ot or str(b["OWNER_TYPE_ID"]) == ot) and (not oi or str(b["OWNER_ID"]) == oi)
                                       for b in a["BINDINGS"])]
    everything = {"settings": asdict(s), "calls": calls, "statistics": stats, "activities": acts}
    if rest:
        if rest[0] not in ("calls", "statistics", "activities"):
            raise KeyError(rest[0])
        return {rest[0]: everything[rest[0]]}
    return everything
