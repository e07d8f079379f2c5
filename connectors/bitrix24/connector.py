"""The Bitrix24 connector: streams (deals, contacts, companies, leads), writes, live schema, events.

What the engine sees of a record is the portal's own field names with values as the portal
returns them (strings), plus pseudo-fields the portal keeps elsewhere:

- deals: ``PRODUCT_ROWS`` (``crm.deal.productrows.get``), a list of row dicts;
- companies: ``RQ_INN``, ``RQ_KPP``, ``RQ_OGRN``, ``RQ_COMPANY_FULL_NAME``, ``RQ_DIRECTOR`` (first
  requisite), ``BANK_DETAILS`` (its bank details: ``RQ_BIK``, ``RQ_ACC_NUM``, ``RQ_COR_ACC_NUM``,
  ``RQ_BANK_NAME``, ``RQ_BANK_ADDR``), ``ADDRESS_LEGAL`` (its legal address, TYPE_ID 6, as text);
- multi-fields ``PHONE``/``EMAIL``/``WEB``/``IM`` as lists of their values (strings), so the
  `multifield` and `first` transforms both apply.

Writes stamp ``ORIGINATOR_ID = "syncd"`` and ``ORIGIN_ID = op.external_key`` on create and look the
key up first, so a create retried after a lost answer returns the existing record (guarantee 3).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

import structlog
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from connectors.bitrix24.client import PAGE, BatchResult, Bitrix24Client, ref
from connectors.bitrix24.settings import Bitrix24Settings
from syncd.connector import (
    BaseConnector,
    Batch,
    ConnectorContext,
    Health,
    LiveSchema,
    RawRecord,
    Route,
    StreamSpec,
    WriteOp,
    WriteResult,
)
from syncd.errors import BadInput, PermanentError, TransientError
from syncd.schema import to_datetime

log = structlog.get_logger("syncd.bitrix24")

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
    "deal": ("PRODUCT_ROWS",),
    "company": REQ_FIELDS + ("BANK_DETAILS", "ADDRESS_LEGAL"),
}
WRITES = frozenset({"deal", "contact", "company", "lead", "product", "task", "comment", "notify"})
EVENT_STREAMS = {"DEAL": "deals", "CONTACT": "contacts", "COMPANY": "companies", "LEAD": "leads",
                 "REQUISITE": "companies", "BANKDETAIL": "companies"}
REQ_OWNER_COMPANY = 4
LOOKUP_KEYS = 500          # external keys per look-up command (`@ORIGIN_ID` list)
ADDRESS_OWNER_REQUISITE = 8
ADDRESS_LEGAL = 6


# -- small helpers ----------------------------------------------------------------------------------

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


def _values(v: Any) -> list[str]:
    if not v:
        return []
    return [str(x.get("VALUE")) if isinstance(x, Mapping) else str(x) for x in v]


def _rows(result: Any) -> list[dict[str, Any]]:
    if isinstance(result, list):
        return result
    if isinstance(result, Mapping):
        for v in result.values():
            if isinstance(v, list):
                return v
    return []


def _address_text(a: Mapping[str, Any] | None) -> str | None:
    if not a:
        return None
    parts = [str(a.get(k)).strip() for k in ADDRESS_PARTS if a.get(k) not in (None, "")]
    return ", ".join(parts) or None


# -- the connector ------------------------------------------------------------------------------------

class Bitrix24Connector(BaseConnector):
    def __init__(self, name: str, settings: Bitrix24Settings, ctx: ConnectorContext | None = None) -> None:
        self.name, self.settings, self.ctx = name, settings, ctx
        self.client = Bitrix24Client(settings, name=name,
                                     state_get=ctx.state_get if ctx is not None else None,
                                     state_set=ctx.state_set if ctx is not None else None)
        self.streams = {s: StreamSpec(s, (k,), f"Bitrix24 {k}s changed since the cursor (DATE_MODIFY|ID)")
                        for s, k in STREAMS.items()}
        self.writes = WRITES
        self._preset: str | None = None
        self._me: str | None = None
        self._dirty_requisites: set[str] = set()
        self._debounce: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()
        self.write_retries = 3

    # -- health ---------------------------------------------------------------------------------------
    def health(self) -> Health:
        try:
            me = self.client.call("profile").result or {}
        except (TransientError, PermanentError) as exc:
            return Health(False, str(exc))
        who = " ".join(str(me.get(k) or "") for k in ("NAME", "LAST_NAME")).strip()
        return Health(True, f"{self.client.host} as user {me.get('ID')}{' (' + who + ')' if who else ''}")

    # -- read -----------------------------------------------------------------------------------------
    def _select(self, kind: str) -> list[str]:
        sel = ["*", "UF_*"]
        if kind in MULTI_KINDS:
            sel += ["PHONE", "EMAIL", "WEB", "IM"]
        if kind == "deal" and self.settings.from_shop_field:
            sel.append(self.settings.from_shop_field)
        return sel

    def _base_filter(self, kind: str) -> dict[str, Any]:
        if kind == "deal" and self.settings.category_id is not None:
            return {"@CATEGORY_ID": [int(c) for c in self.settings.category_id]}
        return {}

    def _scan(self, kind: str, start: str | None, extra: Mapping[str, Any] | None = None
              ) -> Iterator[list[dict[str, Any]]]:
        """Pages ordered by (DATE_MODIFY, ID) from `start` on, keyset-paged with `start=-1`."""
        method = f"crm.{kind}.list"
        sel = self._select(kind)
        flt = {**self._base_filter(kind), **(extra or {})}
        lower: tuple[str, str] | None = (">=DATE_MODIFY", start) if start else None
        while True:
            f = dict(flt)
            if lower:
                f[lower[0]] = lower[1]
            rows = _rows(self.client.call(method, {"select": sel, "filter": f, "start": -1,
                                                   "order": {"DATE_MODIFY": "ASC", "ID": "ASC"}}).result)
            if rows:
                yield rows
            if len(rows) < PAGE:
                return
            last_t, last_id = rows[-1]["DATE_MODIFY"], int(rows[-1]["ID"])
            while True:     # the rest of that second, by ID (a bulk import shares one DATE_MODIFY)
                f2 = {**flt, ">=DATE_MODIFY": last_t, "<=DATE_MODIFY": last_t, ">ID": last_id}
                more = _rows(self.client.call(method, {"select": sel, "filter": f2, "start": -1,
                                                       "order": {"ID": "ASC"}}).result)
                if more:
                    yield more
                if len(more) < PAGE:
                    break
                last_id = int(more[-1]["ID"])
            lower = (">DATE_MODIFY", last_t)

    def read(self, stream: str, cursor: str | None, *, since: dt.datetime | None = None) -> Iterator[Batch]:
        if stream not in STREAMS:
            raise KeyError(f"unknown stream {stream!r}")
        kind = STREAMS[stream]
        ct, cid, rq_cur = parse_cursor(cursor)
        overlap = dt.timedelta(seconds=self.settings.page_overlap_seconds)
        if since is not None:
            since = since if since.tzinfo else since.replace(tzinfo=dt.UTC)
            start: str | None = since.isoformat(timespec="seconds")
        elif ct is not None:
            start = (ct - overlap).isoformat(timespec="seconds")
        else:
            start = None
        best = (ct, cid, cursor.split("|")[0] if cursor else None)
        seen: set[str] = set()
        rq_best = rq_cur
        for rows in self._scan(kind, start):
            recs = self._records(kind, rows)
            seen.update(str(r["ID"]) for r in rows)
            last = rows[-1]
            lt = parse_bx_time(last.get("DATE_MODIFY"))
            if lt is not None and (best[0] is None or (lt, int(last["ID"])) > (best[0], best[1])):
                best = (lt, int(last["ID"]), str(last["DATE_MODIFY"]))
            yield Batch(stream, recs, cursor=self._cursor(best, rq_best if kind == "company" else None))
        if kind == "company":
            # requisite / bank detail edits do not touch the company's DATE_MODIFY
            rq_start = since.isoformat(timespec="seconds") if since is not None else (
                (parse_bx_time(rq_cur) - overlap).isoformat(timespec="seconds") if rq_cur and parse_bx_time(rq_cur)
                else start)
            ids, rq_best = self._changed_companies(rq_start, rq_best)
            ids |= self._take_dirty()
            ids -= seen
            for i in range(0, len(ids), PAGE):
                chunk = sorted(ids, key=int)[i:i + PAGE]
                rows = _rows(self.client.call("crm.company.list", {
                    "select": self._select(kind), "filter": {"@ID": [int(x) for x in chunk]}, "start": -1,
                    "order": {"ID": "ASC"}}).result)
                if rows:
                    yield Batch(stream, self._records(kind, rows), cursor=self._cursor(best, rq_best))
            if rq_best != rq_cur:
                yield Batch(stream, [], cursor=self._cursor(best, rq_best))

    @staticmethod
    def _cursor(best: tuple[Any, int, str | None], rq: str | None) -> str | None:
        if best[2] is None:
            return None if rq is None else f"|0|{rq}"
        return f"{best[2]}|{best[1]}" + (f"|{rq}" if rq else "")

    def _changed_companies(self, start: str | None, rq_cur: str | None) -> tuple[set[str], str | None]:
        ids: set[str] = set()
        rq_ids: set[str] = set()
        best_t = parse_bx_time(rq_cur) if rq_cur else None
        best_s = rq_cur
        for method, flt, key in (("crm.requisite.list", {"ENTITY_TYPE_ID": REQ_OWNER_COMPANY}, "requisite"),
                                 ("crm.requisite.bankdetail.list", {}, "bank")):
            if start:
                flt = {**flt, ">=DATE_MODIFY": start}
            for r in self.client.list_all(method, {"filter": flt, "select": ["ID", "ENTITY_ID", "DATE_MODIFY",
                                                                              "ENTITY_TYPE_ID"]}):
                t = parse_bx_time(r.get("DATE_MODIFY"))
                if t is not None and (best_t is None or t > best_t):
                    best_t, best_s = t, str(r["DATE_MODIFY"])
                if key == "requisite":
                    ids.add(str(r["ENTITY_ID"]))
                else:
                    rq_ids.add(str(r["ENTITY_ID"]))
        ids |= self._companies_of_requisites(rq_ids)
        return ids, best_s

    def _companies_of_requisites(self, rq_ids: set[str]) -> set[str]:
        out: set[str] = set()
        rq = sorted(rq_ids, key=lambda x: int(x) if x.isdigit() else 0)
        for i in range(0, len(rq), PAGE):
            rows = _rows(self.client.call("crm.requisite.list", {
                "filter": {"@ID": [int(x) for x in rq[i:i + PAGE] if x.isdigit()]},
                "select": ["ID", "ENTITY_ID", "ENTITY_TYPE_ID"], "start": -1}).result)
            out |= {str(r["ENTITY_ID"]) for r in rows if str(r.get("ENTITY_TYPE_ID")) == str(REQ_OWNER_COMPANY)}
        return out

    def _take_dirty(self) -> set[str]:
        with self._lock:
            dirty, self._dirty_requisites = self._dirty_requisites, set()
        return self._companies_of_requisites(dirty) if dirty else set()

    def _records(self, kind: str, rows: list[dict[str, Any]]) -> list[RawRecord]:
        extra: dict[str, dict[str, Any]] = {}
        if kind == "deal":
            extra = self._product_rows([str(r["ID"]) for r in rows])
        elif kind == "company":
            extra = self._requisites([str(r["ID"]) for r in rows])
        out = []
        for r in rows:
            fields = dict(r)
            for m in MULTI:
                if m in fields:
                    fields[m] = _values(fields[m])
            version = utc_version(r.get("DATE_MODIFY"))
            more = extra.get(str(r["ID"]), {})
            rq_version = more.pop("_version", None)
            if rq_version and (version is None or rq_version > version):
                version = rq_version
            fields.update(more)
            stamp = r.get("ORIGIN_ID") if r.get("ORIGINATOR_ID") == ORIGINATOR and r.get("ORIGIN_ID") else None
            out.append(RawRecord(kind, str(r["ID"]), fields, version=version,
                                 source_time=parse_bx_time(r.get("DATE_MODIFY")), stamp=stamp))
        return out

    def _product_rows(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        res = self.client.batch({f"p{i}": ("crm.deal.productrows.get", {"id": i}) for i in ids})
        out = {}
        for i in ids:
            rows = res.get(f"p{i}", connector=self.name) or []
            out[i] = {"PRODUCT_ROWS": [{k: r.get(k) for k in ROW_FIELDS if k in r} for r in _rows(rows)]}
        return out

    def _requisites(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        res = self.client.batch({f"r{i}": ("crm.requisite.list", {
            "filter": {"ENTITY_TYPE_ID": REQ_OWNER_COMPANY, "ENTITY_ID": int(i)}, "order": {"ID": "ASC"},
            "select": ["ID", "DATE_MODIFY", *REQ_FIELDS]}) for i in ids})
        first: dict[str, dict[str, Any]] = {}
        for i in ids:
            rq = _rows(res.get(f"r{i}", connector=self.name))
            if rq:
                first[i] = rq[0]
        cmds: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for i, rq in first.items():
            cmds[f"b{i}"] = ("crm.requisite.bankdetail.list", {"filter": {"ENTITY_ID": int(rq["ID"])},
                                                               "order": {"ID": "ASC"}})
            cmds[f"a{i}"] = ("crm.address.list", {"filter": {"ENTITY_TYPE_ID": ADDRESS_OWNER_REQUISITE,
                                                             "ENTITY_ID": int(rq["ID"]), "TYPE_ID": ADDRESS_LEGAL}})
        res2 = self.client.batch(cmds) if cmds else BatchResult()
        out: dict[str, dict[str, Any]] = {}
        for i in ids:
            rq = first.get(i)
            if rq is None:
                out[i] = {}
                continue
            banks = _rows(res2.get(f"b{i}", connector=self.name))
            addr = _rows(res2.get(f"a{i}", connector=self.name))
            versions = [utc_version(x.get("DATE_MODIFY")) for x in [rq, *banks]]
            out[i] = {**{k: rq.get(k) for k in REQ_FIELDS},
                      "BANK_DETAILS": [{k: b.get(k) for k in BANK_FIELDS} for b in banks],
                      "ADDRESS_LEGAL": _address_text(addr[0] if addr else None),
                      "_version": max((v for v in versions if v), default=None)}
        return out

    # -- write ----------------------------------------------------------------------------------------
    def write(self, op: WriteOp) -> WriteResult:
        if op.kind not in WRITES:
            raise PermanentError(f"bitrix24 cannot write {op.kind!r} (can: {', '.join(sorted(WRITES))})",
                                 connector=self.name, op_id=op.op_id)
        if op.op == "delete":
            raise PermanentError("deletes are not sent to Bitrix24", connector=self.name, op_id=op.op_id)
        fn = {"product": self._write_product, "task": self._write_task, "comment": self._write_comment,
              "notify": self._write_notify}.get(op.kind, self._write_crm)

        def again(exc: BaseException) -> bool:
            return isinstance(exc, TransientError) and exc.code not in ("OPERATION_TIME_LIMIT", "OVERLOAD_LIMIT")

        # each attempt starts with the look-up, so a lost answer never creates twice
        for attempt in Retrying(retry=retry_if_exception(again), stop=stop_after_attempt(self.write_retries),
                                wait=wait_exponential_jitter(multiplier=0.3, max=3.0, jitter=0.3), reraise=True):
            with attempt:
                return fn(op)
        raise AssertionError("unreachable")  # pragma: no cover

    def lookup(self, kind: str, keys: Sequence[str]) -> dict[str, str]:
        """external_key -> ID of records syncd created (ORIGINATOR_ID/ORIGIN_ID).

        Up to LOOKUP_KEYS keys per command, all commands in one call; a command that returns a
        full page (50) is paged on with `>ID` (start=-1, no counting).
        """
        out: dict[str, str] = {}
        keys = list(dict.fromkeys(keys))
        if not keys:
            return out
        chunks_ = {f"k{i}": keys[i:i + LOOKUP_KEYS] for i in range(0, len(keys), LOOKUP_KEYS)}

        def params(ks: list[str], after: int = 0) -> dict[str, Any]:
            flt: dict[str, Any] = {"ORIGINATOR_ID": ORIGINATOR, "@ORIGIN_ID": ks}
            if after:
                flt[">ID"] = after
            return {"filter": flt, "select": ["ID", "ORIGIN_ID"], "order": {"ID": "ASC"}, "start": -1}

        method = f"crm.{kind}.list"
        if len(chunks_) == 1:
            pages = {"k0": _rows(self.client.call(method, params(keys)).result)}
        else:
            res = self.client.batch({k: (method, params(ks)) for k, ks in chunks_.items()})
            pages = {k: _rows(res.get(k, connector=self.name)) for k in chunks_}
        for k, rows in pages.items():
            while True:
                for r in rows:
                    out.setdefault(str(r["ORIGIN_ID"]), str(r["ID"]))
                if len(rows) < PAGE:
                    break
                rows = _rows(self.client.call(method, params(chunks_[k], int(rows[-1]["ID"]))).result)
        return out

    def _prepare_crm(self, op: WriteOp, ext: str | None, current: Mapping[str, Any] | None
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
        fields = {k: v for k, v in op.fields.items()}
        pseudo = {k: fields.pop(k) for k in PSEUDO.get(op.kind, ()) if k in fields}
        if op.kind in MULTI_KINDS:
            for m in MULTI:
                if m not in fields:
                    continue
                add = merge_multi(m, (current or {}).get(m), fields[m])
                if add:
                    fields[m] = add
                else:
                    del fields[m]
        if ext is None:
            fields["ORIGINATOR_ID"] = ORIGINATOR
            fields["ORIGIN_ID"] = op.external_key
        else:
            fields.pop("ORIGINATOR_ID", None)
            fields.pop("ORIGIN_ID", None)
        return fields, pseudo

    def _crm_cmds(self, op: WriteOp, key: str, ext: str | None, fields: dict[str, Any],
                  pseudo: Mapping[str, Any]) -> tuple[dict[str, tuple[str, Mapping[str, Any]]], str]:
        kind = op.kind
        cmds: dict[str, tuple[str, Mapping[str, Any]]] = {}
        if ext is None:
            cmds[f"{key}w"] = (f"crm.{kind}.add", {"fields": fields, "params": {"REGISTER_SONET_EVENT": "N"}})
            id_ref = ref(f"{key}w")
        else:
            if fields:
                cmds[f"{key}w"] = (f"crm.{kind}.update", {"id": ext, "fields": fields,
                                                           "params": {"REGISTER_SONET_EVENT": "N"}})
            id_ref = ext
        if kind == "deal" and "PRODUCT_ROWS" in pseudo:
            rows = []
            for r in pseudo["PRODUCT_ROWS"] or []:
                row = {k: v for k, v in dict(r).items() if v is not None and k != "ID"}
                if row.get("PRODUCT_ID") in (None, "", "0", 0):
                    row.pop("PRODUCT_ID", None)
                rows.append(row)
            cmds[f"{key}r"] = ("crm.deal.productrows.set", {"id": id_ref, "rows": rows})
        return cmds, id_ref

    def _write_crm(self, op: WriteOp) -> WriteResult:
        kind = op.kind
        ext = op.external_id
        if ext is None:
            ext = self.lookup(kind, [op.external_key]).get(op.external_key)
        current = None
        if ext is not None and kind in MULTI_KINDS and any(m in op.fields for m in MULTI):
            current = self.client.call(f"crm.{kind}.get", {"id": ext}).result
        fields, pseudo = self._prepare_crm(op, ext, current)
        cmds, id_ref = self._crm_cmds(op, "", ext, fields, pseudo)
        cmds["g"] = (f"crm.{kind}.get", {"id": id_ref})
        res = self.client.batch(cmds, halt=1, retry=False)
        new_id = res.get("w", connector=self.name) if ext is None else ext
        if "w" in cmds:
            res.get("w", connector=self.name)
        if "r" in cmds:
            res.get("r", connector=self.name)
        rec = res.get("g", connector=self.name) or {}
        new_id = str(new_id)
        if kind == "company" and pseudo:
            self._write_requisites(new_id, pseudo, op.external_key)
        return WriteResult(new_id, rec, version=utc_version(rec.get("DATE_MODIFY")))

    def _preset_id(self) -> str:
        if self._preset is None:
            rows = _rows(self.client.call("crm.requisite.preset.list", {"order": {"ID": "ASC"}}).result)
            if not rows:
                raise PermanentError("the portal has no requisite preset", connector=self.name)
            self._preset = str(rows[0]["ID"])
        return self._preset

    def _write_requisites(self, company_id: str, pseudo: Mapping[str, Any], key: str) -> None:
        c = self.client
        rq_fields = {k: pseudo[k] for k in REQ_FIELDS if k in pseudo}
        rqs = _rows(c.call("crm.requisite.list", {"filter": {"ENTITY_TYPE_ID": REQ_OWNER_COMPANY,
                                                             "ENTITY_ID": int(company_id)},
                                                  "order": {"ID": "ASC"}, "select": ["ID", *REQ_FIELDS]}).result)
        if rqs:
            rq_id = str(rqs[0]["ID"])
            changed = {k: v for k, v in rq_fields.items() if (rqs[0].get(k) or None) != (v or None)}
            if changed:
                c.call("crm.requisite.update", {"id": rq_id, "fields": changed})
        else:
            if not rq_fields and not pseudo.get("BANK_DETAILS") and not pseudo.get("ADDRESS_LEGAL"):
                return
            name = str(rq_fields.get("RQ_COMPANY_FULL_NAME") or "Реквизиты")
            rq_id = str(c.call("crm.requisite.add", {"fields": {
                "ENTITY_TYPE_ID": REQ_OWNER_COMPANY, "ENTITY_ID": int(company_id), "PRESET_ID": self._preset_id(),
                "NAME": name, "XML_ID": key, "ORIGINATOR_ID": ORIGINATOR, **rq_fields}}).result)
        cmds: dict[str, tuple[str, Mapping[str, Any]]] = {}
        if "BANK_DETAILS" in pseudo:
            banks = _rows(c.call("crm.requisite.bankdetail.list", {"filter": {"ENTITY_ID": int(rq_id)},
                                                                   "order": {"ID": "ASC"}}).result)
            by_acc = {str(b.get("RQ_ACC_NUM") or ""): b for b in banks}
            for n, bd in enumerate(pseudo["BANK_DETAILS"] or []):
                bd = {k: v for k, v in dict(bd).items() if k in BANK_FIELDS and v is not None}
                cur = by_acc.get(str(bd.get("RQ_ACC_NUM") or ""))
                if cur is None and len(banks) == 1 and len(pseudo["BANK_DETAILS"]) == 1:
                    cur = banks[0]          # one account on each side: it was edited, not added
                if cur is None:
                    cmds[f"b{n}"] = ("crm.requisite.bankdetail.add", {"fields": {
                        "ENTITY_ID": int(rq_id), "NAME": str(bd.get("RQ_BANK_NAME") or "Банковские реквизиты"),
                        "ORIGINATOR_ID": ORIGINATOR, **bd}})
                else:
                    changed = {k: v for k, v in bd.items() if (cur.get(k) or None) != (v or None)}
                    if changed:
                        cmds[f"b{n}"] = ("crm.requisite.bankdetail.update", {"id": cur["ID"], "fields": changed})
        if pseudo.get("ADDRESS_LEGAL") is not None:
            akey = {"TYPE_ID": ADDRESS_LEGAL, "ENTITY_TYPE_ID": ADDRESS_OWNER_REQUISITE, "ENTITY_ID": int(rq_id)}
            have = _rows(c.call("crm.address.list", {"filter": akey}).result)
            text = str(pseudo["ADDRESS_LEGAL"])
            if not have:
                cmds["a"] = ("crm.address.add", {"fields": {**akey, "ADDRESS_1": text}})
            elif _address_text(have[0]) != text:
                cmds["a"] = ("crm.address.update", {"fields": {**akey, "ADDRESS_1": text, "ADDRESS_2": "",
                                                               "CITY": "", "REGION": "", "PROVINCE": "",
                                                               "POSTAL_CODE": "", "COUNTRY": ""}})
        if cmds:
            res = c.batch(cmds, retry=False)
            for k in cmds:
                res.get(k, connector=self.name)

    def _write_product(self, op: WriteOp) -> WriteResult:
        c = self.client
        ext = op.external_id
        fields = dict(op.fields)
        if ext is None:
            rows = _rows(c.call("crm.product.list", {"filter": {"XML_ID": op.external_key},
                                                     "select": ["ID"], "start": -1}).result)
            ext = str(rows[0]["ID"]) if rows else None
        if ext is None:
            ext = str(c.call("crm.product.add", {"fields": {**fields, "XML_ID": op.external_key}}).result)
        elif fields:
            c.call("crm.product.update", {"id": ext, "fields": fields})
        rec = c.call("crm.product.get", {"id": ext}).result or {}
        return WriteResult(str(ext), rec, version=utc_version(rec.get("TIMESTAMP_X")))

    def _write_task(self, op: WriteOp) -> WriteResult:
        c = self.client
        fields = dict(op.fields)
        if op.external_id is not None:
            # tasks are created by rules and not edited back; an update is a no-op here
            return WriteResult(str(op.external_id), fields)
        uf = fields.get("UF_CRM_TASK")
        uf = [uf] if isinstance(uf, str) else list(uf or [])
        for pseudo, prefix in (("DEAL_ID", "D"), ("CONTACT_ID", "C"), ("COMPANY_ID", "CO"), ("LEAD_ID", "L")):
            v = fields.pop(pseudo, None)
            if v not in (None, "", 0, "0"):
                uf.append(f"{prefix}_{v}")
        if uf:
            fields["UF_CRM_TASK"] = uf
        if isinstance(fields.get("DEADLINE"), dt.datetime):
            fields["DEADLINE"] = fields["DEADLINE"].isoformat(timespec="seconds")
        # look the task up first (a create retried after a lost answer must find it): the portal
        # filters TITLE as a LIKE pattern (`%`, `_`), so the title is compared exactly here too
        flt: dict[str, Any] = {"TITLE": fields.get("TITLE")}
        if fields.get("RESPONSIBLE_ID"):
            flt["RESPONSIBLE_ID"] = fields["RESPONSIBLE_ID"]
        want = sorted(str(x) for x in fields.get("UF_CRM_TASK") or [])
        start = 0
        while True:
            env = c.call("tasks.task.list", {"filter": flt, "select": ["ID", "TITLE", "UF_CRM_TASK"],
                                             "order": {"ID": "ASC"}, "start": start})
            for t in _rows(env.result):
                same = str(t.get("title") or t.get("TITLE") or "") == str(fields.get("TITLE") or "")
                if same and sorted(str(x) for x in (t.get("ufCrmTask") or t.get("UF_CRM_TASK") or [])) == want:
                    return WriteResult(str(t.get("id") or t.get("ID")), dict(t))
            if env.next is None:
                break
            start = int(env.next)
        res = c.call("tasks.task.add", {"fields": fields}).result or {}
        task = res.get("task", res) if isinstance(res, Mapping) else {}
        return WriteResult(str(task.get("id") or task.get("ID")), dict(task))

    def _write_comment(self, op: WriteOp) -> WriteResult:
        """A timeline comment, looked up before it is added.

        Bitrix24 gives a timeline comment no external id (no XML_ID / ORIGIN_ID) and
        `crm.timeline.comment.list` filters by its owner only (ENTITY_ID + ENTITY_TYPE; CREATED and
        the text cannot be filtered on), and a marker in the text would be read by every manager.
        So the key is the owner + the exact text + our own user as the author: the owner's
        comments are read (newest first) and an equal one written by us is taken as this op's, so
        a create retried after a lost answer never adds a second comment. Two side effects that
        should both stay must therefore differ in text (the rules put the date or the reason in it).
        """
        c = self.client
        f = dict(op.fields)
        f["ENTITY_TYPE"] = str(f.get("ENTITY_TYPE") or "deal").lower()
        text = " ".join(str(f.get("COMMENT") or "").split())     # as the portal may trim or re-wrap it
        author = str(f.get("AUTHOR_ID") or self._own_user())
        owner = {"ENTITY_ID": f.get("ENTITY_ID"), "ENTITY_TYPE": f["ENTITY_TYPE"]}
        start = 0
        while True:
            env = c.call("crm.timeline.comment.list", {"filter": owner, "select": ["ID", "COMMENT", "AUTHOR_ID"],
                                                       "order": {"ID": "DESC"}, "start": start})
            for row in _rows(env.result):
                if " ".join(str(row.get("COMMENT") or "").split()) == text and str(row.get("AUTHOR_ID") or "") == author:
                    return WriteResult(str(row["ID"]), f)
            if env.next is None:
                break
            start = int(env.next)
        cid = c.call("crm.timeline.comment.add", {"fields": f}, retry=False).result
        return WriteResult(str(cid), f)

    def _own_user(self) -> str:
        """The portal user syncd writes as: the webhook's user, or the OAuth token's (`profile`)."""
        if self._me is None:
            hook = self.settings.webhook_url
            m = re.search(r"/rest/(\d+)/", hook.get_secret_value()) if hook is not None else None
            self._me = m.group(1) if m else str((self.client.call("profile").result or {}).get("ID") or "")
        return self._me

    def _notify_params(self, user: Any, text: str, tag: str | None) -> dict[str, Any]:
        """`im.notify.system.add` with TAG: "when adding a notification with an existing tag, other
        notifications will be removed" — so a notice re-sent after a lost answer replaces the first
        one instead of showing twice. The tag is unique within the application; through a webhook
        the docs ask for it "with CLIENT_ID", so the connector names itself (a stable value: the
        tag of a retry must land in the same namespace)."""
        params: dict[str, Any] = {"USER_ID": int(user) if str(user).isdigit() else user, "MESSAGE": text}
        if tag:
            params["TAG"] = tag
            if self.settings.is_webhook:
                params["CLIENT_ID"] = ORIGINATOR
        return params

    def _write_notify(self, op: WriteOp) -> WriteResult:
        f = dict(op.fields)
        params = self._notify_params(f.get("USER_ID"), str(f.get("MESSAGE") or ""), str(f.get("TAG") or op.external_key))
        nid = self.client.call("im.notify.system.add", params, retry=False).result
        return WriteResult(str(nid), params)

    def notify(self, user: str, text: str, tag: str | None = None) -> str:
        """A system notice to a portal user (`im.notify.system.add`); what the rules engine calls
        to tell the responsible about a new deal or a timer. With `tag` (the side effect's key) a
        repeated notice replaces the earlier one. Returns the notice id."""
        return str(self.client.call("im.notify.system.add", self._notify_params(user, text, tag), retry=False).result)

    # -- bulk write -----------------------------------------------------------------------------------
    def write_many(self, ops: Sequence[WriteOp]) -> list[WriteResult | Exception]:
        """Many writes in few requests: look-ups batched (50 keys a command), then creates and
        updates packed into `batch` calls of ≤ 50 commands (a deal's add + productrows.set stay in
        one call, linked by `$result`). Results line up with `ops`; a failed op yields its exception.

        Companies with requisites, multi-field updates, tasks, comments and notifications go
        through `write` one by one (they need reads between writes).
        """
        out: list[WriteResult | Exception | None] = [None] * len(ops)
        fast: list[int] = []
        for i, op in enumerate(ops):
            simple = op.kind in CRM_KINDS and op.op in ("create", "update") and not (
                op.kind == "company" and any(k in op.fields for k in PSEUDO["company"])) and not (
                op.op == "update" and op.external_id is not None and op.kind in MULTI_KINDS
                and any(m in op.fields for m in MULTI))
            if simple:
                fast.append(i)
            else:
                try:
                    out[i] = self.write(op)
                except (TransientError, PermanentError, BadInput) as exc:
                    out[i] = exc
        # look up the keys of creates, per kind
        ext: dict[int, str | None] = {i: ops[i].external_id for i in fast}
        by_kind: dict[str, list[int]] = {}
        for i in fast:
            if ext[i] is None:
                by_kind.setdefault(ops[i].kind, []).append(i)
        if by_kind:
            try:
                found: dict[tuple[str, str], str] = {}
                for kind, idx in by_kind.items():
                    for key, xid in self.lookup(kind, [ops[i].external_key for i in idx]).items():
                        found[(kind, key)] = xid
            except (TransientError, PermanentError) as exc:
                for idx in by_kind.values():
                    for i in idx:
                        out[i] = exc
                return [x if x is not None else exc for x in out]
            for kind, idx in by_kind.items():
                for i in idx:
                    ext[i] = found.get((kind, ops[i].external_key))
            # an existing record with multi-fields needs its current values to merge: one by one
            for i in [i for i in fast if ops[i].external_id is None and ext[i] is not None
                      and ops[i].kind in MULTI_KINDS and any(m in ops[i].fields for m in MULTI)]:
                fast.remove(i)
                try:
                    out[i] = self.write(ops[i])
                except (TransientError, PermanentError, BadInput) as exc:
                    out[i] = exc
        # writes: groups of dependent commands, packed ≤ 50 per call; a call with room to spare
        # also reads back DATE_MODIFY of what it wrote (versions are optional: a full call skips it)
        groups: list[tuple[int, dict[str, tuple[str, Mapping[str, Any]]]]] = []
        for i in fast:
            op = ops[i]
            fields, pseudo = self._prepare_crm(op, ext[i], None)
            cmds_i, _ = self._crm_cmds(op, f"o{i}", ext[i], fields, pseudo)
            groups.append((i, cmds_i))
        packed: list[tuple[list[int], dict[str, tuple[str, Mapping[str, Any]]]]] = []
        for i, g in groups:
            if not packed or len(packed[-1][1]) + len(g) > PAGE:
                packed.append(([], {}))
            packed[-1][0].append(i)
            packed[-1][1].update(g)
        results: dict[str, Any] = {}
        errors: dict[str, Exception] = {}
        versions: dict[int, Any] = {}
        for members, chunk in packed:
            spare = PAGE - len(chunk)
            vkeys: dict[str, list[int]] = {}
            for i in members:
                if spare <= 0:
                    break
                kind = ops[i].kind
                if f"v_{kind}" not in vkeys:
                    if spare < 1:
                        continue
                    vkeys[f"v_{kind}"] = []
                    spare -= 1
                vkeys[f"v_{kind}"].append(i)
            cmds = dict(chunk)
            for vk, idx in vkeys.items():
                cmds[vk] = (f"crm.{vk[2:]}.list", {
                    "filter": {"@ID": [ref(f"o{i}w") if ext[i] is None else ext[i] for i in idx]},
                    "select": ["ID", "DATE_MODIFY"], "start": -1})
            try:
                res = self.client.batch(cmds, halt=0, retry=False)
            except (TransientError, PermanentError) as exc:
                for k in chunk:
                    errors[k] = exc
                continue
            for k in chunk:
                try:
                    results[k] = res.get(k, connector=self.name)
                except (TransientError, PermanentError) as exc:
                    errors[k] = exc
            for vk, idx in vkeys.items():
                got = {str(r["ID"]): r.get("DATE_MODIFY") for r in _rows(res.results.get(vk))}
                for i in idx:
                    key = str(results.get(f"o{i}w")) if ext[i] is None else str(ext[i])
                    versions[i] = got.get(key)
        for i in fast:
            err = errors.get(f"o{i}w") or errors.get(f"o{i}r")
            if err is not None:
                out[i] = err
                continue
            x = str(results.get(f"o{i}w")) if ext[i] is None else str(ext[i])
            out[i] = WriteResult(x, dict(ops[i].fields), version=utc_version(versions.get(i)))
        return [x if x is not None else PermanentError("not written", connector=self.name) for x in out]

    # -- live schema ----------------------------------------------------------------------------------
    def describe(self) -> LiveSchema:
        c = self.client
        cmds: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for k in CRM_KINDS:
            cmds[f"f_{k}"] = (f"crm.{k}.fields", {})
            cmds[f"u_{k}"] = (f"crm.{k}.userfield.list", {})
        cmds["cats"] = ("crm.category.list", {"entityTypeId": 2})
        cmds["stages"] = ("crm.status.list", {"order": {"SORT": "ASC"}})
        cmds["users"] = ("user.get", {})
        cmds["pf"] = ("crm.product.fields", {})
        res = c.batch(cmds)
        schema = LiveSchema()
        for k in CRM_KINDS:
            names = set((res.results.get(f"f_{k}") or {}).keys())
            names |= {u["FIELD_NAME"] for u in _rows(res.results.get(f"u_{k}")) if u.get("FIELD_NAME")}
            names |= set(PSEUDO.get(k, ()))
            if names:
                schema.kinds[k] = names
        if res.results.get("pf"):
            schema.kinds["product"] = set(res.results["pf"].keys())
        cats = _rows(res.results.get("cats"))
        stages = _rows(res.results.get("stages"))
        by_cat: dict[str, list[tuple[int, str]]] = {}
        for s in stages:
            ent = str(s.get("ENTITY_ID") or "")
            if ent == "DEAL_STAGE" or ent.startswith("DEAL_STAGE_"):
                cid = "0" if ent == "DEAL_STAGE" else ent.rsplit("_", 1)[1]
                by_cat.setdefault(cid, []).append((int(s.get("SORT") or 0), str(s["STATUS_ID"])))
            elif ent == "STATUS":
                schema.values.setdefault("lead.STATUS_ID", set()).add(str(s["STATUS_ID"]))
            elif ent == "SOURCE":
                for k in ("deal", "lead", "contact"):
                    schema.values.setdefault(f"{k}.SOURCE_ID", set()).add(str(s["STATUS_ID"]))
        names = {str(ct.get("id")): str(ct.get("name")) for ct in cats}
        all_stages: set[str] = set()
        for cid, st in sorted(by_cat.items(), key=lambda kv: int(kv[0])):
            ordered = [x for _, x in sorted(st)]
            all_stages.update(ordered)
            schema.pipelines[cid] = ordered
            if cid in names:
                schema.pipelines[names[cid]] = ordered
        schema.values["deal.STAGE_ID"] = all_stages
        schema.values["deal.CATEGORY_ID"] = set(names) | set(by_cat)
        users = _rows(res.results.get("users"))
        tcmds = {f"t{u['ID']}": ("timeman.status", {"USER_ID": u["ID"]}) for u in users}
        tres = c.batch(tcmds) if tcmds else BatchResult()
        for u in users:
            tm = tres.results.get(f"t{u['ID']}") or {}
            working = str(tm.get("STATUS") or "").upper() in ("OPENED",)
            schema.users[str(u["ID"])] = {
                "name": " ".join(str(u.get(k) or "") for k in ("NAME", "LAST_NAME")).strip(),
                "active": u.get("ACTIVE") in (True, "Y", "1", 1, "true"),
                "present": u.get("IS_ONLINE") == "Y" or working,
                "email": u.get("EMAIL")}
        schema.values["deal.ASSIGNED_BY_ID"] = set(schema.users)
        return schema

    def mapping_problems(self, mapper: Any) -> list[str]:
        from connectors.bitrix24.live import check_live
        return [f"{k}: {msg}" for k, msg in check_live(mapper, {self.name: self})]

    # -- outbound events ------------------------------------------------------------------------------
    def http_routes(self) -> Sequence[Route]:
        return (Route(f"/hooks/bitrix24/{self.name}", self._event_endpoint, ("POST",)),)

    async def _event_endpoint(self, request: Any) -> Any:
        from starlette.responses import JSONResponse
        body = (await request.body()).decode("utf-8", "replace")
        form = dict(parse_qsl(body, keep_blank_values=True))
        want = self.settings.application_token
        got = form.get("auth[application_token]", "")
        if want is None or not got or not secrets.compare_digest(got, want.get_secret_value()):
            log.warning("event_rejected", system=self.name, reason="application_token mismatch")
            return JSONResponse({"error": "forbidden"}, status_code=403)
        event = form.get("event", "").upper()
        stream = next((s for k, s in EVENT_STREAMS.items() if event.startswith(f"ONCRM{k}")), None)
        if stream is None:
            return JSONResponse({"ok": True, "ignored": event})
        eid = form.get("data[FIELDS][ID]")
        if event.startswith("ONCRMREQUISITE") and eid:
            # an address edit fires this without touching DATE_MODIFY: remember the requisite
            with self._lock:
                self._dirty_requisites.add(str(eid))
        self._schedule(stream)
        log.info("portal_event", system=self.name, bx_event=event, id=eid, stream=stream)
        return JSONResponse({"ok": True, "stream": stream})

    def _schedule(self, stream: str) -> None:
        """Debounce: events within `event_debounce` seconds make one pull of the stream."""
        with self._lock:
            if stream in self._debounce:
                return
            t = threading.Timer(self.settings.event_debounce, self._fire, args=(stream,))
            t.daemon = True
            self._debounce[stream] = t
        t.start()

    def _fire(self, stream: str) -> None:
        with self._lock:
            self._debounce.pop(stream, None)
        if self.ctx is not None:
            try:
                self.ctx.trigger(stream)
            except Exception as exc:  # noqa: BLE001 - a failed trigger waits for the next poll
                log.warning("trigger_failed", system=self.name, stream=stream, error=str(exc))

    def close(self) -> None:
        with self._lock:
            timers = list(self._debounce.values())
            self._debounce.clear()
        for t in timers:
            t.cancel()
        self.client.close()


__all__ = ["STREAMS", "WRITES", "Bitrix24Connector"]
