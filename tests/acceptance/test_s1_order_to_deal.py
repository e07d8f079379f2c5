"""S1 shop order -> deal, as an integrator meets it: a fresh portal with its own managers, pipeline and
user fields, often an existing client base, the example mappings adapted (harness.py)."""

from __future__ import annotations

from harness import (
    FROM_SITE_FIELD,
    MUG,
    ORDER_FIELD,
    SAMOVAR,
    TEAPOT,
    THERMOS,
    Integration,
    company,
    digits,
    money,
    person,
)


def test_orders_of_new_buyers_become_deals_in_the_shop_pipeline_with_rows_and_managers(it: Integration) -> None:
    s = it.setup
    o1 = it.shop.place(person("Кузнецов", "Дмитрий", "d.kuznetsov@example.ru", "8-903-555-12-34"),
                       [(MUG, 2), (TEAPOT, 1)])
    it.sync()
    o2 = it.shop.place(person("Орлова", "Екатерина", "kate.orlova@example.ru", "+79261112233"), [(THERMOS, 1)])
    it.sync()
    o3 = it.shop.place(company("ООО «Ромашка»", "7707083893", "773601001", phone="+7 (495) 765-43-21"),
                       [(SAMOVAR, 1)])
    it.sync()

    deals = it.portal.deals()
    assert len(deals) == 3
    d1, d2, d3 = (it.deal_of(o) for o in (o1, o2, o3))
    for o, d in ((o1, d1), (o2, d2), (o3, d3)):
        # in the integrator's pipeline, at its first stage, with the order number in its own field
        assert (d["CATEGORY_ID"], d["STAGE_ID"]) == (str(s.shop_pipeline), s.stage("NEW"))
        assert d[ORDER_FIELD] == o["number"] and d["TITLE"] == f"Заказ №{o['number']}"
        assert (d["OPENED"], d["SOURCE_ID"], d["CURRENCY_ID"]) == ("Y", "STORE", "RUB")
        assert money(d["OPPORTUNITY"]) == money(o["total"])
        assert d[FROM_SITE_FIELD] in (None, "", "N", False)        # syncd does not tick "from the site"
    # the rows: products, prices, quantities as ordered; each product once in the CRM catalogue
    rows = it.portal.rows(d1["ID"])
    assert [(r["PRODUCT_NAME"], money(r["PRICE"]), float(r["QUANTITY"])) for r in rows] == [
        ("Кружка керамическая 350 мл", money(490), 2.0), ("Чайник заварочный стеклянный 1 л", money(1290), 1.0)]
    catalogue = it.portal.rest("crm.product.list", {"select": ["ID", "NAME", "PRICE"]})
    assert sorted(p["NAME"] for p in catalogue) == sorted(
        ["Кружка керамическая 350 мл", "Чайник заварочный стеклянный 1 л", "Термос стальной 0,75 л",
         "Самовар электрический 5 л"])
    # the buyers: a contact each with the phone and e-mail they typed; the company with its requisites
    kuz = it.portal.contact(d1["CONTACT_ID"])
    assert (kuz["LAST_NAME"], kuz["NAME"]) == ("Кузнецов", "Дмитрий")
    assert [digits(p["VALUE"]) for p in kuz["PHONE"]] == ["9035551234"]
    assert [e["VALUE"] for e in kuz["EMAIL"]] == ["d.kuznetsov@example.ru"]
    assert len(it.portal.contacts()) == 2
    (co,) = it.portal.companies()
    assert d3["COMPANY_ID"] == co["ID"] and co["TITLE"] == "ООО «Ромашка»"
    (rq,) = it.portal.requisites(co["ID"])
    assert (rq["RQ_INN"], rq["RQ_KPP"]) == ("7707083893", "773601001")
    # managers by the adapted rules: the big order to the head of sales, the others to the least
    # loaded of the sales team (a tie: the first of the group), never the accountant or the webhook user
    eng1, eng2, _ = s.managers
    assert [d["ASSIGNED_BY_ID"] for d in (d1, d2, d3)] == [str(eng1), str(eng2), str(s.senior)]
    # each responsible is told about the new deal
    for d in (d1, d2, d3):
        notes = it.portal.notifications(d["ASSIGNED_BY_ID"])
        assert [n for n in notes if d["TITLE"] in n["MESSAGE"]], notes
    # quiet afterwards: one more pass writes nothing
    c = it.runtime().sync_once()
    assert (c.created, c.updated, c.planned, c.pushed) == (0, 0, 0, 0)
    assert it.dead() == []


