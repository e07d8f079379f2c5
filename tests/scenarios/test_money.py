"""Issue 12, money: the deal's sum is the order's total with delivery; a manager's row edit keeps
the shop's total and the deal's sum in agreement; an order line's price never becomes the
catalog's price of a product the CRM knows."""

from __future__ import annotations

from decimal import Decimal

from scenario_env import MUG, PERSON, TEAPOT, World, money


def test_deal_sum_includes_delivery_and_stays_equal_to_the_order_total(world: World) -> None:
    w = world
    o = w.shop.place(PERSON, [(MUG, 2), (TEAPOT, 1)], delivery_price=300)
    w.sync()
    order = w.shop.order(o["id"])
    total = money(order["total"])
    assert total == Decimal("2570.00")                # 2 × 490 + 1290 + 300 delivery
    d = w.deal_of(o)
    rows = w.portal.rows(d["ID"])
    assert money(d["OPPORTUNITY"]) == total, "the deal's sum lost the delivery"
    assert [(r["PRODUCT_NAME"], money(r["PRICE"])) for r in rows if r["PRODUCT_NAME"] == "Доставка"] == \
        [("Доставка", Decimal("300.00"))]
    # a manager changes a quantity in the deal: the shop's order follows, and the totals agree
    goods = [r for r in rows if r["PRODUCT_NAME"] != "Доставка"]
    mug = next(r for r in goods if r["PRODUCT_NAME"].startswith("Кружка"))
    new_rows = [{"PRODUCT_ID": r["PRODUCT_ID"], "PRODUCT_NAME": r["PRODUCT_NAME"], "PRICE": r["PRICE"],
                 "QUANTITY": 5 if r is mug else r["QUANTITY"]} for r in goods]
    new_rows.append({"PRODUCT_NAME": "Доставка", "PRICE": 300, "QUANTITY": 1})
    w.portal.ui_edit("deal", d["ID"], {"PRODUCT_ROWS": new_rows})
    w.sync()
    order = w.shop.order(o["id"])
    d = w.portal.deal(d["ID"])
    assert money(order["total"]) == Decimal("4040.00")      # 5 × 490 + 1290 + 300
    assert money(d["OPPORTUNITY"]) == money(order["total"])


def test_an_order_lines_price_never_changes_the_catalog_price(world: World) -> None:
    w = world
    o1 = w.shop.place(PERSON, [(MUG, 1)])
    w.sync()
    (p,) = [x for x in w.portal.products() if x["NAME"].startswith("Кружка")]
    assert money(p["PRICE"]) == Decimal("490.00")
    # a later order sells the mug at a manager's price
    o2 = w.shop._j("POST", "/orders", {"user": PERSON, "items": [{"product_id": MUG, "quantity": 1,
                                                                  "price": "390"}]})
    w.sync()
    (p,) = [x for x in w.portal.products() if x["NAME"].startswith("Кружка")]
    assert money(p["PRICE"]) == Decimal("490.00")
    rows = w.portal.rows(w.deal_of(o2)["ID"])
    assert [money(r["PRICE"]) for r in rows if r["PRODUCT_NAME"].startswith("Кружка")] == [Decimal("390.00")]
    assert o1["id"] != o2["id"]
