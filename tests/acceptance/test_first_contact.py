"""First contact with data others made (issue 21): binding a record that already existed in another
system is a merge, never a wipe.

Deals the shop's own CRM integration made before syncd (no product rows, other rows, another sum),
a contact a manager typed with the phone spelled differently, a product made by hand with the
shop's XML_ID: each is adopted, and afterwards the deal's rows and OPPORTUNITY are the order's,
nothing is created twice, and nothing of the order was overwritten by the CRM's partial copy.
"""

from __future__ import annotations

from typing import Any

from harness import MUG, ORDER_FIELD, TEAPOT, THERMOS, Integration, digits, money, person


def _vendor_deal(it: Integration, o: dict[str, Any], cid: int | None = None, **fields: Any) -> int:
    """A deal as the shop's own integration made it: ORIGINATOR_ID/ORIGIN_ID and the order number."""
    body = {"TITLE": f"Заказ №{o['number']} с сайта", "CATEGORY_ID": it.setup.shop_pipeline,
            "STAGE_ID": it.setup.stage("NEW"), "ORIGINATOR_ID": "shop", "ORIGIN_ID": o["xml_id"],
            ORDER_FIELD: o["number"], "CURRENCY_ID": "RUB", **fields}
    if cid is not None:
        body["CONTACT_ID"] = cid
    return int(it.portal.rest("crm.deal.add", {"fields": body}))


def _rows_of_order(it: Integration, o: dict[str, Any]) -> list[tuple[str, float, float]]:
    order = it.shop.order(o["id"])
    rows = [(i["name"], float(money(i["price"])), float(i["quantity"])) for i in order["items"]]
    if money(order.get("delivery_price") or 0):
        rows.append(("Доставка", float(money(order["delivery_price"])), 1.0))
    return sorted(rows)


def _rows_of_deal(it: Integration, did: int) -> list[tuple[str, float, float]]:
    return sorted((r["PRODUCT_NAME"], float(r["PRICE"]), float(r["QUANTITY"])) for r in it.portal.rows(did))


def test_a_vendor_deal_without_rows_gets_the_orders_rows_and_sum(it: Integration) -> None:
    o = it.shop.place(person("Волков", "Дмитрий", "d.volkov@example.ru", "+7 (912) 345-67-01"),
                      [(MUG, 2), (TEAPOT, 1), (THERMOS, 1)], delivery_price="300")
    did = _vendor_deal(it, o, OPPORTUNITY="300")                 # only the delivery, no rows
    it.sync()
    assert [int(d["ID"]) for d in it.portal.deals()] == [did], "adopted, not duplicated"
    assert _rows_of_deal(it, did) == _rows_of_order(it, o)
    assert money(it.portal.deal(did)["OPPORTUNITY"]) == money(it.shop.order(o["id"])["total"])
    # and nothing of the CRM's partial copy went back to the shop
    assert len(it.shop.order(o["id"])["items"]) == 3


def test_a_vendor_deal_with_other_rows_or_another_sum_takes_the_orders(it: Integration) -> None:
    buyer = person("Соколова", "Анна", "a.sokolova@example.ru", "+7 903 100-20-30")
    o1 = it.shop.place(buyer, [(MUG, 4)])
    o2 = it.shop.place(buyer, [(TEAPOT, 2)])
    d1 = _vendor_deal(it, o1, OPPORTUNITY="490")
    it.portal.rest("crm.deal.productrows.set", {"id": d1, "rows": [
        {"PRODUCT_NAME": "Кружка керамическая 350 мл", "PRICE": 490, "QUANTITY": 1}]})
    d2 = _vendor_deal(it, o2, OPPORTUNITY="99999")
    it.sync()
    for o, d in ((o1, d1), (o2, d2)):
        assert _rows_of_deal(it, d) == _rows_of_order(it, o), f"deal {d}"
        assert money(it.portal.deal(d)["OPPORTUNITY"]) == money(it.shop.order(o["id"])["total"]), f"deal {d}"
        assert [float(i["quantity"]) for i in it.shop.order(o["id"])["items"]] == [4.0 if o is o1 else 2.0]
    # the story says why the order's content was taken
    story = it.cli("trace", str(o1["number"]))[1]
    assert "first contact" in story, story


def test_a_contact_a_manager_typed_with_another_phone_spelling_is_the_buyer(it: Integration) -> None:
    cid = it.crm_contact("Мария", "Иванова", phone="8 (916) 123-45-67")
    o = it.shop.place(person("Иванова", "Мария", "", "+79161234567"), [(MUG, 1)])
    it.sync()
    contacts = [c for c in it.portal.contacts() if digits(str(c.get("PHONE", ""))).endswith("9161234567")
                or "Иванова" in c.get("LAST_NAME", "")]
    assert [int(c["ID"]) for c in contacts] == [cid], contacts
    assert int(it.deal_of(o)["CONTACT_ID"]) == cid


