"""S3 deal by phone: a manager takes an order on the phone and makes the deal in the CRM; with the
integrator's "from the site" flag it becomes a shop order, without it it stays in the CRM."""

from __future__ import annotations

import pytest
from harness import FROM_SITE_FIELD, ORDER_FIELD, Integration, digits, money


def _phone_order(it: Integration, *, flagged: bool = True) -> tuple[int, int]:
    """The manager finds (or types) the client and makes the deal with its rows."""
    eng1 = it.setup.managers[0]
    cid = it.portal.ui_add("contact", {"NAME": "Ольга", "LAST_NAME": "Белова", "ASSIGNED_BY_ID": eng1,
                                       "PHONE": [{"VALUE": "+7 903 222-33-44", "VALUE_TYPE": "MOBILE"}],
                                       "EMAIL": [{"VALUE": "o.belova@example.ru", "VALUE_TYPE": "WORK"}]},
                           user_id=eng1)
    fields = {"TITLE": "Заказ по телефону: Белова", "CONTACT_ID": cid, "CATEGORY_ID": it.setup.shop_pipeline,
              "STAGE_ID": it.setup.stage("NEW"), "ASSIGNED_BY_ID": eng1,
              "PRODUCT_ROWS": [{"PRODUCT_NAME": "Кружка керамическая 350 мл", "PRICE": 490, "QUANTITY": 3},
                               {"PRODUCT_NAME": "Термос стальной 0,75 л", "PRICE": 1890, "QUANTITY": 1}]}
    if flagged:
        fields[FROM_SITE_FIELD] = "Y"
    return cid, it.portal.ui_add("deal", fields, user_id=eng1)


def test_a_deal_with_the_from_site_flag_becomes_a_shop_order_and_then_follows_s2(it: Integration) -> None:
    it.sync()
    _, deal = _phone_order(it)
    it.portal.ui_add("deal", {"TITLE": "Консультация по самовару", "CATEGORY_ID": it.setup.shop_pipeline,
                              "STAGE_ID": it.setup.stage("NEW"), "OPPORTUNITY": 5000})
    it.sync()
    (so,) = it.shop.orders()                          # one order: the flagged deal's, not the consultation's
    assert sorted((i["name"], float(i["quantity"]), money(i["price"])) for i in so["items"]) == [
        ("Кружка керамическая 350 мл", 3.0, money(490)), ("Термос стальной 0,75 л", 1.0, money(1890))]
    assert money(so["total"]) == money(3 * 490 + 1890) == money(it.portal.deal(deal)["OPPORTUNITY"])
    buyer = it.shop.user(so["user_id"])
    assert (buyer["last_name"], buyer["email"], digits(buyer["phone"])) == ("Белова", "o.belova@example.ru",
                                                                             "9032223344")
    # from now on it is an order like any other: paid in the shop -> the deal moves, the manager keeps it
    it.shop.pay(so["id"])
    it.sync()
    d = it.portal.deal(deal)
    assert d["STAGE_ID"] == it.setup.stage("PAID") and d["ASSIGNED_BY_ID"] == str(it.setup.managers[0])
    assert len(it.portal.deals()) == 2 and len(it.shop.orders()) == 1 and it.dead() == []


def test_without_the_flag_the_deal_stays_in_the_crm(it: Integration) -> None:
    it.sync()
    _, deal = _phone_order(it, flagged=False)
    it.sync()
    assert it.shop.orders() == []
    assert it.portal.deal(deal)[ORDER_FIELD] in (None, "")


def test_the_deal_by_phone_carries_its_shop_orders_key_at_once(it: Integration) -> None:
    """Issue 21 #3: as soon as the shop has the order, the deal names it (ORIGINATOR_ID/ORIGIN_ID) as the
    shop's own integration would — a re-install or a second integration finds the pair by that key."""
    it.sync()
    _, deal = _phone_order(it)
    it.sync()
    (so,) = it.shop.orders()
    d = it.portal.deal(deal)
    assert so["xml_id"] and (d["ORIGINATOR_ID"], d["ORIGIN_ID"]) == ("shop", so["xml_id"])
    assert [x["ID"] for x in it.portal.deals(ORIGINATOR_ID="shop", ORIGIN_ID=so["xml_id"])] == [str(deal)]
    it.sync()                                         # told once: reading it back writes nothing more
    assert it.runtime().store.list_outbox("pending") == [] and it.dead() == []


@pytest.mark.xfail(strict=True, reason="issue 12: the site numbers the order it makes from the upload and, like "
                                       "1C-Bitrix, does not export an order changed only by an import: the "
                                       "exchange gives syncd no way to read the number before the order changes "
                                       "on the site (the next test: it arrives with that change)")
def test_the_deal_by_phone_learns_its_shop_order_number_at_once(it: Integration) -> None:
    it.sync()
    _, deal = _phone_order(it)
    it.sync()
    (so,) = it.shop.orders()
    assert it.portal.deal(deal)[ORDER_FIELD] == so["number"]


def test_the_deal_by_phone_learns_its_shop_order_number_with_the_orders_first_change(it: Integration) -> None:
    it.sync()
    _, deal = _phone_order(it)
    it.sync()
    (so,) = it.shop.orders()
    # until the shop reports the number, the trace says what the deal waits for (issue 21 #3)
    code, story = it.cli_json("trace", f"crm:deal:{deal}")
    assert code == 0
    waits = [e for e in story["records"][0]["events"] if e["kind"] == "waiting"]
    assert [e["system"] for e in waits] == ["shop"] and "order.number" in waits[0]["details"]["fields"], waits
    it.shop.pay(so["id"])                             # the buyer pays on the site: the order is exported
    it.sync()
    assert it.portal.deal(deal)[ORDER_FIELD] == so["number"]
    _, story = it.cli_json("trace", f"crm:deal:{deal}")
    assert not [e for e in story["records"][0]["events"] if e["kind"] == "waiting"]
