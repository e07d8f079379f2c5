"""A shop and a CRM in memory with a mapping that carries a `[rules]` section."""

from __future__ import annotations

import random
from typing import Any

from syncd.connector import LiveSchema
from syncd.mapping import Mapper, parse_mapping_doc
from syncd.mapping.load import validate_set
from syncd.pipeline.push import PushPolicy
from syncd.rules import RuleSet
from syncd.sandbox.memory import MemoryConnector, MemorySystem
from syncd.store import Store
from syncd.sync import Syncer

STAGES = ["NEW", "PREPARATION", "PREPAYMENT_INVOICE", "EXECUTING", "FINAL_INVOICE", "WON", "LOSE"]
USERS = {
    "1": {"name": "Анна", "active": True, "present": True},
    "3": {"name": "Борис", "active": True, "present": True},
    "5": {"name": "Вера", "active": True, "present": False},
    "7": {"name": "Глеб", "active": True, "present": None},
    "9": {"name": "Дина", "active": False, "present": False},
}


class CrmConnector(MemoryConnector):
    """A memory CRM that also exposes users/presence and pipelines, and takes notices (as writes
    of kind `notice`, through the outbox)."""

    def __init__(self, name: str, system: MemorySystem, users: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__(name, system)
        self.users = users if users is not None else {k: dict(v) for k, v in USERS.items()}
        self.describes = 0

    @property
    def notices(self) -> list[tuple[str, str]]:
        return [(o["user"], o["text"]) for o in self.system.objects.get("notice", {}).values()]

    def describe(self) -> LiveSchema:
        self.describes += 1
        return LiveSchema(users={k: dict(v) for k, v in self.users.items()},
                          pipelines={"0": list(STAGES), "1": ["L_NEW", "L_READY", "L_WON"]})


def mapping_doc(rules: dict[str, Any]) -> dict[str, Any]:
    person = {"person.name": "name", "person.email": "email", "person.responsible": "responsible",
              "person.client_type": "client_type"}
    order = {"order.number": "number", "order.status": "status", "order.total": "total",
             "order.customer": "customer_id",
             "order.paid_percent": "paid_percent", "order.paid": "paid",
             "order.canceled": "canceled", "order.date": "date", "order.title": "title",
             "order.source": "source",
             "order.items": {"field": "items", "items": {"name": "name", "kind": "kind", "sum": "sum"}}}
    # the shop has no companies: only the CRM maps order.company
    crm_order = dict(order, **{"order.company": "company_id", "order.responsible": "responsible", "order.pipeline": "pipeline",
                               "order.stage": "stage", "order.probability": "probability",
                               "order.opened": "opened"})
    crm_person = dict(person, **{f"person.{m}": m for m in ("turnover", "orders_count", "first_order_at",
                                                            "last_order_at", "average_order", "won_count")})
    company = {"company.name": "name", "company.inn": "inn", "company.responsible": "responsible"}
    return {
        "maps": [
            {"system": "shop", "kind": "person", "entity": "person", "create": True, "fields": person},
            {"system": "shop", "kind": "order", "entity": "order", "create": True, "fields": order},
            {"system": "crm", "kind": "person", "entity": "person", "create": True, "fields": crm_person},
            {"system": "crm", "kind": "company", "entity": "company", "create": True, "fields": company},
            {"system": "crm", "kind": "order", "entity": "order", "create": True, "fields": crm_order},
            {"system": "shop", "kind": "lead", "entity": "lead", "create": True, "fields": {
                "lead.title": "title", "lead.email": "email", "lead.form": "form", "lead.source": "source"}},
            {"system": "crm", "kind": "lead", "entity": "lead", "create": True, "fields": {
                "lead.title": "title", "lead.email": "email", "lead.form": "form", "lead.source": "source",
                "lead.responsible": "responsible"}},
            {"system": "crm", "kind": "task", "entity": "task", "create": True, "direction": "push", "fields": {
                "task.title": "title", "task.responsible": "responsible", "task.deadline": "deadline",
                "task.order": "order_id", "task.person": "person_id", "task.company": "company_id",
                "task.rule": "rule"}},
            {"system": "crm", "kind": "notice", "entity": "notice", "create": True, "direction": "push",
             "only_when": {"notice.system": "crm"},
             "fields": {"notice.user": "user", "notice.text": "text"}},
        ],
        "identity": {"person": {"keys": ["email"]}, "order": {"keys": ["number"]}},
        "conflicts": {"*": {"policy": "newest"}},
        "rules": rules,
    }


class World:
    def __init__(self, store: Store, rules: dict[str, Any], *, seed: int = 1,
                 users: dict[str, dict[str, Any]] | None = None,
                 remote: dict[str, MemorySystem] | None = None) -> None:
        self.store = store
        self.rules_cfg = rules
        ms = parse_mapping_doc(mapping_doc(rules), "test")
        validate_set(ms)
        self.mapper = Mapper(ms)
        self.remote = remote or {"shop": MemorySystem("shop", ("person", "order", "lead")),
                                 "crm": MemorySystem("crm", ("person", "company", "order", "lead", "task", "notice"))}
        self.crm = CrmConnector("crm", self.remote["crm"], users)
        self.conns = {"shop": MemoryConnector("shop", self.remote["shop"]), "crm": self.crm}
        self.ruleset = RuleSet(ms.rules, store, self.conns, rng=random.Random(seed))
        self.syncer = Syncer(store, self.mapper, self.conns, rules=self.ruleset.hook,
                             policy=PushPolicy(base_delay=0.0, inline_wait_max=0.0, claim_ttl=300))

    def tick(self, now: Any) -> int:
        return self.ruleset.tick(self.syncer.engine, now)

    def crm_orders(self) -> dict[str, dict[str, Any]]:
        return {k: {f: v for f, v in o.items() if f != "_stamp"} for k, o in self.remote["crm"].objects["order"].items()}

    def crm_order_by_number(self, number: str) -> dict[str, Any]:
        return next(o for o in self.crm_orders().values() if o.get("number") == number)

    def tasks(self) -> list[dict[str, Any]]:
        return [{f: v for f, v in o.items() if f != "_stamp"} for o in self.remote["crm"].objects["task"].values()]

    def entity_id(self, system: str, kind: str, ext: str) -> str:
        eid = self.store.find_entity(system, kind, ext)
        assert eid is not None
        return eid
