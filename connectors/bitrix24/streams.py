"""Reading: the deals/contacts/companies/leads streams by (DATE_MODIFY, ID), keyset-paged with
`start=-1`, with the pseudo-fields the portal keeps elsewhere (product rows; requisites through
`requisites.py`). Companies also follow requisite and bank-detail edits, which do not touch the
company's own DATE_MODIFY."""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from connectors.bitrix24.client import PAGE, Bitrix24Client
from connectors.bitrix24.settings import Bitrix24Settings
from connectors.bitrix24.values import (
    CRM_KINDS,
    MULTI,
    MULTI_KINDS,
    ORIGINATOR,
    REQ_OWNER_COMPANY,
    ROW_FIELDS,
    STREAMS,
    multi_values,
    parse_bx_time,
    parse_cursor,
    result_rows,
    utc_version,
)
from syncd.connector import Batch, RawRecord
from syncd.errors import PermanentError, TransientError


TAKEN_MAX = 100_000        # (kind, ID) -> DATE_MODIFY remembered per process for the overlap window


class Streams:
    client: Bitrix24Client
    _taken: "OrderedDict[tuple[str, str], Any]"
    settings: Bitrix24Settings
    name: str
    _lock: threading.Lock
    _dirty_requisites: set[str]
    _scanned: set[str]                 # streams this process has read through (see Events)
    _event_read: Callable[[str, bool], list[str] | None]     # Events

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

    def _count(self, kind: str, start: str | None) -> int | None:
        flt = {**self._base_filter(kind), **({">=DATE_MODIFY": start} if start else {})}
        try:
            return self.client.call(f"crm.{kind}.list", {"select": ["ID"], "filter": flt}).total
        except (TransientError, PermanentError):
            return None                    # only the progress bar needs it

    def _scan(self, kind: str, start: str | None, extra: Mapping[str, Any] | None = None
              ) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        """Pages ordered by (DATE_MODIFY, ID) from `start` on, keyset-paged with `start=-1`; each
        with the portal's own time when it began answering (its `time.date_start`)."""
        method = f"crm.{kind}.list"
        sel = self._select(kind)
        flt = {**self._base_filter(kind), **(extra or {})}
        lower: tuple[str, str] | None = (">=DATE_MODIFY", start) if start else None
        while True:
            f = dict(flt)
            if lower:
                f[lower[0]] = lower[1]
            env = self.client.call(method, {"select": sel, "filter": f, "start": -1,
                                            "order": {"DATE_MODIFY": "ASC", "ID": "ASC"}})
            rows = result_rows(env.result)
            if rows:
                yield rows, (env.time or {}).get("date_start")
            if len(rows) < PAGE:
                return
            last_t, last_id = rows[-1]["DATE_MODIFY"], int(rows[-1]["ID"])
            while True:     # the rest of that second, by ID (a bulk import shares one DATE_MODIFY)
                f2 = {**flt, ">=DATE_MODIFY": last_t, "<=DATE_MODIFY": last_t, ">ID": last_id}
                env = self.client.call(method, {"select": sel, "filter": f2, "start": -1, "order": {"ID": "ASC"}})
                more = result_rows(env.result)
                if more:
                    yield more, (env.time or {}).get("date_start")
                if len(more) < PAGE:
                    break
                last_id = int(more[-1]["ID"])
            lower = (">DATE_MODIFY", last_t)

    def read(self, stream: str, cursor: str | None, *, since: dt.datetime | None = None) -> Iterator[Batch]:
        if stream not in STREAMS:
            raise KeyError(f"unknown stream {stream!r}")
        kind = STREAMS[stream]
        ids = self._event_read(stream, stream in self._scanned) if since is None else None
        if ids is not None:
            # the records this read's events named, by their IDs; the cursor stays (the scan moves it)
            for i in range(0, len(ids), PAGE - 1):
                recs, read_at = self._by_ids(kind, ids[i:i + PAGE - 1])
                self._remember(kind, [r.fields for r in recs], read_at)
                yield Batch(stream, list(recs))
            return
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
        # a backfill says how many records it will read (one counting call; polls do not pay it)
        total = self._count(kind, start) if since is not None else None
        memo = self._taken if since is None else None
        for rows, read_at in self._scan(kind, start):
            # the overlap window brings back records this process has taken in already, unchanged
            # (the same DATE_MODIFY: a product rows' or requisites' edit moves it too): they are not
            # read again (their product rows) nor handed over — most are syncd's own writes
            fresh = rows if memo is None else [r for r in rows if memo.get((kind, str(r["ID"]))) != r.get("DATE_MODIFY")]
            recs = self._records(kind, fresh) if fresh else []
            seen.update(str(r["ID"]) for r in fresh)    # (a skipped company may have new requisites)
            last = rows[-1]
            lt = parse_bx_time(last.get("DATE_MODIFY"))
            if lt is not None and (best[0] is None or (lt, int(last["ID"])) > (best[0], best[1])):
                best = (lt, int(last["ID"]), str(last["DATE_MODIFY"]))
            yield Batch(stream, recs, cursor=self._cursor(best, rq_best if kind == "company" else None), total=total)
            if memo is not None:
                # resumed: that batch was taken in (committed); a failed one closes this generator
                self._remember(kind, fresh, read_at)
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
                rows = result_rows(self.client.call("crm.company.list", {
                    "select": self._select(kind), "filter": {"@ID": [int(x) for x in chunk]}, "start": -1,
                    "order": {"ID": "ASC"}}).result)
                if rows:
                    yield Batch(stream, self._records(kind, rows), cursor=self._cursor(best, rq_best))
            if rq_best != rq_cur:
                yield Batch(stream, [], cursor=self._cursor(best, rq_best))
        if since is None:
            self._scanned.add(stream)      # read through: events may now be read by their IDs

    def _remember(self, kind: str, rows: list[Mapping[str, Any]], read_at: str | None) -> None:
        """Remember the DATE_MODIFY of records taken in, for the overlap window. Only what changed
        in an earlier second than the portal's own time of the read: an edit after the read within
        the same second keeps its DATE_MODIFY."""
        asked = parse_bx_time(read_at)
        if asked is None:
            return
        with self._lock:
            for r in rows:
                t_mod = parse_bx_time(r.get("DATE_MODIFY"))
                if t_mod is None or t_mod >= asked.replace(microsecond=0):
                    continue
                self._taken[(kind, str(r["ID"]))] = r.get("DATE_MODIFY")
                self._taken.move_to_end((kind, str(r["ID"])))
            while len(self._taken) > TAKEN_MAX:
                self._taken.popitem(last=False)

    def _by_ids(self, kind: str, ids: list[str]) -> tuple[list[RawRecord], str | None]:
        """These records as the streams read them (missing ones left out), with the portal's time
        of the read. A deal's product rows come in the same `batch` call: one request."""
        flt = {**self._base_filter(kind), "@ID": [int(x) for x in ids]}
        listing = (f"crm.{kind}.list", {"select": self._select(kind), "filter": flt, "start": -1,
                                         "order": {"ID": "ASC"}})
        if kind != "deal":
            env = self.client.call(*listing)
            rows = result_rows(env.result)
            return (self._records(kind, rows) if rows else []), (env.time or {}).get("date_start")
        res = self.client.batch({"l": listing, **{f"p{i}": ("crm.deal.productrows.get", {"id": i}) for i in ids}})
        rows = result_rows(res.get("l", connector=self.name))
        extra = {str(r["ID"]): self._rows_of(res.get(f"p{r['ID']}", connector=self.name)) for r in rows}
        return self._records(kind, rows, extra), res.time_start

    # `syncd audit`: records read back by their ids, as the streams read them
    fetchable = frozenset(CRM_KINDS)

    def fetch(self, kind: str, external_ids: list[str]) -> Iterator[RawRecord]:
        """The current state of these records (missing ones are left out), 50 ids a call."""
        ids = sorted({int(x) for x in external_ids if str(x).isdigit()})
        for i in range(0, len(ids), PAGE):
            rows = result_rows(self.client.call(f"crm.{kind}.list", {
                "select": self._select(kind), "filter": {"@ID": ids[i:i + PAGE]}, "start": -1,
                "order": {"ID": "ASC"}}).result)
            if rows:
                yield from self._records(kind, rows)

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
            rows = result_rows(self.client.call("crm.requisite.list", {
                "filter": {"@ID": [int(x) for x in rq[i:i + PAGE] if x.isdigit()]},
                "select": ["ID", "ENTITY_ID", "ENTITY_TYPE_ID"], "start": -1}).result)
            out |= {str(r["ENTITY_ID"]) for r in rows if str(r.get("ENTITY_TYPE_ID")) == str(REQ_OWNER_COMPANY)}
        return out

    def _take_dirty(self) -> set[str]:
        with self._lock:
            dirty, self._dirty_requisites = self._dirty_requisites, set()
        return self._companies_of_requisites(dirty) if dirty else set()

    def _records(self, kind: str, rows: list[dict[str, Any]], extra: dict[str, dict[str, Any]] | None = None
                 ) -> list[RawRecord]:
        if extra is not None:
            pass
        elif kind == "deal":
            extra = self._product_rows([str(r["ID"]) for r in rows])
        elif kind == "company":
            extra = self._requisites([str(r["ID"]) for r in rows])
        else:
            extra = {}
        out = []
        for r in rows:
            fields = dict(r)
            for m in MULTI:
                if m in fields:
                    fields[m] = multi_values(fields[m])
            version = utc_version(r.get("DATE_MODIFY"))
            more = extra.get(str(r["ID"]), {})
            rq_version = more.pop("_version", None)
            if rq_version and (version is None or rq_version > version):
                version = rq_version
            fields.update(more)
            stamp = r.get("ORIGIN_ID") if r.get("ORIGINATOR_ID") == ORIGINATOR and r.get("ORIGIN_ID") else None
            out.append(RawRecord(kind, str(r["ID"]), fields, version=version,
                                 source_time=parse_bx_time(r.get("DATE_MODIFY")), stamp=stamp,
                                 origin=self.origin_of(r.get("ORIGINATOR_ID"), r.get("ORIGIN_ID"))))
        return out

    def _product_rows(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        res = self.client.batch({f"p{i}": ("crm.deal.productrows.get", {"id": i}) for i in ids})
        return {i: self._rows_of(res.get(f"p{i}", connector=self.name)) for i in ids}

    def _rows_of(self, got: Any) -> dict[str, Any]:
        """A deal's PRODUCT_ROWS (and DELIVERY_PRICE) from what productrows.get answered."""
        rows = [{k: r.get(k) for k in ROW_FIELDS if k in r} for r in result_rows(got or [])]
        # the delivery row is the deal's delivery, not one of its goods
        delivery = [r for r in rows if r.get("PRODUCT_NAME") == self.settings.delivery_row]
        out: dict[str, Any] = {"PRODUCT_ROWS": [r for r in rows if r not in delivery]}
        if delivery:
            out["DELIVERY_PRICE"] = sum(float(r.get("PRICE") or 0) * float(r.get("QUANTITY") or 1)
                                        for r in delivery)
        return out
