"""The documents waiting for 1C's next `mode=query`, kept in the store (connector state).

State keys (through `ctx.state_get/state_set`, i.e. the store's kv table):

* ``doc:<Ид>``  — the full last known document: kind, fields (merged over all writes), ``rev`` (bumped by
  every write that changes it), ``acked`` (the rev 1C confirmed with `success`), recent op ids;
* ``pending``   — Ид of documents with ``rev > acked``, in the order they were queued;
* ``served``    — {Ид: rev} returned by the last `query`; `success` acknowledges exactly these;
* ``number:<Номер>`` — Ид of an order by its number (payments/shipments link by `Основание`).

A document changed after it was served stays pending (its new rev is not acknowledged by the old
`success`); acknowledged documents are never served again unless a later write changes them.
"""

from __future__ import annotations

import threading
from typing import Any

from syncd.connector import ConnectorContext

OPS_KEPT = 50


class DocQueue:
    def __init__(self, ctx: ConnectorContext) -> None:
        self.ctx = ctx
        self.lock = threading.RLock()

    # -- documents ------------------------------------------------------------------------------
    def get(self, ext: str) -> dict[str, Any] | None:
        return self.ctx.state_get(f"doc:{ext}")

    def put(self, ext: str, kind: str, fields: dict[str, Any], op_id: str, *, replace: bool = False
            ) -> tuple[dict[str, Any], bool]:
        """Merge `fields` into document `ext`; returns (document, changed). Idempotent per op_id."""
        with self.lock:
            doc = self.get(ext) or {"kind": kind, "fields": {}, "rev": 0, "acked": 0, "ops": []}
            if op_id in doc["ops"]:
                self._index(ext, doc)          # a crash may have come between the two writes
                return doc, False
            merged = dict(fields) if replace else {**doc["fields"], **fields}
            changed = merged != doc["fields"] or doc["rev"] == 0
            doc["fields"] = merged
            doc["kind"] = kind
            doc["ops"] = (doc["ops"] + [op_id])[-OPS_KEPT:]
            if changed:
                doc["rev"] += 1
            self.ctx.state_set(f"doc:{ext}", doc)
            if kind == "order" and merged.get("Номер"):
                self.ctx.state_set(f"number:{merged['Номер']}", ext)
            self._index(ext, doc)
            return doc, changed

    def _index(self, ext: str, doc: dict[str, Any]) -> None:
        pending = self.ctx.state_get("pending", [])
        if doc["rev"] > doc["acked"] and ext not in pending:
            self.ctx.state_set("pending", pending + [ext])

    def observe(self, ext: str, fields: dict[str, Any]) -> None:
        """1C sent this document: what it holds now is the base later writes are merged into.

        Does not make the document pending: 1C has these values already."""
        with self.lock:
            doc = self.get(ext)
            if doc is None:
                return
            merged = {**doc["fields"], **fields}
            if merged != doc["fields"]:
                doc["fields"] = merged
                self.ctx.state_set(f"doc:{ext}", doc)

    def by_number(self, number: str) -> str | None:
        return self.ctx.state_get(f"number:{number}")

    # -- exchange -------------------------------------------------------------------------------
    def pending(self) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            out = []
            for ext in self.ctx.state_get("pending", []):
                doc = self.get(ext)
                if doc is not None and doc["rev"] > doc["acked"]:
                    out.append((ext, doc))
            return out

    def size(self) -> int:
        return len(self.ctx.state_get("pending", []))

    def serve(self, served: dict[str, int]) -> None:
        """Remember what the last `query` returned (replaces any earlier unacknowledged query)."""
        with self.lock:
            self.ctx.state_set("served", served)

    def acknowledge(self) -> int:
        """`success`: the documents of the last query are in 1C; returns how many were acknowledged."""
        with self.lock:
            served: dict[str, int] = self.ctx.state_get("served", {})
            n = 0
            for ext, rev in served.items():
                doc = self.get(ext)
                if doc is None or rev <= doc["acked"]:
                    continue
                doc["acked"] = rev
                self.ctx.state_set(f"doc:{ext}", doc)
                n += 1
            pending = [e for e in self.ctx.state_get("pending", [])
                       if (d := self.get(e)) is not None and d["rev"] > d["acked"]]
            self.ctx.state_set("pending", pending)
            self.ctx.state_set("served", {})
            return n
