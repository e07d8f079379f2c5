"""Factories for the engine's tests: three in-memory systems and a mapping between them."""

from __future__ import annotations

from typing import Any

from syncd.mapping import Mapper, parse_mapping_doc
from syncd.mapping.load import validate_set
from syncd.pipeline.push import PushPolicy
from syncd.sandbox.memory import MemoryConnector, MemorySystem
from syncd.store import Store
from syncd.sync import Syncer

SYSTEMS = ("crm", "shop", "onec")

STATUS_CODES = {
    "crm": {"new": "NEW", "paid": "PREPAYMENT_INVOICE", "shipped": "EXECUTING", "completed": "WON"},
    "shop": {"new": "N", "paid": "P", "shipped": "S", "completed": "F"},
    "onec": {"new": "Новый", "paid": "Оплачен", "shipped": "Отгружен", "completed": "Закрыт"},
}


def mapping_doc(conflicts: dict[str, Any] | None = None, origin: dict[str, list[str]] | None = None,
                systems: tuple[str, ...] = SYSTEMS) -> dict[str, Any]:
    maps = []
    for s in systems:
        maps.append({"system": s, "kind": "person", "entity": "person", "fields": {
            "person.name": "name", "person.email": "email", "person.phone": "phone",
            "person.comment": "comment"}})
        maps.append({"system": s, "kind": "order", "entity": "order", "fields": {
            "order.number": "number", "order.status": {"field": "status", "values": f"status_{s}"},
            "order.total": {"field": "total", "transform": "money"},
            "order.customer": "customer_id", "order.comment": "comment"}})
    origin = origin or {"person": ["crm", "shop"], "order": ["shop", "crm"]}
    return {
        "maps": maps,
        "values": {f"status_{s}": STATUS_CODES[s] for s in systems},
        "identity": {"person": {"keys": ["email", "phone"], "origin": origin["person"]},
                     "order": {"keys": ["number"], "origin": origin["order"]}},
        "conflicts": conflicts if conflicts is not None else {
            "order.status": {"policy": "owner", "owner": "shop"},
            "person.phone": {"policy": "priority", "order": ["crm", "shop", "onec"]},
            "*": {"policy": "newest"},
        },
    }


def make_mapper(**kw: Any) -> Mapper:
    ms = parse_mapping_doc(mapping_doc(**kw), "test")
    validate_set(ms)
    return Mapper(ms)


def make_world(store: Store, *, systems: tuple[str, ...] = SYSTEMS, mapper: Mapper | None = None,
               remote: dict[str, MemorySystem] | None = None, policy: PushPolicy | None = None,
               worker: str = "w") -> tuple[Syncer, dict[str, MemorySystem]]:
    remote = remote or {s: MemorySystem(s, ("person", "order")) for s in systems}
    conns = {s: MemoryConnector(s, remote[s]) for s in systems}
    syncer = Syncer(store, mapper or make_mapper(systems=systems), conns, worker=worker,
                    policy=policy or PushPolicy(base_delay=0.0, inline_wait_max=0.0, claim_ttl=300))
    return syncer, remote


def person(name: str = "Иван Петров", email: str | None = "ivan@example.ru", phone: str | None = None,
           **extra: Any) -> dict[str, Any]:
    out = {"name": name, **extra}
    if email is not None:
        out["email"] = email
    if phone is not None:
        out["phone"] = phone
    return out