def test_the_deal_carries_the_orders_own_key(it: Integration) -> None:
    o = it.shop.place(person("Кузнецов", "Дмитрий", "d.kuznetsov@example.ru"), [(MUG, 1)])
    it.sync()
    d = it.deal_of(o)
    assert d["ORIGIN_ID"] == o["xml_id"], d["ORIGIN_ID"]
    assert d["ORIGINATOR_ID"] and "syncd" not in d["ORIGINATOR_ID"]


def test_the_deal_sum_includes_delivery(it: Integration) -> None:
    o = it.shop.place(person("Кузнецов", "Дмитрий", "d.kuznetsov@example.ru"), [(MUG, 2), (TEAPOT, 1)],
                      delivery_price=300)
    assert money(o["total"]) == money(2 * 490 + 1290 + 300)
    it.sync()
    d = it.deal_of(o)
    assert money(d["OPPORTUNITY"]) == money(o["total"])


def test_a_price_agreed_for_one_order_leaves_the_catalogue_price(it: Integration) -> None:
    it.shop.place(person("Кузнецов", "Дмитрий", "d.kuznetsov@example.ru"), [(MUG, 1)])
    it.sync()
    # the shop admin gives one customer the mug at 350 (a line price in that order only)
    it.shop.call("POST", "/orders", {"user": person("Орлова", "Екатерина", "kate.orlova@example.ru"),
                                     "items": [{"product_id": MUG, "quantity": 10, "price": "350"}]})
    it.sync()
    (mug,) = [p for p in it.portal.rest("crm.product.list", {"select": ["NAME", "PRICE"]})
              if p["NAME"] == "Кружка керамическая 350 мл"]
    assert money(mug["PRICE"]) == money(490)


def _client_base(it: Integration) -> dict[str, int]:
    """The clients the portal already has (made by the managers over the years), phones typed anyhow."""
    eng1, eng2, third = it.setup.managers
    return {
        "petrov": it.crm_contact("Иван", "Петров", phone="8 (495) 123-45-67", manager=eng2),
        "smirnova": it.crm_contact("Анна", "Смирнова", phone="+7 916 1234567", email="anna.smirnova@yandex.example",
                                   manager=third),
        "sokolov": it.crm_contact("Павел", "Соколов", phone="78123334455", manager=eng1),
        "romashka": it.crm_company("ООО «Ромашка»", inn="7707083893", kpp="773601001", phone="+7 (495) 765-43-21",
                                   manager=third),
    }


def test_a_buyer_is_bound_to_the_existing_contact_by_phone_in_any_spelling_or_email(it: Integration) -> None:
    base = _client_base(it)
    it.sync()                                   # syncd installed over the client base
    contacts_before = len(it.portal.contacts())
    # the clients register in the shop (each a new shop account), typing their phones their own way
    o1 = it.shop.place(it.shop.register(person("Петров", "Иван", "ivan.petrov@mail.example", "+7 495 1234567")),
                       [(MUG, 1)])
    o2 = it.shop.place(it.shop.register(person("Смирнова", "Анна", "Anna.Smirnova@Yandex.example")), [(TEAPOT, 1)])
    o3 = it.shop.place(it.shop.register(person("Соколов", "Павел", "p.sokolov@example.ru", "8(812)333-44-55")),
                       [(THERMOS, 1)])
    it.sync()
    d1, d2, d3 = (it.deal_of(o) for o in (o1, o2, o3))
    assert [d["CONTACT_ID"] for d in (d1, d2, d3)] == [str(base["petrov"]), str(base["smirnova"]), str(base["sokolov"])]
    assert len(it.portal.contacts()) == contacts_before            # nobody created twice
    petrov = it.portal.contact(base["petrov"])
    assert [e["VALUE"] for e in petrov.get("EMAIL") or []] == ["ivan.petrov@mail.example"]   # gained the e-mail
    assert [p["VALUE"] for p in petrov["PHONE"]] == ["8 (495) 123-45-67"]                    # kept its phone
    # a known client's deal goes to the client's own manager ("known client" in the rules)
    assert d1["ASSIGNED_BY_ID"] == petrov["ASSIGNED_BY_ID"]
    assert it.runtime().store.list_review() == []


