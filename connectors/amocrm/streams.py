"""Reading leads, contacts and companies changed since a cursor ("updated_at|id"), and by ids.

A poll asks for ``filter[updated_at][from] = cursor - overlap`` ordered by updated_at. Pages are
keyset pages: after a full page the next request starts from the last row's updated_at (page 1
again), so a record edited while the walk goes on cannot shift another one out of an offset page;
only a page whose rows all share one second pages on by number within that second. Rows met twice
in one read are handed over once.

amoCRM's updated_at has whole seconds: an edit saved in the same second as an earlier read keeps
the same updated_at. So a record is remembered as taken in (and skipped when the overlap brings it
back unchanged) only when its updated_at is earlier than the second the server answered in (its
Date header): anything that may still change within its second is read again.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

from connectors.amocrm.client import AmoClient
from connectors.amocrm.meta import ETYPES, STREAMS, Catalog
from connectors.amocrm.settings import AmoCRMSettings
from connectors.amocrm.values import decode, origin_of, utc_version
from syncd.connector import Batch, RawRecord

TAKEN_MAX = 100_000


def parse_cursor(cursor: str | None) -> tuple[int | None, int]:
    if not cursor:
        return None, 0
    t, _, i = cursor.partition("|")
    try:
        return int(t), int(i or 0)
    except ValueError:
        return None, 0


class Streams:
    client: AmoClient
    catalog: Catalog
    settings: AmoCRMSettings
    name: str
    _lock: threading.Lock
    _taken: "OrderedDict[tuple[str, int], int]"     # (kind, id) -> updated_at handed over

    def _list_params(self, kind: str) -> dict[str, Any]:
        # a lead's contacts come only with with=contacts (its main contact is contact_id)
        return {"with": "contacts"} if kind == "lead" else {}

    def _scan(self, kind: str, start: int | None) -> Iterator[tuple[list[dict[str, Any]], float | None]]:
        lim = self.settings.page_limit
        lower, page = start, 1
        seen: dict[int, Any] = {}
        while True:
            params = {**self._list_params(kind), "order[updated_at]": "asc", "limit": lim, "page": page}
            if lower is not None:
                params["filter[updated_at][from]"] = lower
            ans = self.client.request("GET", ETYPES[kind], params=params, what=f"list {ETYPES[kind]}")
            rows = list(((ans.data or {}).get("_embedded") or {}).get(ETYPES[kind]) or [])
            rows.sort(key=lambda r: (int(r.get("updated_at") or 0), int(r["id"])))
            fresh = [r for r in rows if seen.get(int(r["id"])) != r.get("updated_at")]
            seen.update((int(r["id"]), r.get("updated_at")) for r in rows)
            if fresh:
                yield fresh, ans.date
            if len(rows) < lim:
                return
            first_t, last_t = int(rows[0].get("updated_at") or 0), int(rows[-1].get("updated_at") or 0)
            if first_t == last_t:
                page += 1              # a whole page in one second: on by number within it
            else:
                lower, page = last_t, 1

    def read(self, stream: str, cursor: str | None, *, since: dt.datetime | None = None) -> Iterator[Batch]:
        if stream not in STREAMS:
            raise KeyError(f"unknown stream {stream!r} (streams: {', '.join(STREAMS)})")
        kind = STREAMS[stream]
        ct, cid = parse_cursor(cursor)
        if since is not None:
            start: int | None = int((since if since.tzinfo else since.replace(tzinfo=dt.UTC)).timestamp())
        elif ct is not None:
            start = max(0, ct - self.settings.overlap_seconds)
        else:
            start = None
        best = (ct, cid) if ct is not None else None
        memo = self._taken if since is None else None
        for rows, asked in self._scan(kind, start):
            if memo is not None:
                rows = [r for r in rows if memo.get((kind, int(r["id"]))) != r.get("updated_at")]
            for r in rows:
                key = (int(r.get("updated_at") or 0), int(r["id"]))
                if best is None or key > best:
                    best = key
            if not rows:
                continue
            yield Batch(stream, self._records(kind, rows),
                        cursor=f"{best[0]}|{best[1]}" if best is not None else cursor)
            if memo is not None:
                self._remember(kind, rows, asked)    # resumed: that batch was taken in

    def _remember(self, kind: str, rows: list[Mapping[str, Any]], asked: float | None) -> None:
        if asked is None:
            return
        with self._lock:
            for r in rows:
                t = r.get("updated_at")
                if t is None or int(t) >= int(asked):
                    continue              # may still change within its second: read it again
                self._taken[(kind, int(r["id"]))] = t
                self._taken.move_to_end((kind, int(r["id"])))
            while len(self._taken) > TAKEN_MAX:
                self._taken.popitem(last=False)

    def _records(self, kind: str, rows: list[dict[str, Any]]) -> list[RawRecord]:
        key = self.settings.key_field
        out = []
        for r in rows:
            fields = decode(kind, r, self.catalog)
            stamp = next((fields[k] for k in fields if k.upper() == key.upper()), None)
            stamp = str(stamp) if stamp not in (None, "") else None
            ts = r.get("updated_at")
            out.append(RawRecord(kind, str(r["id"]), fields, version=utc_version(ts),
                                 source_time=dt.datetime.fromtimestamp(int(ts), dt.UTC) if ts else None,
                                 stamp=stamp, origin=origin_of(stamp)))
        return out

    # `syncd audit` reads records back by their ids, as the streams read them
    fetchable = frozenset({"lead", "contact", "company"})

    def fetch(self, kind: str, external_ids: list[str]) -> Iterator[RawRecord]:
        """The current state of these records (missing ones left out), 250 ids a request."""
        ids = sorted({int(x) for x in external_ids if str(x).isdigit()})
        lim = self.settings.page_limit
        for i in range(0, len(ids), lim):
            part = ids[i:i + lim]
            params: dict[str, Any] = {**self._list_params(kind), "limit": lim,
                                      **{f"filter[id][{j}]": x for j, x in enumerate(part)}}
            data = self.client.get(ETYPES[kind], params)
            rows = list(((data or {}).get("_embedded") or {}).get(ETYPES[kind]) or [])
            if rows:
                yield from self._records(kind, rows)
