"""S2 two-way order <-> deal on the integrator's own pipeline: a manager's edits reach the shop, the
shop's payments and statuses move the deal, the totals agree both ways."""

from __future__ import annotations

from harness import MUG, TEAPOT, THERMOS, Integration, money, person

BUYER = person("Кузнецов", "Дмитрий", "d.kuznetsov@example.ru", "8-903-555-12-34")


def _rows(it: Integration, deal_id: str) -> list[dict]:
    """The deal's rows as a manager re-saves them in the deal card."""
    return [{"PRODUCT_ID": r["PRODUCT_ID"], "PRODUCT_NAME": r["PRODUCT_NAME"], "PRICE": r["PRICE"],
             "QUANTITY": r["QUANTITY"]} for r in it.portal.rows(deal_id)]


def test_a_managers_stage_moves_reach_the_shop_status(it: Integration) -> None:
    s = it.setup
    won = it.shop.place(BUYER, [(MUG, 2)])
    lost = it.shop.place(BUYER, [(TEAPOT, 1)])
    it.sync()
    # the manager wins one deal and loses the other in the pipeline's own stages
    it.portal.ui_edit("deal", it.deal_of(won)["ID"], {"STAGE_ID": s.stage("WON")})
    it.portal.ui_edit("deal", it.deal_of(lost)["ID"], {"STAGE_ID": s.stage("LOSE")})
    it.sync()
    assert it.shop.order(won["id"])["status"] == "F"
    lost_now = it.shop.order(lost["id"])
    assert lost_now["status"] == "C" and lost_now["canceled"]
    # and the deals stay where the manager put them
    assert it.deal_of(won)["STAGE_ID"] == s.stage("WON") and it.deal_of(lost)["STAGE_ID"] == s.stage("LOSE")
    # no echo: a further pass writes nothing to either side
    uploads = len(it.shop.imports())
    c = it.runtime().sync_once()
    assert (c.created, c.updated, c.planned, c.pushed) == (0, 0, 0, 0) and len(it.shop.imports()) == uploads


def test_a_payment_in_the_shop_moves_the_deal_and_completion_wins_it(it: Integration) -> None:
    s = it.setup
    o = it.shop.place(BUYER, [(MUG, 2), (TEAPOT, 1)])
    part = it.shop.place(BUYER, [(THERMOS, 2)])
    it.sync()
    it.shop.pay(o["id"])                                     # paid in full
    it.shop.pay(part["id"], money(part["total"]) / 2)        # half paid
    it.sync()
    assert it.deal_of(o)["STAGE_ID"] == s.stage("PAID")
    assert it.deal_of(part)["STAGE_ID"] == s.stage("NEW")
    it.shop.status(o["id"], "F")                             # the shop completes the order
    it.sync()
    assert it.deal_of(o)["STAGE_ID"] == s.stage("WON")
    assert it.dead() == []


def test_a_managers_row_edit_reaches_the_shop_and_the_totals_agree(it: Integration) -> None:
    o = it.shop.place(BUYER, [(MUG, 2), (TEAPOT, 1)])
    it.sync()
    d = it.deal_of(o)
    rows = _rows(it, d["ID"])
    rows[0].update(QUANTITY=5, PRICE=450)                    # a discount agreed on the phone
    it.portal.ui_edit("deal", d["ID"], {"PRODUCT_ROWS": rows, "COMMENTS": "Скидка 40 ₽ на кружки"})
    it.sync()
    so = it.shop.order(o["id"])
    assert sorted((i["name"], money(i["price"]), float(i["quantity"])) for i in so["items"]) == [
        ("Кружка керамическая 350 мл", money(450), 5.0), ("Чайник заварочный стеклянный 1 л", money(1290), 1.0)]
    assert money(so["total"]) == money(5 * 450 + 1290) == money(it.portal.deal(d["ID"])["OPPORTUNITY"])
    assert so["comment"] == "Скидка 40 ₽ на кружки"


def test_with_delivery_the_totals_agree_after_a_row_edit(it: Integration) -> None:
    o = it.shop.place(BUYER, [(MUG, 2), (TEAPOT, 1)], delivery_price=300)
    it.sync()
    d = it.deal_of(o)
    rows = [r for r in _rows(it, d["ID"]) if "Доставка" not in r["PRODUCT_NAME"]]
    rows[0].update(QUANTITY=3)
    delivery = [r for r in _rows(it, d["ID"]) if "Доставка" in r["PRODUCT_NAME"]]
    it.portal.ui_edit("deal", d["ID"], {"PRODUCT_ROWS": rows + delivery})
    it.sync()
    so = it.shop.order(o["id"])
    assert money(so["delivery_price"]) == money(300)
    assert money(so["total"]) == money(3 * 490 + 1290 + 300)
    assert money(it.portal.deal(d["ID"])["OPPORTUNITY"]) == money(so["total"])