def test_a_shop_order_pushed_before_the_crm_was_read_waits_and_binds_the_managers_contact(it: Integration) -> None:
    """The scale test found it: the daemon's first shop pull and push ran before its first read of
    the portal's contacts, and a client a manager had typed got a second contact. A new contact
    waits until the portal's contacts were read once through; then the buyer is the manager's."""
    from sqlalchemy import select

    from syncd.store import tables as t

    cid = it.crm_contact("Мария", "Иванова", phone="8 (916) 123-45-67", email="Maria.Ivanova@Example.ru")
    o = it.shop.place(person("Иванова", "Мария", "maria.ivanova@example.ru", "+79161234567"), [(MUG, 1)])
    rt = it.runtime()
    rt.run_stream("shop", "orders")
    rt.push("crm")                                    # before syncd has read a single CRM contact
    assert [int(c["ID"]) for c in it.portal.contacts()] == [cid], "a contact made before the CRM was read"
    with rt.store.read() as c:
        waits = c.execute(select(t.outbox.c.entity_type, t.outbox.c.blocked_why, t.outbox.c.blocked_on)
                          .where(t.outbox.c.system == "crm", t.outbox.c.status == "blocked")).all()
    assert ("person", "read", "contacts") in [tuple(w) for w in waits], waits
    it.sync()
    assert [int(c["ID"]) for c in it.portal.contacts()] == [cid]
    assert int(it.deal_of(o)["CONTACT_ID"]) == cid


def test_a_product_made_by_hand_with_the_shops_xml_id_is_the_one_the_rows_use(it: Integration) -> None:
    pid = int(it.portal.rest("crm.product.add", {"fields": {"NAME": "Кружка (заведена вручную)", "XML_ID": MUG,
                                                            "PRICE": 490, "CURRENCY_ID": "RUB"}}))
    o = it.shop.place(person("Белов", "Игорь", "i.belov@example.ru", "+7 900 555-00-11"), [(MUG, 3)])
    it.sync()
    products = it.portal.all("crm.product.list", {"filter": {"XML_ID": MUG}, "select": ["ID", "XML_ID"]})
    assert [int(p["ID"]) for p in products] == [pid], "a second product with the shop's XML_ID"
    (row,) = it.portal.rows(int(it.deal_of(o)["ID"]))
    assert int(row["PRODUCT_ID"]) == pid and float(row["QUANTITY"]) == 3
    assert it.dead() == []


def _portal_counts(it: Integration) -> dict[str, int]:
    return {k: len(it.portal.all(f"crm.{k}.list", {"select": ["ID"]}))
            for k in ("deal", "contact", "company", "product")}


def test_a_reinstall_beside_filled_systems_binds_everything_and_writes_nothing(it: Integration) -> None:
    """A full sync, then syncd installed again with an empty database against the same portal and
    shop: every record is bound by its natural key (deals by ORIGIN_ID, contacts by e-mail and phone,
    companies by ИНН+КПП, products by XML_ID); nothing is created, written twice or dead-lettered."""
    from harness import SAMOVAR, company

    buyers = [person("Кузнецов", "Дмитрий", "d.kuznetsov@example.ru", "8-903-555-12-34"),
              person("Орлова", "Екатерина", "kate.orlova@example.ru", "+79261112233"),
              company("ООО «Ромашка»", "7707083893", "773601001", phone="+7 (495) 765-43-21")]
    orders = [it.shop.place(b, items) for b, items in
              zip(buyers + buyers[:1], [[(MUG, 2), (TEAPOT, 1)], [(THERMOS, 1)], [(SAMOVAR, 1)], [(MUG, 1)]])]
    it.sync()
    before = _portal_counts(it)
    imports_before = len(it.shop.imports())
    assert before["deal"] == len(orders)
    it.reinstall()
    it.portal.clear_log()
    # the integrator looks first: the dry run says how each record would be bound, and would create
    # nothing and write nothing
    code, report = it.cli_json("sync", "--dry-run", "--create")
    assert code == 0, report
    crm = report["read"]["crm"]
    assert crm["review"] == 0 and crm["quarantined"] == 0, crm
    # the deals by the shop orders they name (ORIGINATOR_ID/ORIGIN_ID), their contacts, company and
    # products as the records the deals link to
    assert crm["bound_by"].get("origin", 0) == len(orders), crm
    assert crm["bound_by"].get("link", 0) > 0, crm
    assert all(w["create"] == 0 and w["update"] == 0 for w in report["writes"].values()), report["writes"]
    assert it.portal.writes() == [] and len(it.shop.imports()) == imports_before
    it.sync()
    assert it.dead() == [], [(d["entity_type"], d["last_error"]) for d in it.dead()]
    assert _portal_counts(it) == before, "a re-install created records again"
    assert len(it.shop.imports()) == imports_before, "a re-install wrote to the shop"
    store = it.runtime().store
    for o in orders:
        assert store.find_entity("shop", "order", o["xml_id"]) == store.find_entity(
            "crm", "order", it.deal_of(o)["ID"]), f"order {o['number']} and its deal are one record"
    assert it.portal.writes() == [], f"a re-install wrote to the portal: {it.portal.writes()[:10]}"
