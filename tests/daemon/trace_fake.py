"""A small stand-in for `syncd.trace` (the scenarios issue builds the real one): the JSON shape the
page's trace panel renders, made from the store's own bindings, change log and outbox.

    {"query": ..., "records": [{"entity_id", "type", "ids": {system: external_id},
      "links": {system: url | None}, "events": [{"at", "kind": "change|decision|write|hold",
      "system", "summary", "details": {...}}]}]}
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from syncd.daemon.search import search
from syncd.store import Store
from syncd.store import tables as t

CRM_URL = "https://crm.example.ru/crm/deal/details/{id}/"


def fake_trace(store: Store, crm: str) -> Any:
    def trace(q: str) -> dict[str, Any]:
        records = []
        for hit in search(store, q):
            eid = hit["id"]
            with store.read() as c:
                changes = c.execute(select(t.changelog).where(t.changelog.c.entity_id == eid)
                                    .order_by(t.changelog.c.id)).mappings().all()
                writes = c.execute(select(t.outbox).where(t.outbox.c.entity_id == eid, t.outbox.c.status == "done")
                                   .order_by(t.outbox.c.id)).mappings().all()
            events = [{"at": ch["observed_at"].isoformat(), "kind": "change", "system": ch["system"],
                       "summary": "<b>" + ", ".join(sorted(json.loads(ch["fields"]))) + "</b>",
                       "details": json.loads(ch["fields"])} for ch in changes]
            events += [{"at": w["updated_at"].isoformat(), "kind": "write", "system": w["system"],
                        "summary": f"{w['op']} {w['entity_type']}", "details": {"attempts": w["attempts"]}}
                       for w in writes]
            events.sort(key=lambda e: e["at"])
            records.append({"entity_id": eid, "type": hit["type"], "ids": hit["bindings"],
                            "links": {s: (CRM_URL.format(id=x) if s == crm else None)
                                      for s, x in hit["bindings"].items()},
                            "events": events})
        return {"query": q, "records": records}

    return trace