def test_a_company_buyer_is_bound_to_the_existing_company_by_inn_and_kpp(it: Integration) -> None:
    base = _client_base(it)
    it.sync()
    buyer = it.shop.register(company("ООО «Ромашка»", "7707083893", "773601001", email="zakaz@romashka.example"))
    o = it.shop.place(buyer, [(SAMOVAR, 1)])
    it.sync()
    d = it.deal_of(o)
    assert d["COMPANY_ID"] == str(base["romashka"])
    assert [c["ID"] for c in it.portal.companies()] == [str(base["romashka"])]
    assert it.runtime().store.list_review() == []


def test_the_client_base_is_not_pushed_into_the_shop_as_new_users(it: Integration) -> None:
    _client_base(it)
    before = len(it.shop.users())
    it.sync()
    assert len(it.shop.users()) == before, [u["login"] for u in it.shop.users()]


def test_a_company_without_inn_stays_a_company(it: Integration) -> None:
    o = it.shop.place(company("ООО «Вектор»", "", "", email="buh@vektor.example", full_name="",
                              legal_address="", contact_person="", bank_accounts=[]), [(MUG, 10)])
    it.sync()
    d = it.deal_of(o)
    (co,) = it.portal.companies()
    assert co["TITLE"] == "ООО «Вектор»" and d["COMPANY_ID"] == co["ID"]
    assert not [c for c in it.portal.contacts() if "Вектор" in f"{c['NAME']} {c['LAST_NAME']}"]


def test_deals_made_before_syncd_by_the_shops_own_integration_are_adopted(it: Integration) -> None:
    # the shop's earlier CRM integration made deals for its orders: the order's Ид in ORIGIN_ID, its
    # number in the integrator's order field
    buyer = person("Волков", "Дмитрий", "d.volkov@example.ru", "+7 (912) 345-67-01")
    o1 = it.shop.place(buyer, [(MUG, 1)])
    o2 = it.shop.place(buyer, [(TEAPOT, 2)])
    cid = it.crm_contact("Дмитрий", "Волков", phone="+7 (912) 345-67-01", email="d.volkov@example.ru")
    old = {}
    for o in (o1, o2):
        old[o["number"]] = int(it.portal.rest("crm.deal.add", {"fields": {
            "TITLE": f"Заказ №{o['number']} с сайта", "CATEGORY_ID": it.setup.shop_pipeline,
            "STAGE_ID": it.setup.stage("NEW"), "CONTACT_ID": cid, "ORIGINATOR_ID": "shop", "ORIGIN_ID": o["xml_id"],
            ORDER_FIELD: o["number"], "OPPORTUNITY": o["total"], "CURRENCY_ID": "RUB"}}))
    it.sync()
    deals = it.portal.deals()
    assert sorted(int(d["ID"]) for d in deals) == sorted(old.values()), [(d["ID"], d["TITLE"]) for d in deals]
    # bound: the shop's later payment moves the adopted deal
    it.shop.pay(o1["id"])
    it.sync()
    assert it.portal.deal(old[o1["number"]])["STAGE_ID"] == it.setup.stage("PAID")
