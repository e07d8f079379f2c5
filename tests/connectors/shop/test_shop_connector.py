"""Shop connector + engine end to end against the sandbox shop (through the network), CRM in memory."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import requests
from shop_world import MUG, PERSON, TEAPOT, place, settle

from connectors.shop import ShopConnector, ShopSettings
from syncd.connector import WriteOp
from syncd.sandbox.shop.seed import company_requisites
from syncd.store import tables as t

def test_s1_order_becomes_order_and_customer_success_after_commit(world: dict[str, Any]) -> None:
    w = world
    syncer, store, crm = w["syncer"], w["store"], w["crm"]
    o = place(w, PERSON, delivery_price=300, comment="Позвонить за час")
    # the engine dies inside the batch's transaction (before commit) once
    real = syncer.engine.ingest_in
    calls = {"n": 0}

    def dying(*a: Any, **k: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("killed before commit")
        return real(*a, **k)

    syncer.engine.ingest_in = dying  # type: ignore[method-assign]
    # the failure is counted and recorded; the run does not take the daemon down
    assert syncer.pull("shop", "orders").failed == 1
    assert store.recent_runs(1, system="shop")[0]["status"] == "failed"
    log1 = requests.get(f"{w['api']}/log").json()
    assert [e["mode"] for e in log1].count("query") == 1 and "success" not in [e["mode"] for e in log1]
    assert store.count("entities", type="order", hold=None) == 0
    # next run: the shop exports the same order again; now it is committed, then acknowledged
    syncer.pull("shop", "orders")
    log2 = requests.get(f"{w['api']}/log").json()
    queries = [e for e in log2 if e["mode"] == "query"]
    assert [q["exported"] for q in queries] == [1, 1]
    assert [e["mode"] for e in log2][-1] == "success"
    settle(syncer, store)
    assert store.count("entities", type="order", hold=None) == 1 and store.count("entities", type="person", hold=None) == 1
    eid = store.find_entity("shop", "order", str(o["id"]))
    ent = store.entity(eid)["fields"]
    assert ent["order.status"] == "new" and ent["order.total"] == Decimal(6180)
    assert ent["order.delivery_price"] == Decimal(300) and ent["order.from_shop"] is True
    assert [(i["name"], i["quantity"], i["price"]) for i in ent["order.items"]] == [
        ("Кружка керамическая 350 мл", Decimal(12), Decimal(490))]
    person = store.entity(ent["order.customer"])["fields"]
    assert person["person.email"] == "ivan.petrov@mail.example"
    assert person["person.phone"] in ("+74951234567", "8 (495) 123-45-67")
    deals = list(crm.objects["order"].values())
    assert len(deals) == 1 and deals[0]["status"] == "NEW" and deals[0]["contact_id"] in crm.objects["person"]
    assert [p["name"] for p in crm.objects["product"].values()] == ["Кружка керамическая 350 мл"]
    # nothing left: the next query exports nothing and nothing is planned
    c = syncer.pass_once()
    assert (c.planned, c.pushed, c.created) == (0, 0, 0)
    assert requests.get(f"{w['api']}/log").json()[-1]["mode"] in ("success", "query", "init")


def test_lost_success_reexports_without_duplicates(world: dict[str, Any]) -> None:
    w = world
    syncer, store, crm = w["syncer"], w["store"], w["crm"]
    place(w, PERSON)
    # committed, but `mode=success` never arrives (the shop answers failure to it)
    requests.patch(f"{w['api']}/faults", json={"failure_next": 1, "modes": ["success"]})
    settle(syncer, store)
    requests.patch(f"{w['api']}/faults", json={"modes": []})
    settle(syncer, store)
    queries = [e for e in requests.get(f"{w['api']}/log").json() if e["mode"] == "query"]
    assert queries[0]["exported"] == 1 and queries[1]["exported"] == 1      # exported again
    assert store.count("entities", type="order", hold=None) == 1 and store.count("entities", type="person", hold=None) == 1
    assert len(crm.objects["order"]) == 1 and crm.creates == 3              # person, product, order once


def test_s2_crm_change_reaches_shop_order_book(world: dict[str, Any]) -> None:
    w = world
    syncer, crm, st, store = w["syncer"], w["crm"], w["st"], w["store"]
    o = place(w, PERSON, items=[{"product_id": MUG, "quantity": 2}, {"product_id": TEAPOT, "quantity": 1}],
              delivery_price=300)
    settle(syncer, store)
    deal_id, deal = next(iter(crm.objects["order"].items()))
    items = [dict(i) for i in deal["items"]]
    items[0]["quantity"] = Decimal(5)                # the manager changes a quantity and a price
    items[1]["price"] = Decimal(1190)
    crm.edit("order", deal_id, status="READY", items=items)
    settle(syncer, store)
    order = st.orders[o["id"]]
    assert order.status == "G"
    assert [(i.product_id, i.quantity, i.price) for i in order.items] == [
        (MUG, Decimal(5), Decimal("490.00")), (TEAPOT, Decimal(1), Decimal("1190.00"))]
    assert order.total == Decimal("3940.00")              # 5*490 + 1190 + 300 delivery kept
    assert len(st.orders) == 1
    uploads = [e for e in requests.get(f"{w['api']}/log").json() if e["mode"] in ("file", "import")]
    assert uploads and uploads[-1]["answer"] == "success"
    # the customer pays in the shop -> the deal follows
    requests.post(f"{w['api']}/orders/{o['id']}/pay", json={})
    settle(syncer, store)
    assert crm.objects["order"][deal_id]["paid"] is True
    assert len(st.orders) == 1 and len(crm.objects["order"]) == 1


def test_bad_document_is_quarantined_rest_processed(world: dict[str, Any]) -> None:
    w = world
    syncer, store = w["syncer"], w["store"]
    good = place(w, PERSON)
    bad = place(w, {**PERSON, "email": "anna@example.ru", "phone": "+7 916 123 45 67", "last_name": "Смирнова"})
    requests.post(f"{w['api']}/orders/{bad['id']}/break", json={"what": "date"})
    c = syncer.pull("shop", "orders")
    assert c.quarantined == 1
    assert store.find_entity("shop", "order", str(good["id"])) is not None
    # the bad order is stood for by a held entity (nothing is written for it; it waits for its fix)
    held = store.find_entity("shop", "order", str(bad["id"]))
    assert held is not None and store.entity(held)["hold"] == "quarantine"
    with store.engine.connect() as conn:
        rows = conn.execute(t.quarantine.select()).mappings().all()
    assert len(rows) == 1 and "line" in rows[0]["reason"] and "Дата" in rows[0]["reason"]
    assert requests.get(f"{w['api']}/log").json()[-1]["mode"] == "success"


def test_company_buyer_arrives_with_requisites(world: dict[str, Any]) -> None:
    import random
    w = world
    syncer, store, crm = w["syncer"], w["store"], w["crm"]
    req = company_requisites(random.Random(5))
    req["bank_accounts"][0]["bank_name"] = "ПАО Сбербанк"
    o = place(w, {"kind": "company", "company_name": "ООО «Ромашка»", "full_name": "ООО «Ромашка»",
                  "email": "zakaz@romashka.example", "phone": "+7 (495) 765-43-21",
                  "legal_address": "119991, г. Москва, ул. Лесная, д. 5", "contact_person": "Петров Иван",
                  **req})
    settle(syncer, store)
    ent = store.entity(store.find_entity("shop", "order", str(o["id"])))["fields"]
    assert ent.get("order.customer") is None
    comp = store.entity(ent["order.company"])["fields"]
    assert comp["company.inn"] == req["inn"] and comp["company.kpp"] == req["kpp"]
    assert comp["company.ogrn"] == req["ogrn"]
    acc = comp["company.bank_accounts"][0]
    assert (acc["account"], acc["bik"], acc["bank_name"]) == (
        req["bank_accounts"][0]["account"], req["bank_accounts"][0]["bik"], "ПАО Сбербанк")
    (crm_company,) = crm.objects["company"].values()
    assert crm_company["inn"] == req["inn"] and crm_company["bank_accounts"][0]["account"] == acc["account"]
    # S7 shop side: the user edits the КПП in the personal account -> the CRM company follows
    requests.patch(f"{w['api']}/users/{o['user_id']}", json={"kpp": req["kpp"][:-1] + "9"})
    settle(syncer, store)
    (crm_company,) = crm.objects["company"].values()
    assert crm_company["kpp"] == req["kpp"][:-1] + "9"


def test_create_is_idempotent_on_id_and_session_relogin(world: dict[str, Any]) -> None:
    w = world
    conn: ShopConnector = w["conn"]
    st = w["st"]
    user = WriteOp("op-u1", "shop", "user", "create", "person", "p1", None,
                   {"Фамилия": "Орлова", "Имя": "Екатерина", "Почта": "kate@example.ru", "Телефон": "+79261112233"},
                   "syncd-p1")
    assert conn.write(user).external_id == "syncd-p1"
    op = WriteOp("op-1", "shop", "order", "create", "order", "e1", None,
                 {"Статус заказа": "[N] Принят, ожидается оплата", "Покупатель": "syncd-p1",
                  "Товары": [{"Ид": MUG, "Наименование": "Кружка керамическая 350 мл", "Количество": "3",
                              "ЦенаЗаЕдиницу": "490"}], "Комментарий": "Заказ по телефону"}, "syncd-e1")
    assert conn.write(op).external_id == "syncd-e1"
    st.sessions.clear()                               # the shop forgot the session: re-login, same Ид again
    assert conn.write(op).external_id == "syncd-e1"
    mine = [o for o in st.orders.values() if o.xml_id == "syncd-e1"]
    assert len(mine) == 1 and mine[0].total == Decimal("1470.00")
    assert st.users[mine[0].user_id].xml_id == "syncd-p1" and st.users[mine[0].user_id].email == "kate@example.ru"


def test_health_and_wrong_password(shop: Any) -> None:
    ok = ShopConnector("shop", ShopSettings(url=shop.extra["exchange_url"], login="1c_exchange", password="secret"))
    assert ok.health().ok
    bad = ShopConnector("shop", ShopSettings(url=shop.extra["exchange_url"], login="1c_exchange", password="x"))
    h = bad.health()
    assert not h.ok and "Неверный логин" in h.detail
    down = ShopConnector("shop", ShopSettings(url="http://127.0.0.1:9/x", login="a", password="b", timeout=2))
    assert not down.health().ok
