"""Reading: the change feed is history (``orders/history``, ``customers/history``,
``customers-corporate/history``), not polling lists.

A read from cursor N takes history records after N (oldest first, `sinceId` paging), leaves out the
records syncd's own key made (``apiKey.current``: its own writes, not edits — but an entity a person
changed too is read), reads the entities named by their ids (100 a call) and yields them with the last
history id as the cursor. The first read (no cursor) takes history's newest id first, then the whole
list: what changes meanwhile comes again from history, nothing falls between.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from typing import Any

from connectors.retailcrm.client import PAGE, RetailCRMClient
from connectors.retailcrm.records import KINDS, STREAMS, decode_customer, decode_order, local_time
from connectors.retailcrm.settings import RetailCRMSettings
from syncd.connector import Batch, RawRecord

# syncd's own key forms: "syncd-<entity>" and "<system>-<record id>" (its natural keys); a GUID
# (1C's, a shop's) is not one of them
_SYNCD_KEY = re.compile(r"^[a-z][a-z0-9_]*-.+$")
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


class Streams:
    client: RetailCRMClient
    settings: RetailCRMSettings
    name: str

    # -- the engine's entry points ----------------------------------------------------------------
    def read(self, stream: str, cursor: str | None, *, since: dt.datetime | None = None) -> Iterator[Batch]:
        if stream not in STREAMS:
            raise KeyError(f"unknown stream {stream!r}")
        if cursor is None or since is not None:
            yield from self._read_all(stream)
        else:
            yield from self._read_history(stream, int(cursor))

    fetchable = frozenset(KINDS)

    def fetch(self, kind: str, external_ids: list[str]) -> Iterator[RawRecord]:
        """The current state of these records (ids), as the streams read them; missing ones left out."""
        ids = sorted({str(x) for x in external_ids if str(x).isdigit()}, key=int)
        for i in range(0, len(ids), PAGE):
            yield from self._records(kind, self._by_ids(kind, ids[i:i + PAGE]))

    # -- reads ------------------------------------------------------------------------------------
    def _site_filter(self) -> dict[str, Any]:
        return {"sites": [self.settings.site]} if self.settings.site else {}

    def _read_all(self, stream: str) -> Iterator[Batch]:
        kind = STREAMS[stream]
        path, name, _ = KINDS[kind]
        last = self._newest_history_id(kind)          # first: whatever changes from now on is in history
        for rows, pag in self.client.pages(path, name, {"filter": self._site_filter()}):
            if rows:
                yield Batch(stream, list(self._records(kind, rows)), total=pag.get("totalCount"))
        yield Batch(stream, [], cursor=str(last))     # read through: the cursor only now

    def _newest_history_id(self, kind: str) -> int:
        path = f"{KINDS[kind][0]}/history"
        got = self.client.get(path, {"limit": 20, "page": 1}) or {}
        pages = int((got.get("pagination") or {}).get("totalCount") or 0)
        if not pages:
            return 0
        last_page = (pages + PAGE - 1) // PAGE
        got = self.client.get(path, {"limit": PAGE, "page": last_page}) or {}
        rows = got.get("history") or []
        return int(rows[-1]["id"]) if rows else 0

    def _read_history(self, stream: str, since: int) -> Iterator[Batch]:
        kind = STREAMS[stream]
        path = f"{KINDS[kind][0]}/history"
        limit = self.settings.history_limit
        while True:
            got = self.client.get(path, {"filter": {"sinceId": since}, "limit": limit}) or {}
            entries = got.get("history") or []
            if not entries:
                return
            changed: dict[str, Mapping[str, Any]] = {}      # entity id -> its last history record read
            for e in entries:
                ref = e.get("order") if kind == "order" else e.get("customer")
                if not isinstance(ref, Mapping) or ref.get("id") is None:
                    continue
                if (e.get("apiKey") or {}).get("current") is True:
                    continue                                 # syncd's own write: not an edit
                if self.settings.site and ref.get("site") not in (None, self.settings.site):
                    continue
                changed[str(ref["id"])] = e
            since = int(entries[-1]["id"])
            records: list[RawRecord] = []
            ids = sorted(changed, key=int)
            for i in range(0, len(ids), PAGE):
                chunk = ids[i:i + PAGE]
                got_rows = self._by_ids(kind, chunk)
                records += self._records(kind, got_rows, changed)
                present = {str(r["id"]) for r in got_rows}
                # deleted in RetailCRM (the order's last record says so): gone, not merely unseen
                records += [RawRecord(kind, x, {}, deleted=True,
                                      source_time=local_time(changed[x].get("createdAt"), self.settings.timezone))
                            for x in chunk if x not in present and changed[x].get("deleted")]
            yield Batch(stream, records, cursor=str(since))
            if len(entries) < limit:
                return

    def _by_ids(self, kind: str, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        path, name, _ = KINDS[kind]
        got = self.client.get(path, {"filter": {"ids": ids, **self._site_filter()}, "limit": PAGE}) or {}
        return list(got.get(name) or [])

    # -- decoding ---------------------------------------------------------------------------------
    def _records(self, kind: str, rows: list[dict[str, Any]], changed: Mapping[str, Mapping[str, Any]] | None = None
                 ) -> list[RawRecord]:
        out = []
        for r in rows:
            rid = str(r["id"])
            if kind == "order":
                fields = decode_order(r)
            else:
                fields = decode_customer(r, self._main_company(r) if kind == "customer_corporate" else None)
            ext = r.get("externalId") or None
            last = (changed or {}).get(rid)
            when = local_time((last or {}).get("createdAt"), self.settings.timezone) if last else None
            out.append(RawRecord(kind, rid, fields, source_time=when, stamp=ext, origin=self.origin_of(ext)))
        return out

    def _main_company(self, c: Mapping[str, Any]) -> dict[str, Any] | None:
        """A corporate customer's main company (its requisites are its contragent's)."""
        main = (c.get("mainCompany") or {}).get("id")
        if main is None:
            return None
        got = self.client.get(f"customers-corporate/{c['id']}/companies", {"by": "id", "limit": PAGE}) or {}
        return next((x for x in got.get("companies") or [] if x.get("id") == main), None)

    def origin_of(self, external_id: Any) -> tuple[str, str] | None:
        """The record an externalId names: one syncd did not make (a shop module's order id) belongs to
        `origin_system`; syncd's own keys ("syncd-…", "shop-1001") the engine reads from the stamp."""
        if not external_id:
            return None
        ext = str(external_id)
        if _SYNCD_KEY.match(ext) and not _GUID.match(ext):
            return None
        return self.settings.origin_system, ext
