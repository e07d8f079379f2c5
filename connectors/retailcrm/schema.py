"""The live schema: fields per kind (with custom fields), status codes in their groups' order, order
methods, users, and the names a manager sees (users, statuses) for config values given by name."""

from __future__ import annotations

from typing import Any

from connectors.retailcrm.client import RetailCRMClient
from connectors.retailcrm.records import (
    CORPORATE_PLAIN,
    CUSTOMER_PLAIN,
    ORDER_MONEY,
    ORDER_PLAIN,
    PSEUDO,
    TASK_FIELDS,
)
from syncd.connector import LiveSchema
from syncd.errors import PermanentError

CUSTOM_ENTITIES = {"order": "order", "customer": "customer", "customer_corporate": "customer_corporate"}


class Schema:
    client: RetailCRMClient
    name: str

    def describe(self) -> LiveSchema:
        c = self.client
        schema = LiveSchema()
        schema.kinds = {
            "order": {*ORDER_PLAIN, *ORDER_MONEY, *PSEUDO["order"]},
            "customer": {*CUSTOMER_PLAIN, *PSEUDO["customer"]},
            "customer_corporate": {*CORPORATE_PLAIN, *PSEUDO["customer_corporate"]},
            "task": set(TASK_FIELDS),
        }
        try:
            for rows, _ in c.pages("custom-fields", "customFields"):
                for f in rows:
                    kind = CUSTOM_ENTITIES.get(str(f.get("entity")))
                    if kind and f.get("code"):
                        schema.kinds[kind].add(f"custom_{f['code']}")
        except PermanentError:
            pass                  # a key without custom_fields_read: the mapping check names what is missing
        statuses = (c.get("reference/statuses") or {}).get("statuses") or {}
        groups = (c.get("reference/status-groups") or {}).get("statusGroups") or {}
        methods = (c.get("reference/order-methods") or {}).get("orderMethods") or {}
        g_order = {code: (int(g.get("ordering") or 0), i) for i, (code, g) in enumerate(groups.items())}
        ordered = sorted(statuses.values(), key=lambda s: (g_order.get(str(s.get("group")), (999, 0)),
                                                           int(s.get("ordering") or 0)))
        codes = [str(s["code"]) for s in ordered if s.get("active", True)]
        schema.values["order.status"] = {str(s["code"]) for s in statuses.values()}
        schema.values["order.orderMethod"] = {str(k) for k in methods}
        # RetailCRM has no pipelines: one list of statuses, in their groups' order
        schema.pipelines["main"] = codes
        schema.names["stage"] = {str(s.get("name")): str(s["code"]) for s in ordered if s.get("name")}
        users: list[dict[str, Any]] = []
        for rows, _ in c.pages("users", "users"):
            users += rows
        people: dict[str, str] = {}
        for u in users:
            uid = str(u["id"])
            name = " ".join(str(u.get(k) or "") for k in ("firstName", "lastName")).strip()
            schema.users[uid] = {"name": name, "active": bool(u.get("active")),
                                 "present": bool(u.get("online")) and u.get("status") in (None, "free", "busy"),
                                 "email": u.get("email")}
            for label in (u.get("email"), name, " ".join(str(u.get(k) or "") for k in ("lastName", "firstName")).strip()):
                if label:
                    people.setdefault(str(label), uid)
        schema.names["user"] = people
        managers = {str(u["id"]) for u in users if u.get("isManager")}
        schema.values["order.managerId"] = managers or set(schema.users)
        schema.values["task.performerId"] = set(schema.users)
        return schema
