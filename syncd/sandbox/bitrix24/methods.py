"""The REST methods: CRM entities (legacy UPPER_CASE API and ``crm.item.*``), batch, users, tasks, events."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from syncd.sandbox.bitrix24.php import parse_query
from syncd.sandbox.bitrix24.common import (ID_TYPES, PAGE, Ctx, NotFound, Page, arg, cmp_value, core, fmt_dt,  # noqa: F401
                                           id_arg, norm_value, paginate, parse_dt)
from syncd.sandbox.bitrix24 import telephony
from syncd.sandbox.bitrix24.portal import TZ, BxError, Portal

BATCH_MAX = 50
MULTI = ("PHONE", "EMAIL", "WEB", "IM")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# ---------------------------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------------------------
# entities
COMMON = {"ID": "integer", "DATE_CREATE": "datetime", "DATE_MODIFY": "datetime", "CREATED_BY_ID": "user",
          "MODIFY_BY_ID": "user"}
UTM = {f"UTM_{k}": "string" for k in ("SOURCE", "MEDIUM", "CAMPAIGN", "CONTENT", "TERM")}
READONLY = {"ID", "DATE_CREATE", "DATE_MODIFY", "CREATED_BY_ID", "MODIFY_BY_ID"}


@dataclass
class Entity:
    name: str
    fields: dict[str, str]
    event: str | None = None
    multi: bool = False
    uf: bool = False
    required: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()
    type_id: int | None = None       # CRM owner type (1 lead, 2 deal, 3 contact, 4 company, 8 requisite)
    title: str | None = None         # default TITLE template when empty


ENTITIES: dict[str, Entity] = {
    "deal": Entity("deal", {**COMMON, "TITLE": "string", "TYPE_ID": "crm_status", "CATEGORY_ID": "crm_category",
                            "STAGE_ID": "crm_status", "STAGE_SEMANTIC_ID": "string", "IS_NEW": "char",
                            "IS_RECURRING": "char", "IS_RETURN_CUSTOMER": "char", "IS_REPEATED_APPROACH": "char",
                            "PROBABILITY": "integer", "CURRENCY_ID": "crm_currency", "OPPORTUNITY": "double",
                            "IS_MANUAL_OPPORTUNITY": "char", "TAX_VALUE": "double", "COMPANY_ID": "crm_company",
                            "CONTACT_ID": "crm_contact", "CONTACT_IDS": "crm_contact", "QUOTE_ID": "integer",
                            "BEGINDATE": "date", "CLOSEDATE": "date", "OPENED": "char", "CLOSED": "char",
                            "COMMENTS": "string", "ASSIGNED_BY_ID": "user", "SOURCE_ID": "crm_status",
                            "SOURCE_DESCRIPTION": "string", "LEAD_ID": "crm_lead", "ADDITIONAL_INFO": "string",
                            "LOCATION_ID": "string", "ORIGINATOR_ID": "string", "ORIGIN_ID": "string",
                            "MOVED_BY_ID": "user", "MOVED_TIME": "datetime", "LAST_ACTIVITY_TIME": "datetime",
                            **UTM},
                   event="DEAL", uf=True, hidden=("CONTACT_IDS",), type_id=2, title="Сделка #{ID}"),
    "contact": Entity("contact", {**COMMON, "HONORIFIC": "crm_status", "NAME": "string", "SECOND_NAME": "string",
                                  "LAST_NAME": "string", "PHOTO": "file", "BIRTHDATE": "date", "TYPE_ID": "crm_status",
                                  "SOURCE_ID": "crm_status", "SOURCE_DESCRIPTION": "string", "POST": "string",
                                  "COMMENTS": "string", "OPENED": "char", "EXPORT": "char", "HAS_PHONE": "char",
                                  "HAS_EMAIL": "char", "HAS_IMOL": "char", "ASSIGNED_BY_ID": "user",
                                  "COMPANY_ID": "crm_company", "COMPANY_IDS": "crm_company", "LEAD_ID": "crm_lead",
                                  "ORIGINATOR_ID": "string", "ORIGIN_ID": "string", "ORIGIN_VERSION": "string",
                                  "LAST_ACTIVITY_TIME": "datetime", **UTM},
                      event="CONTACT", multi=True, uf=True, hidden=("COMPANY_IDS",), type_id=3),
    "company": Entity("company", {**COMMON, "TITLE": "string", "COMPANY_TYPE": "crm_status", "LOGO": "file",
                                  "INDUSTRY": "crm_status", "EMPLOYEES": "crm_status", "CURRENCY_ID": "crm_currency",
                                  "REVENUE": "double", "OPENED": "char", "COMMENTS": "string", "HAS_PHONE": "char",
                                  "HAS_EMAIL": "char", "HAS_IMOL": "char", "IS_MY_COMPANY": "char",
                                  "ASSIGNED_BY_ID": "user", "LEAD_ID": "crm_lead", "ORIGINATOR_ID": "string",
                                  "ORIGIN_ID": "string", "ORIGIN_VERSION": "string", "BANKING_DETAILS": "string",
                                  "LAST_ACTIVITY_TIME": "datetime", **UTM},
                      event="COMPANY", multi=True, uf=True, required=("TITLE",), type_id=4),
    "lead": Entity("lead", {**COMMON, "TITLE": "string", "HONORIFIC": "crm_status", "NAME": "string",
                            "SECOND_NAME": "string", "LAST_NAME": "string", "BIRTHDATE": "date",
                            "COMPANY_TITLE": "string", "SOURCE_ID": "crm_status", "SOURCE_DESCRIPTION": "string",
                            "STATUS_ID": "crm_status", "STATUS_DESCRIPTION": "string", "STATUS_SEMANTIC_ID": "string",
                            "POST": "string", "CURRENCY_ID": "crm_currency", "OPPORTUNITY": "double",
                            "IS_MANUAL_OPPORTUNITY": "char", "HAS_PHONE": "char", "HAS_EMAIL": "char",
                            "HAS_IMOL": "char", "OPENED": "char", "COMMENTS": "string", "ASSIGNED_BY_ID": "user",
                            "COMPANY_ID": "crm_company", "CONTACT_ID": "crm_contact", "IS_RETURN_CUSTOMER": "char",
                            "ORIGINATOR_ID": "string", "ORIGIN_ID": "string", "LAST_ACTIVITY_TIME": "datetime",
                            **UTM},
                   event="LEAD", multi=True, uf=True, type_id=1, title="Лид #{ID}"),
    "requisite": Entity("requisite", {**COMMON, "ENTITY_TYPE_ID": "integer", "ENTITY_ID": "integer",
                                      "PRESET_ID": "integer", "NAME": "string", "CODE": "string", "XML_ID": "string",
                                      "ORIGINATOR_ID": "string", "ACTIVE": "char", "ADDRESS_ONLY": "char",
                                      "SORT": "integer",
                                      **{f"RQ_{k}": "string" for k in (
                                          "NAME", "FIRST_NAME", "LAST_NAME", "SECOND_NAME", "COMPANY_NAME",
                                          "COMPANY_FULL_NAME", "COMPANY_REG_DATE", "DIRECTOR", "ACCOUNTANT",
                                          "CONTACT", "EMAIL", "PHONE", "FAX", "IDENT_DOC", "INN", "KPP", "OGRN",
                                          "OGRNIP", "OKPO", "OKTMO", "OKVED", "OKOGU", "VAT_ID", "VAT_CERT_SER",
                                          "VAT_CERT_NUM", "VAT_CERT_DATE", "RESIDENCE_COUNTRY")},
                                      "RQ_VAT_PAYER": "char"},
                        event="REQUISITE", uf=True, required=("ENTITY_TYPE_ID", "ENTITY_ID", "PRESET_ID", "NAME"),
                        type_id=8),
    "bankdetail": Entity("bankdetail", {**COMMON, "ENTITY_ID": "integer", "COUNTRY_ID": "integer", "NAME": "string",
                                        "CODE": "string", "XML_ID": "string", "ORIGINATOR_ID": "string",
                                        "ACTIVE": "char", "SORT": "integer", "COMMENTS": "string",
                                        **{f"RQ_{k}": "string" for k in (
                                            "BANK_NAME", "BANK_ADDR", "BANK_ROUTE_NUM", "BIK", "MFO", "ACC_NAME",
                                            "ACC_NUM", "IIK", "ACC_CURRENCY", "COR_ACC_NUM", "IBAN", "SWIFT", "BIC")}},
                         event="BANKDETAIL", required=("ENTITY_ID", "NAME")),
    "product": Entity("product", {"ID": "integer", "NAME": "string", "ACTIVE": "char", "PRICE": "double",
                                  "CURRENCY_ID": "crm_currency", "SECTION_ID": "integer", "SORT": "integer",
                                  "XML_ID": "string", "DESCRIPTION": "string", "MEASURE": "integer",
                                  "VAT_ID": "integer", "VAT_INCLUDED": "char", "CATALOG_ID": "integer",
                                  "DATE_CREATE": "datetime", "TIMESTAMP_X": "datetime", "CREATED_BY": "user",
                                  "MODIFIED_BY": "user"},
                      event="PRODUCT", required=("NAME",)),
}
BY_TYPE_ID = {e.type_id: e for e in ENTITIES.values() if e.type_id}
REQ_ENTITY_TYPES = {3: "contact", 4: "company"}
PRESETS = [{"ID": "1", "ENTITY_TYPE_ID": "8", "COUNTRY_ID": "1", "NAME": "Организация", "ACTIVE": "Y", "SORT": "500",
            "XML_ID": "#CRM_REQUISITE_PRESET_DEF_RU_COMPANY#"},
           {"ID": "2", "ENTITY_TYPE_ID": "8", "COUNTRY_ID": "1", "NAME": "ИП", "ACTIVE": "Y", "SORT": "500",
            "XML_ID": "#CRM_REQUISITE_PRESET_DEF_RU_INDIVIDUAL#"},
           {"ID": "3", "ENTITY_TYPE_ID": "8", "COUNTRY_ID": "1", "NAME": "Физ. лицо", "ACTIVE": "Y", "SORT": "500",
            "XML_ID": "#CRM_REQUISITE_PRESET_DEF_RU_PERSON#"}]


def uf_defs(p: Portal, ent: Entity) -> dict[str, dict[str, Any]]:
    return {u["FIELD_NAME"]: u for u in p.userfields.get(ent.name, [])} if ent.uf else {}


def stage_info(p: Portal, stage_id: str) -> tuple[int, dict[str, Any]] | None:
    for cid, rows in p.stages.items():
        for r in rows:
            if r["STATUS_ID"] == stage_id:
                return cid, r
    return None


def _merge_multi(p: Portal, kind: str, current: list[dict[str, Any]], given: Any, ctx: Ctx) -> list[dict[str, Any]]:
    items = list(given.values()) if isinstance(given, dict) else list(given or [])
    out = [dict(x) for x in current]
    for it in items:
        if not isinstance(it, dict):
            continue
        it = {str(k).upper(): v for k, v in it.items()}
        value = it.get("VALUE")
        if kind == "EMAIL" and value not in (None, "") and not EMAIL_RE.match(str(value).strip()):
            raise core(f"Некорректный адрес электронной почты: {value}")
        if it.get("ID") not in (None, "") and not str(it["ID"]).startswith("n"):
            for i, cur in enumerate(out):
                if cur["ID"] == str(it["ID"]):
                    if str(it.get("DELETE", "")).upper() == "Y" or ("VALUE" in it and value in (None, "")):
                        out.pop(i)
                    else:
                        if "VALUE" in it:
                            cur["VALUE"] = str(value)
                        if it.get("VALUE_TYPE"):
                            cur["VALUE_TYPE"] = str(it["VALUE_TYPE"]).upper()
                    break
            continue
        if value in (None, ""):
            continue
        p.seq["multifield"] += 1
        out.append({"ID": str(p.seq["multifield"]), "VALUE_TYPE": str(it.get("VALUE_TYPE") or "WORK").upper(),
                    "VALUE": str(value), "TYPE_ID": kind})
    return out


def write(ctx: Ctx, ent: Entity, fields: Any, rid: int | None = None) -> int:
    """Add (rid None) or update an entity the way Bitrix does; fires ONCRM<ENTITY>ADD/UPDATE."""
    p = ctx.portal
    if not isinstance(fields, dict):
        if rid is None and not fields:
            fields = {}
        elif not isinstance(fields, dict):
            raise core("Parameter 'fields' must be array.")
    fields = {str(k).upper(): v for k, v in fields.items()}
    with p.lock:
        table = p.tables[ent.name]
        if rid is not None and rid not in table:
            raise NotFound()
        old = table.get(rid, {}) if rid is not None else {}
        rec = dict(old)
        ufs = uf_defs(p, ent)
        for k, v in fields.items():
            if k in ent.fields and k not in READONLY and not (ent.name == "deal" and rid and k == "CATEGORY_ID"):
                rec[k] = norm_value(ent.fields[k], v)
            elif k in ufs:
                t = ufs[k]["USER_TYPE_ID"]
                if ufs[k]["MULTIPLE"] == "Y":
                    vals = v if isinstance(v, list) else ([] if v in (None, "") else [v])
                    rec[k] = [norm_value(t if t == "boolean" else "string", x) for x in vals]
                else:
                    rec[k] = norm_value(t if t in ("boolean", "double", "integer", "date", "datetime") else "string", v)
            elif ent.multi and k in MULTI:
                rec[k] = _merge_multi(p, k, old.get(k, []), v, ctx)
        if rid is None:
            for r in ent.required:
                if rec.get(r) in (None, ""):
                    raise core(f'Поле "{r}" обязательно для заполнения.')
        ts = p.now_bx()
        if ent.name == "product":
            rec.setdefault("CREATED_BY", str(ctx.user_id))
            rec["MODIFIED_BY"] = str(ctx.user_id)
            rec["TIMESTAMP_X"] = ts
            rec.setdefault("DATE_CREATE", ts)
            rec.setdefault("ACTIVE", "Y")
            rec.setdefault("CURRENCY_ID", "RUB")
            rec.setdefault("CATALOG_ID", "25")
        else:
            if rid is None:
                rec["CREATED_BY_ID"] = str(ctx.user_id)
                rec["DATE_CREATE"] = ts
            rec["MODIFY_BY_ID"] = str(ctx.user_id)
            rec["DATE_MODIFY"] = ts
        _entity_rules(ctx, ent, rec, old, fields, rid is None)
        new_id = rid if rid is not None else p.next_id(ent.name)
        rec["ID"] = str(new_id)
        if ent.title and not rec.get("TITLE"):
            rec["TITLE"] = ent.title.format(ID=new_id)
        table[new_id] = rec
    if ent.event:
        ctx.portal.fire(f"ONCRM{ent.event}{'ADD' if rid is None else 'UPDATE'}", new_id)
    return new_id


def _entity_rules(ctx: Ctx, ent: Entity, rec: dict[str, Any], old: dict[str, Any], fields: dict[str, Any],
                  is_add: bool) -> None:
    p = ctx.portal
    if ent.multi:
        for k in MULTI:
            rec.setdefault(k, [])
        rec["HAS_PHONE"] = "Y" if rec["PHONE"] else "N"
        rec["HAS_EMAIL"] = "Y" if rec["EMAIL"] else "N"
        rec["HAS_IMOL"] = "N"
    if ent.name in ("deal", "lead", "contact", "company"):
        if is_add:
            rec.setdefault("OPENED", "Y")
            rec.setdefault("ASSIGNED_BY_ID", str(ctx.user_id))
            if rec.get("ASSIGNED_BY_ID") is None:
                rec["ASSIGNED_BY_ID"] = str(ctx.user_id)
        if rec.get("ASSIGNED_BY_ID") and int(rec["ASSIGNED_BY_ID"]) not in p.users:
            raise core(f"Пользователь с ID {rec['ASSIGNED_BY_ID']} не найден.")
    if ent.name == "deal":
        cid = int(rec.get("CATEGORY_ID") or 0)
        if cid not in p.categories:
            raise core(f"Направление сделок с ID {cid} не найдено.")
        rec["CATEGORY_ID"] = str(cid)
        stages = p.stages[cid]
        if not rec.get("STAGE_ID"):
            rec["STAGE_ID"] = stages[0]["STATUS_ID"]
        info = stage_info(p, rec["STAGE_ID"])
        if info is None or info[0] != cid:
            raise core(f"Стадия {rec['STAGE_ID']} не найдена в направлении {cid}.")
        sem = info[1]["SEMANTICS"]
        rec["STAGE_SEMANTIC_ID"] = sem
        rec["CLOSED"] = "Y" if sem in ("S", "F") else "N"
        if rec["STAGE_ID"] != old.get("STAGE_ID"):
            rec["MOVED_BY_ID"] = str(ctx.user_id)
            rec["MOVED_TIME"] = rec["DATE_MODIFY"]
        if is_add:
            rec.setdefault("TYPE_ID", "SALE")
            rec.setdefault("CURRENCY_ID", "RUB")
            rec.setdefault("IS_MANUAL_OPPORTUNITY", "N")
            rec.setdefault("COMPANY_ID", "0")
            today = dt.datetime.fromtimestamp(p.now(), TZ).replace(hour=0, minute=0, second=0, microsecond=0)
            rec.setdefault("BEGINDATE", fmt_dt(today))
            rec.setdefault("CLOSEDATE", fmt_dt(today + dt.timedelta(days=7)))
            for k in ("IS_NEW", "IS_RECURRING", "IS_RETURN_CUSTOMER", "IS_REPEATED_APPROACH"):
                rec.setdefault(k, "Y" if k == "IS_NEW" else "N")
        if "CONTACT_IDS" in fields:
            ids = rec.get("CONTACT_IDS") or []
            ids = ids if isinstance(ids, list) else [ids]
            rec["CONTACT_IDS"] = ids
            rec["CONTACT_ID"] = ids[0] if ids else None
        elif "CONTACT_ID" in fields:
            rec["CONTACT_IDS"] = [rec["CONTACT_ID"]] if rec.get("CONTACT_ID") else []
    if ent.name in ("deal", "lead"):
        rec.setdefault("OPPORTUNITY", "0.00")
        rec["OPPORTUNITY"] = rec["OPPORTUNITY"] or "0.00"
        rows = p.product_rows.get((ent.name, int(old["ID"]))) if old else None
        if rows and rec.get("IS_MANUAL_OPPORTUNITY") != "Y":
            rec["OPPORTUNITY"] = f"{sum(r['PRICE'] * r['QUANTITY'] for r in rows):.2f}"
    if ent.name == "lead":
        rec.setdefault("STATUS_ID", "NEW")
        rec["STATUS_SEMANTIC_ID"] = {"CONVERTED": "S", "JUNK": "F"}.get(rec["STATUS_ID"], "P")
        rec.setdefault("CURRENCY_ID", "RUB")
    if ent.name == "contact" and is_add:
        rec.setdefault("TYPE_ID", "CLIENT")
        rec.setdefault("EXPORT", "Y")
    if ent.name == "requisite":
        et = int(rec["ENTITY_TYPE_ID"])
        if et not in REQ_ENTITY_TYPES:
            raise core("Недопустимый тип сущности для реквизита.")
        if int(rec["ENTITY_ID"]) not in p.tables[REQ_ENTITY_TYPES[et]]:
            raise core(f"Сущность с ID {rec['ENTITY_ID']} не найдена.")
        if rec["PRESET_ID"] not in {x["ID"] for x in PRESETS}:
            raise core(f"Шаблон реквизитов с ID {rec['PRESET_ID']} не найден.")
        rec.setdefault("ACTIVE", "Y")
        rec.setdefault("SORT", "500")
    if ent.name == "bankdetail":
        if int(rec["ENTITY_ID"]) not in p.tables["requisite"]:
            raise core(f"Реквизит с ID {rec['ENTITY_ID']} не найден.")
        rec.setdefault("COUNTRY_ID", "1")
        rec.setdefault("ACTIVE", "Y")


def out_record(p: Portal, ent: Entity, rec: dict[str, Any], select: list[str] | None = None) -> dict[str, Any]:
    """Project a stored record; `select` None means everything `*.get` gives."""
    ufs = uf_defs(p, ent)
    std = [f for f in ent.fields if f not in ent.hidden]
    if select is None:
        names = std + list(ufs) + ([m for m in MULTI if rec.get(m)] if ent.multi else [])
    else:
        names = []
        sel = [str(s).upper() for s in select] or ["*"]
        for s in sel:
            if s == "*":
                names += std
            elif s == "UF_*":
                names += list(ufs)
            elif s in ent.fields or s in ufs or (ent.multi and s in MULTI):
                names.append(s)
        if "ID" not in names:
            names.insert(0, "ID")
    out: dict[str, Any] = {}
    for n in names:
        if n in out:
            continue
        if n in ufs:
            out[n] = rec.get(n, [] if ufs[n]["MULTIPLE"] == "Y" else None)
        elif n in MULTI:
            if rec.get(n):
                out[n] = [dict(x) for x in rec[n]]
        else:
            out[n] = rec.get(n)
    return out


FILTER_OPS = ("!%", ">=", "<=", "!@", "!=", ">", "<", "!", "%", "=", "@")


def _match(rv: Any, op: str, fv: Any, ftype: str | None) -> bool:
    if isinstance(rv, list) and rv and isinstance(rv[0], dict):        # multi-field
        return any(_match(x.get("VALUE"), op, fv, "string") for x in rv) if op not in ("!", "!=", "!%", "!@") \
            else not any(_match(x.get("VALUE"), op.lstrip("!") or "=", fv, "string") for x in rv)
    if isinstance(rv, list):                                             # multiple values (UF, CONTACT_IDS)
        if op in ("!", "!=", "!%", "!@"):
            return not any(_match(x, op[1:] or "=", fv, ftype) for x in rv)
        return any(_match(x, op, fv, ftype) for x in rv)
    if isinstance(fv, (list, tuple)) or op in ("@", "!@"):
        vals = fv if isinstance(fv, (list, tuple)) else [x for x in str(fv).split(",")]
        hit = any(_match(rv, "=", x, ftype) for x in vals)
        return not hit if op in ("!", "!=", "!@") else hit
    if op in ("%", "!%"):
        hit = rv is not None and str(fv).lower().strip("%") in str(rv).lower()
        return hit if op == "%" else not hit
    a, b = cmp_value(rv, ftype), cmp_value(None if fv is False else fv, ftype)
    if op in ("=", ""):
        return a == b if not (isinstance(a, float) ^ isinstance(b, float)) else str(rv) == str(fv)
    if op in ("!", "!="):
        return a != b
    if a is None or b is None or isinstance(a, float) != isinstance(b, float):
        return False
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]


def apply_filter(rows: list[dict[str, Any]], flt: Any, types: dict[str, str]) -> list[dict[str, Any]]:
    if not flt:
        return rows
    if not isinstance(flt, dict):
        return rows
    conds = []
    for k, v in flt.items():
        k = str(k)
        op = next((o for o in FILTER_OPS if k.startswith(o)), "")
        name = k[len(op):].upper()
        conds.append((name, op, v))
    return [r for r in rows if all(_match(r.get(n), op, v, types.get(n)) for n, op, v in conds)]


def apply_order(rows: list[dict[str, Any]], order: Any, types: dict[str, str]) -> list[dict[str, Any]]:
    items = list(order.items()) if isinstance(order, dict) and order else [("ID", "ASC")]
    for name, direction in reversed(items):
        name = str(name).upper()
        t = types.get(name)

        def key(r: dict[str, Any], name: str = name, t: str | None = t) -> tuple:
            v = cmp_value(r.get(name), t)
            return (v is None, (0, v, "") if isinstance(v, float) else (1, 0.0, str(v)))
        rows = sorted(rows, key=key, reverse=str(direction).upper() == "DESC")
    return rows


def list_records(ctx: Ctx, ent: Entity, params: dict[str, Any], select_default: list[str] | None = None) -> Page:
    p = ctx.portal
    types = dict(ent.fields)
    types.update({k: u["USER_TYPE_ID"] for k, u in uf_defs(p, ent).items()})
    with p.lock:
        rows = [dict(r) for r in p.tables[ent.name].values()]
    rows = apply_filter(rows, arg(params, "filter"), types)
    rows = apply_order(rows, arg(params, "order"), types)
    page = paginate(rows, arg(params, "start"))
    sel = arg(params, "select")
    sel = list(sel.values()) if isinstance(sel, dict) else sel
    page.rows = [out_record(p, ent, r, sel if sel else (select_default or ["*"])) for r in page.rows]
    return page


def delete(ctx: Ctx, ent: Entity, rid: int) -> bool:
    p = ctx.portal
    with p.lock:
        if rid not in p.tables[ent.name]:
            raise NotFound()
        del p.tables[ent.name][rid]
        p.product_rows.pop((ent.name, rid), None)
        if ent.name == "requisite":
            for bid in [b for b, r in p.tables["bankdetail"].items() if r.get("ENTITY_ID") == str(rid)]:
                del p.tables["bankdetail"][bid]
    if ent.event:
        p.fire(f"ONCRM{ent.event}DELETE", rid)
    return True


def fields_description(p: Portal, ent: Entity) -> dict[str, Any]:
    out = {}
    for k, t in ent.fields.items():
        out[k] = {"type": t, "isRequired": k in ent.required, "isReadOnly": k in READONLY,
                  "isImmutable": k == "CATEGORY_ID", "isMultiple": k in ("CONTACT_IDS", "COMPANY_IDS"),
                  "isDynamic": False, "title": k}
    if ent.multi:
        for m in MULTI:
            out[m] = {"type": "crm_multifield", "isRequired": False, "isReadOnly": False, "isImmutable": False,
                      "isMultiple": True, "isDynamic": False, "title": m}
    for k, u in uf_defs(p, ent).items():
        out[k] = {"type": u["USER_TYPE_ID"], "isRequired": u["MANDATORY"] == "Y", "isReadOnly": False,
                  "isImmutable": False, "isMultiple": u["MULTIPLE"] == "Y", "isDynamic": True,
                  "title": k, "listLabel": u["LIST_COLUMN_LABEL"], "formLabel": u["EDIT_FORM_LABEL"]}
    return out


# ---------------------------------------------------------------------------------------------
# product rows
def _row(p: Portal, owner: str, oid: int, r: dict[str, Any], sort: int) -> dict[str, Any]:
    r = {str(k).upper(): v for k, v in r.items()}

    def num(k: str, d: float = 0.0) -> float:
        try:
            return float(r.get(k) if r.get(k) not in (None, "") else d)
        except (TypeError, ValueError):
            raise core(f"Некорректное значение {k}")
    price, qty = num("PRICE"), num("QUANTITY", 1)
    tax = num("TAX_RATE") if r.get("TAX_RATE") not in (None, "") else None
    incl = str(r.get("TAX_INCLUDED", "N")).upper() == "Y"
    dtype = int(num("DISCOUNT_TYPE_ID", 2))
    excl = price / (1 + tax / 100) if (tax and incl) else price
    dsum = num("DISCOUNT_SUM") if dtype == 1 else None
    drate = num("DISCOUNT_RATE")
    netto = excl + dsum if dsum is not None else (excl / (1 - drate / 100) if drate < 100 else excl)
    dsum = netto - excl if dsum is None else dsum
    p.seq["productrow"] += 1
    return {"ID": p.seq["productrow"], "OWNER_ID": oid, "OWNER_TYPE": owner[0].upper(),
            "PRODUCT_ID": int(num("PRODUCT_ID")), "PRODUCT_NAME": str(r.get("PRODUCT_NAME") or ""),
            "ORIGINAL_PRODUCT_NAME": str(r.get("PRODUCT_NAME") or ""), "PRODUCT_DESCRIPTION": "",
            "PRICE": round(price, 2), "PRICE_ACCOUNT": f"{price:.2f}", "PRICE_EXCLUSIVE": round(excl, 2),
            "PRICE_NETTO": round(netto, 2), "PRICE_BRUTTO": round(netto * (1 + (tax or 0) / 100), 2),
            "QUANTITY": qty, "DISCOUNT_TYPE_ID": dtype, "DISCOUNT_RATE": round(drate, 2),
            "DISCOUNT_SUM": round(dsum, 2), "TAX_RATE": tax, "TAX_INCLUDED": "Y" if incl else "N",
            "CUSTOMIZED": "Y", "MEASURE_CODE": int(num("MEASURE_CODE", 796)),
            "MEASURE_NAME": str(r.get("MEASURE_NAME") or "шт"), "SORT": int(num("SORT", sort))}


def productrows_set(ctx: Ctx, owner: str, params: dict[str, Any]) -> bool:
    p = ctx.portal
    oid = id_arg(params)
    rows = arg(params, "rows") or []
    rows = list(rows.values()) if isinstance(rows, dict) else rows
    with p.lock:
        rec = p.tables[owner].get(oid)
        if rec is None:
            raise NotFound()
        new = [_row(p, owner, oid, r, 10 * (i + 1)) for i, r in enumerate(rows) if isinstance(r, dict)]
        p.product_rows[(owner, oid)] = new
        if rec.get("IS_MANUAL_OPPORTUNITY") != "Y":
            rec["OPPORTUNITY"] = f"{sum(r['PRICE'] * r['QUANTITY'] for r in new):.2f}"
        rec["DATE_MODIFY"] = p.now_bx()
        rec["MODIFY_BY_ID"] = str(ctx.user_id)
    p.fire(f"ONCRM{owner.upper()}UPDATE", oid)
    return True


def productrows_get(ctx: Ctx, owner: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    p = ctx.portal
    oid = id_arg(params)
    with p.lock:
        if oid not in p.tables[owner]:
            raise NotFound()
        return [dict(r) for r in p.product_rows.get((owner, oid), [])]


# ---------------------------------------------------------------------------------------------
# crm.item.* (universal API, camelCase)
def camel(name: str) -> str:
    if name.startswith("UF_"):
        return "uf" + "".join(w.capitalize() for w in name[3:].split("_"))
    words = name.lower().split("_")
    return words[0] + "".join(w.capitalize() for w in words[1:])


CAMEL_EXTRA = {"contactIds": "CONTACT_IDS", "createdTime": "DATE_CREATE", "updatedTime": "DATE_MODIFY",
               "createdBy": "CREATED_BY_ID", "updatedBy": "MODIFY_BY_ID", "begindate": "BEGINDATE",
               "closedate": "CLOSEDATE", "movedBy": "MOVED_BY_ID", "movedTime": "MOVED_TIME"}


def _item_names(p: Portal, ent: Entity) -> dict[str, str]:
    names = {camel(k): k for k in ent.fields}
    names.update({camel(k): k for k in uf_defs(p, ent)})
    names.update(CAMEL_EXTRA)
    return names


def item_out(p: Portal, ent: Entity, rec: dict[str, Any]) -> dict[str, Any]:
    rev = {v: k for k, v in _item_names(p, ent).items()}
    out: dict[str, Any] = {}
    for k, v in rec.items():
        if k in MULTI:
            continue
        t = ent.fields.get(k)
        if t in ID_TYPES and v is not None:
            v = [int(x) for x in v] if isinstance(v, list) else int(v)
        elif t == "double" and v is not None:
            v = float(v)
        out[rev.get(k, camel(k))] = v
    if ent.name == "deal":
        out.setdefault("contactIds", [int(x) for x in rec.get("CONTACT_IDS") or []])
    return out


def item_entity(params: dict[str, Any]) -> Entity:
    try:
        et = int(arg(params, "entityTypeId"))
    except (TypeError, ValueError):
        raise BxError("ENTITY_TYPE_NOT_SUPPORTED", "entityTypeId is required", 400)
    ent = BY_TYPE_ID.get(et)
    if ent is None or et == 8:
        raise BxError("NOT_FOUND", "Smart process not found", 400)
    return ent


def item_fields_in(p: Portal, ent: Entity, fields: Any) -> dict[str, Any]:
    names = _item_names(p, ent)
    return {names.get(k, k.upper()): v for k, v in (fields or {}).items()}


def item_call(ctx: Ctx, verb: str, params: dict[str, Any]) -> Any:
    ent = item_entity(params)
    p = ctx.portal
    try:
        if verb == "list":
            names = _item_names(p, ent)
            flt = {}
            for k, v in (arg(params, "filter") or {}).items():
                op = next((o for o in FILTER_OPS if k.startswith(o)), "")
                flt[op + names.get(k[len(op):], k[len(op):].upper())] = v
            order = {names.get(k, k.upper()): v for k, v in (arg(params, "order") or {"id": "ASC"}).items()}
            page = list_records(ctx, ent, {"filter": flt, "order": order, "start": arg(params, "start"),
                                           "select": ["*", "UF_*"]})
            with p.lock:
                page.rows = [item_out(p, ent, p.tables[ent.name][int(r["ID"])]) for r in page.rows]
            page.wrap = "items"
            return page
        if verb == "get":
            rid = id_arg(params)
            with p.lock:
                rec = p.tables[ent.name].get(rid)
                if rec is None:
                    raise BxError("NOT_FOUND", "Элемент не найден", 400)
                return {"item": item_out(p, ent, rec)}
        if verb == "add":
            rid = write(ctx, ent, item_fields_in(p, ent, arg(params, "fields")))
        elif verb == "update":
            rid = id_arg(params)
            if rid not in p.tables[ent.name]:
                raise BxError("NOT_FOUND", "Элемент не найден", 400)
            write(ctx, ent, item_fields_in(p, ent, arg(params, "fields")), rid)
        elif verb == "delete":
            rid = id_arg(params)
            if rid not in p.tables[ent.name]:
                raise BxError("NOT_FOUND", "Элемент не найден", 400)
            delete(ctx, ent, rid)
            return None
        else:
            raise BxError("ERROR_METHOD_NOT_FOUND", "Method not found!", 404)
        with p.lock:
            return {"item": item_out(p, ent, p.tables[ent.name][rid])}
    except NotFound:
        raise BxError("NOT_FOUND", "Элемент не найден", 400)


# ---------------------------------------------------------------------------------------------
# dispatch
def crm_entity_call(ctx: Ctx, ent: Entity, verb: str, params: dict[str, Any]) -> Any:
    p = ctx.portal
    if verb == "add":
        return write(ctx, ent, arg(params, "fields") or {})
    if verb == "update":
        rid = id_arg(params)
        write(ctx, ent, arg(params, "fields") or {}, rid)
        return True
    if verb == "get":
        rid = id_arg(params)
        with p.lock:
            rec = p.tables[ent.name].get(rid)
            if rec is None:
                raise NotFound()
            return out_record(p, ent, rec)
    if verb == "list":
        return list_records(ctx, ent, params)
    if verb == "delete":
        return delete(ctx, ent, id_arg(params))
    if verb == "fields":
        return fields_description(p, ent)
    raise BxError("ERROR_METHOD_NOT_FOUND", "Method not found!", 404)


def address_call(ctx: Ctx, verb: str, params: dict[str, Any]) -> Any:
    p = ctx.portal
    keys = ("TYPE_ID", "ENTITY_TYPE_ID", "ENTITY_ID")
    names = keys + ("ADDRESS_1", "ADDRESS_2", "CITY", "POSTAL_CODE", "REGION", "PROVINCE", "COUNTRY",
                    "COUNTRY_CODE", "LOC_ADDR_ID", "ANCHOR_TYPE_ID", "ANCHOR_ID")
    if verb == "fields":
        return {k: {"type": "integer" if k in keys else "string", "isRequired": k in keys} for k in names}
    if verb == "list":
        with p.lock:
            rows = [dict(r) for r in p.tables["address"].values()]
        rows = apply_filter(rows, arg(params, "filter"), {k: "integer" for k in keys})
        rows = apply_order(rows, arg(params, "order") or {"TYPE_ID": "ASC"}, {k: "integer" for k in keys})
        page = paginate(rows, arg(params, "start"))
        page.rows = [{k: r.get(k) for k in names} for r in page.rows]
        return page
    fields = {str(k).upper(): v for k, v in (arg(params, "fields") or {}).items()}
    try:
        key = tuple(str(int(fields[k])) for k in keys)
    except (KeyError, TypeError, ValueError):
        raise core("Не заданы обязательные поля TYPE_ID, ENTITY_TYPE_ID, ENTITY_ID.")
    with p.lock:
        table = p.tables["address"]
        exists = key in table
        if verb == "add":
            if exists:
                raise core("Адрес с таким типом уже существует.")
            table[key] = {**{k: None for k in names}, **{k: (str(v) if v is not None else None)
                                                        for k, v in fields.items() if k in names},
                          **dict(zip(keys, key))}
            ev = "ADD"
        elif verb == "update":
            if not exists:
                raise NotFound()
            table[key].update({k: (str(v) if v is not None else None) for k, v in fields.items()
                               if k in names and k not in keys})
            ev = "UPDATE"
        elif verb == "delete":
            if not exists:
                raise NotFound()
            del table[key]
            ev = "DELETE"
        else:
            raise BxError("ERROR_METHOD_NOT_FOUND", "Method not found!", 404)
    if key[1] == "8" and ev != "DELETE":          # an address edit is a requisite edit
        p.fire("ONCRMREQUISITEUPDATE", key[2])
    return True


def status_list(ctx: Ctx, params: dict[str, Any]) -> Page:
    p = ctx.portal
    rows = []
    with p.lock:
        for cid, stages in sorted(p.stages.items()):
            ent_id = "DEAL_STAGE" if cid == 0 else f"DEAL_STAGE_{cid}"
            for i, s in enumerate(stages):
                sem = {"S": "S", "F": "F"}.get(s["SEMANTICS"])
                rows.append({"ID": None, "ENTITY_ID": ent_id, "STATUS_ID": s["STATUS_ID"], "NAME": s["NAME"],
                             "NAME_INIT": s["NAME"], "SORT": str(10 * (i + 1)), "SYSTEM": "N",
                             "CATEGORY_ID": str(cid), "COLOR": "#39A8EF", "SEMANTICS": sem,
                             "EXTRA": {"SEMANTICS": {"P": "process", "S": "success", "F": "apology"}[s["SEMANTICS"]],
                                       "COLOR": "#39A8EF"}})
    simple = {"STATUS": [("NEW", "Не обработан"), ("IN_PROCESS", "В работе"), ("PROCESSED", "Обработан"),
                         ("CONVERTED", "Качественный лид"), ("JUNK", "Некачественный лид")],
              "SOURCE": [("CALL", "Звонок"), ("EMAIL", "Электронная почта"), ("WEB", "Веб-сайт"),
                         ("STORE", "Интернет-магазин"), ("OTHER", "Другое")],
              "DEAL_TYPE": [("SALE", "Продажа"), ("COMPLEX", "Комплексная продажа"), ("SERVICES", "Услуги")],
              "CONTACT_TYPE": [("CLIENT", "Клиенты"), ("SUPPLIER", "Поставщики"), ("PARTNER", "Партнеры"),
                               ("OTHER", "Другое")]}
    for ent_id, items in simple.items():
        for i, (sid, name) in enumerate(items):
            rows.append({"ID": None, "ENTITY_ID": ent_id, "STATUS_ID": sid, "NAME": name, "NAME_INIT": name,
                         "SORT": str(10 * (i + 1)), "SYSTEM": "Y", "CATEGORY_ID": None})
    for i, r in enumerate(rows):
        r["ID"] = str(i + 1)
    rows = apply_filter(rows, arg(params, "filter"), {"ID": "integer", "SORT": "integer"})
    order = arg(params, "order")
    if order:
        rows = apply_order(rows, order, {"ID": "integer", "SORT": "integer"})
    return Page(rows, len(rows), None)


def user_get(ctx: Ctx, params: dict[str, Any]) -> Page:
    p = ctx.portal
    flt = dict(arg(params, "filter") or {})
    for k, v in params.items():
        if str(k).upper() not in ("FILTER", "SORT", "ORDER", "START", "ADMIN_MODE", "AUTH"):
            flt[str(k).upper()] = v
    with p.lock:
        rows = [{k: v for k, v in u.items() if not k.startswith("_")} for u in p.users.values()]
    norm = []
    for k, v in flt.items():
        if str(k).upper() == "ACTIVE":
            v = str(v).upper() in ("Y", "TRUE", "1")
        norm.append((k, v))
    out = []
    for r in rows:
        ok = True
        for k, v in norm:
            if str(k).upper() == "ACTIVE":
                ok = ok and r["ACTIVE"] == v
            elif not apply_filter([r], {k: v}, {"ID": "integer"}):
                ok = False
        if ok:
            out.append(r)
    return paginate(out, arg(params, "start"))


def timeman_status(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    uid = int(arg(params, "USER_ID") or ctx.user_id)
    with ctx.portal.lock:
        u = ctx.portal.users.get(uid)
        if u is None:
            raise core("User not found")
        st = u["_workday"]
        return {"STATUS": st, "TIME_START": u["_workday_start"] if st != "CLOSED" else None,
                "TIME_FINISH": None, "DURATION": "00:00:00", "TIME_LEAKS": "00:00:00", "ACTIVE": st != "CLOSED",
                "IP_OPEN": "", "IP_CLOSE": "", "LAT_OPEN": 0, "LON_OPEN": 0, "TZ_OFFSET": 10800}


def event_call(ctx: Ctx, verb: str, params: dict[str, Any]) -> Any:
    p = ctx.portal
    if ctx.auth != "oauth":
        raise BxError("WRONG_AUTH_TYPE", "Current authorization type is denied for this method", 401)
    if verb == "get":
        return [{"event": h.event, "handler": h.url, "auth_type": str(h.auth_type), "offline": 0}
                for h in p.handlers if h.source == "event.bind"]
    event = str(arg(params, "event") or "").upper()
    handler = str(arg(params, "handler") or "")
    if verb == "bind":
        if not event or not handler:
            raise BxError("ERROR_REQUIRED_PARAMETERS_MISSING", "Event name and handler are required", 400)
        if any(h.event == event and h.url == handler and h.source == "event.bind" for h in p.handlers):
            raise BxError("ERROR_EVENT_HANDLER_ALREADY_BINDED", "Handler already binded", 400)
        p.add_handler(event, handler, source="event.bind", auth_type=int(arg(params, "auth_type") or 0))
        return True
    if verb == "unbind":
        with p.lock:
            before = len(p.handlers)
            p.handlers = [h for h in p.handlers if not (h.source == "event.bind" and h.event == event
                                                        and (not handler or h.url == handler))]
            return {"count": before - len(p.handlers)}
    raise BxError("ERROR_METHOD_NOT_FOUND", "Method not found!", 404)


def userfield_list(ctx: Ctx, entity: str, params: dict[str, Any]) -> Page:
    with ctx.portal.lock:
        rows = [dict(u) for u in ctx.portal.userfields.get(entity, [])]
    rows = apply_filter(rows, arg(params, "filter"), {"ID": "integer"})
    return paginate(rows, arg(params, "start"))


SCOPE_PREFIX = [("crm.", "crm"), ("tasks.", "task"), ("task.", "task"), ("im.", "im"), ("timeman.", "timeman"),
                ("user.", "user"), ("telephony.", "telephony"), ("voximplant.", "telephony")]


def required_scope(method: str) -> str | None:
    for prefix, scope in SCOPE_PREFIX:
        if method.startswith(prefix):
            return scope
    return None


def call(ctx: Ctx, method: str, params: dict[str, Any]) -> Any:
    """Run one REST method (not batch); raises BxError."""
    m = method.lower()
    scope = required_scope(m)
    if scope and scope not in ctx.scopes and not (scope == "user" and "user_brief" in ctx.scopes):
        raise BxError("insufficient_scope", "The request requires higher privileges than provided by the "
                                            "webhook token", 403)
    parts = m.split(".")
    if m == "profile":
        u = ctx.portal.users[ctx.user_id]
        return {"ID": u["ID"], "ADMIN": bool(u["_admin"]), "NAME": u["NAME"], "LAST_NAME": u["LAST_NAME"],
                "PERSONAL_GENDER": "", "TIME_ZONE": "Europe/Moscow", "TIME_ZONE_OFFSET": 10800}
    if m in ("scope",):
        return list(ctx.scopes)
    if m == "user.get" or m == "user.current":
        if m == "user.current":
            u = ctx.portal.users[ctx.user_id]
            return {k: v for k, v in u.items() if not k.startswith("_")}
        return user_get(ctx, params)
    if m == "timeman.status":
        return timeman_status(ctx, params)
    if m.startswith(("telephony.", "voximplant.")) or m in ("crm.activity.list", "crm.activity.get"):
        fn = telephony.METHODS.get(m)
        if fn is not None:
            return fn(ctx, params)
    if m in ("im.notify.system.add", "im.notify", "im.notify.personal.add"):
        from syncd.sandbox.bitrix24 import im
        return im.notify(ctx, params, "personal" if m == "im.notify.personal.add" else "system")
    if parts[:2] == ["tasks", "task"] and len(parts) == 3:
        from syncd.sandbox.bitrix24 import tasks
        fn = {"add": tasks.add, "update": tasks.update, "get": tasks.get, "list": tasks.list_}.get(parts[2])
        if fn is not None:
            return fn(ctx, params)
    if m in ("event.bind", "event.get", "event.unbind"):
        return event_call(ctx, parts[1], params)
    if parts[:3] == ["crm", "timeline", "comment"] and len(parts) == 4:
        from syncd.sandbox.bitrix24 import timeline
        if parts[3] == "fields":
            return timeline.fields()
        fn = {"add": timeline.add, "get": timeline.get, "list": timeline.list_, "update": timeline.update,
              "delete": timeline.delete}.get(parts[3])
        if fn is not None:
            return fn(ctx, params)
    if m == "crm.category.list":
        et = arg(params, "entityTypeId")
        if str(et) != "2":
            raise BxError("NOT_FOUND", "Entity type not supported", 400)
        with ctx.portal.lock:
            cats = [{"id": c["id"], "name": c["name"], "sort": c["sort"], "entityTypeId": 2,
                     "isDefault": c["isDefault"]} for c in sorted(ctx.portal.categories.values(), key=lambda c: c["id"])]
        return Page({"categories": cats}, len(cats), None)
    if m == "crm.status.list":
        return status_list(ctx, params)
    if m == "crm.requisite.preset.list":
        return Page([dict(x) for x in PRESETS], len(PRESETS), None)
    if m in ("crm.deal.userfield.list", "crm.contact.userfield.list", "crm.company.userfield.list",
             "crm.lead.userfield.list"):
        return userfield_list(ctx, parts[1], params)
    if len(parts) == 3 and parts[:2] == ["crm", "item"]:
        return item_call(ctx, parts[2], params)
    if len(parts) == 4 and parts[0] == "crm" and parts[1] in ("deal", "lead") and parts[2] == "productrows":
        if parts[3] == "set":
            return productrows_set(ctx, parts[1], params)
        if parts[3] == "get":
            return productrows_get(ctx, parts[1], params)
    if len(parts) == 4 and parts[:3] == ["crm", "requisite", "bankdetail"]:
        return crm_entity_call(ctx, ENTITIES["bankdetail"], parts[3], params)
    if len(parts) == 3 and parts[:2] == ["crm", "address"]:
        return address_call(ctx, parts[2], params)
    if len(parts) == 3 and parts[0] == "crm" and parts[1] in ("deal", "contact", "company", "lead", "requisite",
                                                              "product"):
        return crm_entity_call(ctx, ENTITIES[parts[1]], parts[2], params)
    raise BxError("ERROR_METHOD_NOT_FOUND", "Method not found!", 404)


# ---------------------------------------------------------------------------------------------
# batch
_REF = re.compile(r"\$result\[([^\]]+)\]((?:\[[^\]]*\])*)")


def _substitute(v: Any, results: dict[str, Any]) -> Any:
    if isinstance(v, dict):
        return {k: _substitute(x, results) for k, x in v.items()}
    if isinstance(v, list):
        return [_substitute(x, results) for x in v]
    if not isinstance(v, str) or "$result" not in v:
        return v

    def resolve(m: re.Match) -> Any:
        cur: Any = results.get(m.group(1))
        for k in re.findall(r"\[([^\]]*)\]", m.group(2)):
            if isinstance(cur, dict):
                cur = cur.get(k, cur.get(k.upper()))
            elif isinstance(cur, list) and k.isdigit() and int(k) < len(cur):
                cur = cur[int(k)]
            else:
                cur = None
        return cur
    full = _REF.fullmatch(v)
    if full:
        r = resolve(full)
        return "" if r is None else (r if isinstance(r, (dict, list)) else str(r))
    return _REF.sub(lambda m: "" if resolve(m) is None else str(resolve(m)), v)


def batch(ctx: Ctx, params: dict[str, Any], run_one: Callable[[Ctx, str, dict[str, Any]], tuple[Any, dict]]) -> dict:
    cmd = arg(params, "cmd") or {}
    if isinstance(cmd, list):
        cmd = {str(i): c for i, c in enumerate(cmd)}
    if not isinstance(cmd, dict):
        raise BxError("ERROR_CORE", "cmd must be an array", 400)
    if len(cmd) > BATCH_MAX:
        raise BxError("ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded", 400)
    halt = str(arg(params, "halt") or "0") not in ("0", "", "false", "False", "N")
    res: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    totals: dict[str, Any] = {}
    nexts: dict[str, Any] = {}
    times: dict[str, Any] = {}
    sub = Ctx(ctx.portal, ctx.user_id, ctx.auth, ctx.scopes, ctx.who, True)
    for key, line in cmd.items():
        line = str(line)
        method, _, qs = line.partition("?")
        method = unquote(method).strip().removesuffix(".json")
        try:
            if method.lower() == "batch":
                raise BxError("ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage", 405)
            sp = _substitute(parse_query(qs), res)
            value, extra = run_one(sub, method, sp)
            res[key] = value
            if extra.get("total") is not None:
                totals[key] = extra["total"]
            if extra.get("next") is not None:
                nexts[key] = extra["next"]
            times[key] = extra.get("time") or {}
        except BxError as e:
            errors[key] = e.body()      # no result_time entry: the portal times only what ran
            if halt:
                break
    return {"result": res or [], "result_error": errors or [], "result_total": totals or [],
            "result_next": nexts or [], "result_time": times or []}


# telephony creates and lists CRM records through these (see telephony.CrmOps)
telephony.CRM = telephony.CrmOps(ENTITIES, write, apply_filter, apply_order)
