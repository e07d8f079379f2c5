"""The shop tests' world: the sandbox shop, a CRM in memory, the mapping between them, helpers.

Fixtures `shop` and `world` are registered in this folder's conftest.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from connectors.shop import ShopConnector, ShopSettings
from syncd.mapping import Mapper, load_mappings, parse_mapping_doc
from syncd.mapping.load import merge, validate_set
from syncd.pipeline.push import PushPolicy, outbox_sizes
from syncd.sandbox.memory import MemoryConnector, MemorySystem
from syncd.sandbox.shop import start
from syncd.store import Store
from syncd.sync import Syncer

ROOT = Path(__file__).resolve().parents[3]
MUG = "9f1c2a10-0000-4c1e-8a00-000000000001"
TEAPOT = "9f1c2a10-0000-4c1e-8a00-000000000002"

CRM_SIDE: dict[str, Any] = {
    "maps": [
        {"system": "crm", "kind": "person", "entity": "person", "create": True,
         "fields": {"person.name": "name", "person.email": "email", "person.phone": "phone"}},
        {"system": "crm", "kind": "company", "entity": "company", "create": True,
         "fields": {"company.name": "name", "company.inn": "inn", "company.kpp": "kpp",
                    "company.bank_accounts": {"field": "bank_accounts",
                                              "items": {"account": "account", "bik": "bik"}}}},
        {"system": "crm", "kind": "product", "entity": "product", "create": True,
         "fields": {"product.name": "name", "product.price": "price"}},
        {"system": "crm", "kind": "order", "entity": "order", "create": True,
         "fields": {"order.number": "number", "order.status": {"field": "status", "values": "crm_status"},
                    "order.total": {"field": "total", "transform": "money"}, "order.paid": "paid",
                    "order.customer": "contact_id", "order.company": "company_id",
                    "order.from_shop": {"field": "from_shop", "direction": "pull"},
                    "order.items": {"field": "items", "items": {"product": "product_id", "name": "name",
                                                                "quantity": "quantity", "price": "price"}}}},
    ],
    "values": {"crm_status": {"map": {"new": "NEW", "paid": "PAID", "ready_to_ship": "READY",
                                      "shipped": "SHIPPED", "delivered": "DELIVERED", "completed": "WON",
                                      "canceled": "LOSE"}}},
    "identity": {"person": {"keys": ["email", "phone"], "origin": ["shop", "crm"]},
                 "company": {"keys": ["inn_kpp"], "origin": ["shop", "crm"]},
                 "product": {"keys": [], "origin": ["shop", "crm"]},
                 "order": {"keys": ["number"], "origin": ["shop", "crm"]}},
    "conflicts": {"*": {"policy": "newest"}},
}


def make_mapper() -> Mapper:
    shop = load_mappings([ROOT / "mappings" / "shop.toml"])
    ms = merge([("shop.toml", shop), ("crm", parse_mapping_doc(CRM_SIDE, "crm"))])
    validate_set(ms)
    return Mapper(ms)


def shop_fixture() -> Iterator[Any]:
    h = start()
    st = h.extra["state"]
    st.add_product(MUG, "Кружка керамическая 350 мл", "490")
    st.add_product(TEAPOT, "Чайник заварочный стеклянный 1 л", "1290")
    yield h
    h.stop()


def world_fixture(store: Store, shop: Any) -> dict[str, Any]:
    crm = MemorySystem("crm", ("person", "company", "product", "order"))
    conn = ShopConnector("shop", ShopSettings(url=shop.extra["exchange_url"], login="1c_exchange",
                                              password="secret"))
    syncer = Syncer(store, make_mapper(), {"shop": conn, "crm": MemoryConnector("crm", crm)},
                    policy=PushPolicy(base_delay=0.0, inline_wait_max=0.0, claim_ttl=300))
    return {"syncer": syncer, "crm": crm, "shop": shop, "st": shop.extra["state"], "conn": conn,
            "api": shop.url + "/_sandbox", "store": store}


def place(w: dict[str, Any], user: dict[str, Any], items: list[dict[str, Any]] | None = None,
          **kw: Any) -> dict[str, Any]:
    r = requests.post(f"{w['api']}/orders", json={
        "user": user, "items": items or [{"product_id": MUG, "quantity": 12}], **kw})
    assert r.status_code == 201, r.text
    return r.json()


PERSON = {"kind": "person", "last_name": "Петров", "first_name": "Иван", "middle_name": "Сергеевич",
          "email": "ivan.petrov@mail.example", "phone": "8 (495) 123-45-67", "address": "Москва, ул. Лесная, д. 5"}


def settle(syncer: Syncer, store: Store, timeout: float = 15.0) -> None:
    """Passes until nothing is left in the outbox (dependency waits are deferred about a second)."""
    deadline = time.monotonic() + timeout
    while True:
        syncer.until_quiet()
        waiting = sum(n for per in outbox_sizes(store).values() for st, n in per.items()
                      if st not in ("done", "dead"))
        if not waiting or time.monotonic() > deadline:
            return
        time.sleep(0.3)
