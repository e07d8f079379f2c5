"""The live schema for the mapping check and the rules: fields per kind, pipelines and their
statuses by name, users, and the names a person uses for them."""

from __future__ import annotations

from connectors.amocrm.activity import NOTE_FIELDS, TASK_FIELDS
from connectors.amocrm.calls import CALL_FIELDS
from connectors.amocrm.client import AmoClient
from connectors.amocrm.meta import Catalog
from connectors.amocrm.values import BUILTINS, RECORD_KINDS
from syncd.connector import LiveSchema


class Schema:
    client: AmoClient
    catalog: Catalog

    def describe(self) -> LiveSchema:
        schema = LiveSchema()
        for kind in RECORD_KINDS:
            schema.kinds[kind] = set(BUILTINS[kind]) | {f.key for f in self.catalog.fields(kind, refresh=True)}
        schema.kinds["task"] = set(TASK_FIELDS)
        schema.kinds["note"] = set(NOTE_FIELDS)
        schema.kinds["call"] = set(CALL_FIELDS)      # pseudo-fields of the call write (calls.py)
        pipelines = self.catalog.pipelines(refresh=True)
        statuses: set[str] = set()
        for p in pipelines:
            names = [n for _, n, _ in p.statuses]
            schema.pipelines[p.name] = names
            statuses.update(names)
        schema.values["lead.pipeline"] = {p.name for p in pipelines}
        schema.values["lead.status"] = statuses
        schema.names["pipeline"] = {p.name: p.name for p in pipelines}
        people: dict[str, str] = {}
        for u in self.client.all("users", "users"):
            uid = str(u["id"])
            active = bool((u.get("rights") or {}).get("is_active", True))
            # amoCRM shows no presence through the API: every user counts as present
            schema.users[uid] = {"name": str(u.get("name") or ""), "active": active, "present": True,
                                 "email": u.get("email")}
            for label in (u.get("name"), u.get("email")):
                if label:
                    people.setdefault(str(label), uid)
        schema.names["user"] = people
        schema.values["lead.responsible_user_id"] = set(schema.users)
        return schema
