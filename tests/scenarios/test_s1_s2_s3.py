"""S1 shop order -> deal, S2 two-way order <-> deal, S3 deal by phone: the sandbox shop and the
sandbox Bitrix24 over HTTP, a Runtime from a config file like the demo's, the example mappings."""

from __future__ import annotations

from scenario_env import MUG, PERSON, SAMOVAR, TEAPOT, THERMOS, World, company_buyer, money


def test_s1_person_and_company_orders_become_assigned_deals_with_rows_contacts_and_notices(world: World) -> None:
    w = world
    w.portal.ui_add("contact", {"NAME": "Павел", "LAST_NAME": "Соколов", "ASSIGNED_BY_ID": 3,  # known to the CRM
                                "PHONE": [{"VALUE": "+7 (812) 333-44-55", "VALUE_TYPE": "WORK"}]})
    o1 = w.shop.place(PERSON, [(MUG, 2), (TEAPOT, 1)])
    w.sync()
    # the same buyer again: the e-mail in other case, the phone in another spelling
    o2 = w.shop.place(dict(PERSON, email="ivan.petrov@mail.example", phone="+7 495 123 45 67"), [(THERMOS, 1)])
    w.sync()                     # one order a pass: the assignment below depends on the order of arrival
    # a buyer the CRM knows by phone (typed differently) -> that contact, not a new one
    o3 = w.shop.place({"kind": "person", "last_name": "Соколов", "first_name": "Павел",
                       "email": "p.sokolov@example.ru", "phone": "8(812)3334455"}, [(MUG, 1)])
    w.sync()
    o4 = w.shop.place(company_buyer(), [(SAMOVAR, 1)])
    w.sync()

    d1, d2, d3, d4 = (w.deal_of(o) for o in (o1, o2, o3, o4))
    assert len(w.portal.deals()) == 4
    for o, d in ((o1, d1), (o2, d2), (o3, d3), (o4, d4)):
        # bound to the order, with the defaults of rules.toml / bitrix24.toml
        # stamped as the vendor's own integration does: the source system and the order's Ид
        assert d["ORIGINATOR_ID"] == "shop" and d["ORIGIN_ID"] == str(o.get("xml_id") or o["id"])
        assert d["UF_CRM_SHOP_ORDER"] == str(o["number"]) and d["TITLE"] == f"Заказ №{o['number']}"
        assert (d["CATEGORY_ID"], d["STAGE_ID"], d["PROBABILITY"], d["OPENED"]) == ("0", "NEW", "10", "Y")
        assert (d["SOURCE_ID"], d["CURRENCY_ID"]) == ("STORE", "RUB")
        assert money(d["OPPORTUNITY"]) == money(o["total"])
    # the buyer: one contact for o1 and o2, the known contact for o3, no duplicates
    contacts = w.portal.contacts()
    assert len(contacts) == 2
    ivan = next(c for c in contacts if c["LAST_NAME"] == "Петров")
    sokolov = next(c for c in contacts if c["LAST_NAME"] == "Соколов")
    assert d1["CONTACT_ID"] == d2["CONTACT_ID"] == ivan["ID"] and d3["CONTACT_ID"] == sokolov["ID"]
    assert [e["VALUE"].lower() for e in ivan["EMAIL"]] == ["ivan.petrov@mail.example"]
    assert [p["VALUE"] for p in ivan["PHONE"]] == ["8 (495) 123-45-67"]
    # the company buyer: a company with requisites and bank details
    (co,) = w.portal.companies()
    assert d4["COMPANY_ID"] == co["ID"] and co["TITLE"] == "ООО «Ромашка»"
    (rq,) = w.portal.requisites(co["ID"])
    assert (rq["RQ_INN"], rq["RQ_KPP"], rq["RQ_OGRN"]) == ("7707083893", "773601001", "1027700132195")
    (bank,) = w.portal.bank_details(rq["ID"])
    acc = company_buyer()["bank_accounts"][0]
    assert (bank["RQ_BIK"], bank["RQ_ACC_NUM"], bank["RQ_COR_ACC_NUM"]) == (acc["bik"], acc["account"],
                                                                             acc["corr_account"])
    # products: in the deal's rows and in the CRM catalog, once each
    rows = w.portal.rows(d1["ID"])
    assert [(r["PRODUCT_NAME"], money(r["PRICE"]), r["QUANTITY"]) for r in rows] == [
        ("Кружка керамическая 350 мл", money(490), 2), ("Чайник заварочный стеклянный 1 л", money(1290), 1)]
    catalog = {p["NAME"]: p for p in w.portal.products()}
    assert len(catalog) == 4 and {str(r["PRODUCT_ID"]) for r in rows} == {
        catalog["Кружка керамическая 350 мл"]["ID"], catalog["Чайник заварочный стеклянный 1 л"]["ID"]}
    # managers by the chain of rules.toml: o1 -> least loaded of 2, 3, 4 (a tie: the first) = 2;
    # o2 -> Ivan's contact belongs to the webhook user, not a manager -> least loaded = 3;
    # o3 -> a known client -> keep: the contact's manager 3; o4 -> big order -> 4
    assert [d["ASSIGNED_BY_ID"] for d in (d1, d2, d3, d4)] == ["2", "3", "3", "4"]
    # the responsible is told: the deal, its date and the source
    notes = w.portal.notifications()
    assert len(notes) == 4
    n1 = next(n for n in notes if f"Заказ №{o1['number']}" in n["MESSAGE"])
    assert n1["USER_ID"] == 2 and "из shop" in n1["MESSAGE"]
    assert o1["created"][:10].split("-")[::-1] == n1["MESSAGE"].split(" от ")[1][:10].split(".")
    # quiet: one more pass writes nothing anywhere
    w.portal.clear_log()
    uploads = len(w.shop.uploads())
    c = w.rt.sync_once()
    assert (c.created, c.updated, c.planned, c.pushed) == (0, 0, 0, 0)
    assert w.portal.writes() == [] and len(w.shop.uploads()) == uploads


def test_s2_manager_edits_reach_the_shop_payment_and_completion_reach_the_deal(world: World) -> None:
    w = world
    o = w.shop.place(PERSON, [(MUG, 2), (TEAPOT, 1)])
    w.sync()
    d = w.deal_of(o)
    rows = w.portal.rows(d["ID"])
    # the manager changes a row's quantity and price in the portal
    new_rows = [{"PRODUCT_ID": r["PRODUCT_ID"], "PRODUCT_NAME": r["PRODUCT_NAME"], "PRICE": r["PRICE"],
                 "QUANTITY": r["QUANTITY"]} for r in rows]
    new_rows[0].update(QUANTITY=5, PRICE=450)
    w.portal.ui_edit("deal", d["ID"], {"PRODUCT_ROWS": new_rows})
    w.sync()
    so = w.shop.order(o["id"])
    by_name = {i["name"]: i for i in so["items"]}
    assert (money(by_name["Кружка керамическая 350 мл"]["price"]), float(by_name["Кружка керамическая 350 мл"]["quantity"])) == (money(450), 5.0)
    assert money(so["total"]) == money(5 * 450 + 1290)
    assert money(w.portal.deal(d["ID"])["OPPORTUNITY"]) == money(so["total"])
    # the customer pays in the shop: the deal moves to "invoice paid"
    w.shop.pay(o["id"])
    w.sync()
    d = w.portal.deal(d["ID"])
    assert d["STAGE_ID"] == "PREPAYMENT_INVOICE"
    assert money(d["OPPORTUNITY"]) == money(w.shop.order(o["id"])["total"])
    # the manager wins the deal: the shop order is completed
    w.portal.ui_edit("deal", d["ID"], {"STAGE_ID": "WON"})
    w.sync()
    assert w.shop.order(o["id"])["status"] == "F"
    assert money(w.portal.deal(d["ID"])["OPPORTUNITY"]) == money(w.shop.order(o["id"])["total"])
    # the other way: a second order completed in the shop -> its deal is won
    o2 = w.shop.place(PERSON, [(THERMOS, 1)])
    w.sync()
    w.shop.status(o2["id"], "F")
    w.sync()
    assert w.deal_of(o2)["STAGE_ID"] == "WON"
    # no echo: after quiescence one more pass writes nothing to the portal nor the shop
    w.portal.clear_log()
    uploads = len(w.shop.uploads())
    c = w.rt.sync_once()
    assert (c.created, c.updated, c.planned, c.pushed) == (0, 0, 0, 0)
    assert w.portal.writes() == [] and len(w.shop.uploads()) == uploads


def test_s3_deal_by_phone_with_the_flag_becomes_a_shop_order_without_it_stays_in_the_crm(world: World) -> None:
    w = world
    w.sync()
    cid = w.portal.ui_add("contact", {"NAME": "Ольга", "LAST_NAME": "Белова",
                                      "PHONE": [{"VALUE": "+7 903 222-33-44", "VALUE_TYPE": "MOBILE"}],
                                      "EMAIL": [{"VALUE": "o.belova@example.ru", "VALUE_TYPE": "WORK"}]})
    rows = [{"PRODUCT_NAME": "Кружка керамическая 350 мл", "PRICE": 490, "QUANTITY": 3}]
    flagged = w.portal.ui_add("deal", {"TITLE": "Заказ по телефону", "CONTACT_ID": cid, "UF_CRM_FROM_SHOP": "Y",
                                       "STAGE_ID": "NEW", "PRODUCT_ROWS": rows})
    plain = w.portal.ui_add("deal", {"TITLE": "Консультация", "CONTACT_ID": cid, "STAGE_ID": "NEW",
                                     "OPPORTUNITY": 5000})
    before = {x["id"] for x in w.shop.orders()}
    w.sync()
    new = [x for x in w.shop.orders() if x["id"] not in before]
    assert len(new) == 1, new
    so = new[0]
    assert [(i["name"], float(i["quantity"]), money(i["price"])) for i in so["items"]] == [
        ("Кружка керамическая 350 мл", 3.0, money(490))]
    assert money(so["total"]) == money(w.portal.deal(flagged)["OPPORTUNITY"]) == money(1470)
    buyer = w.shop.user(so["user_id"])
    assert buyer["email"] == "o.belova@example.ru"
    assert w.portal.deal(plain)["UF_CRM_SHOP_ORDER"] in (None, "")
    # then it behaves like S2: paid in the shop -> invoice paid
    w.shop.pay(so["id"])
    w.sync()
    assert w.portal.deal(flagged)["STAGE_ID"] == "PREPAYMENT_INVOICE"
    assert len(w.portal.deals()) == 2 and len(w.shop.orders()) == 1
