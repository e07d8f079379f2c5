"""S6 CRM <-> 1C: syncd serves the exchange 1C calls (to 1C, syncd is the site). Paid orders go to 1C
with their customer; 1C's shipments come back and move the deal; a customer typed first into 1C goes to
review, never silently into the CRM. The accountant's 1C is the sandbox 1C client running its exchange."""

from __future__ import annotations

from harness import MUG, TEAPOT, Integration, company, money

BUYER = company("ООО «Ромашка»", "7707083893", "773601001", phone="+7 (495) 765-43-21")


def _paid_order_in_1c(it: Integration, **extra: object) -> tuple[dict, object, object]:
    o = it.shop.place(BUYER, [(MUG, 10), (TEAPOT, 2)], pay_system="3", **extra)
    it.sync()
    it.shop.pay(o["id"])                     # paid: the rules send it to 1C
    it.sync()
    onec = it.onec()
    assert onec.run_cycle()["received"] >= 1
    it.sync()
    (doc,) = onec.db.orders.values()
    return o, onec, doc


def test_a_paid_order_goes_to_1c_with_its_company_and_1cs_shipment_moves_the_deal(it1c: Integration) -> None:
    it = it1c
    o, onec, doc = _paid_order_in_1c(it)
    # 1C has the order under the shop's number, with its rows, sum and customer's requisites
    assert doc.number == o["number"] and money(doc.total) == money(o["total"])
    assert sorted((i.name, i.quantity, money(i.price)) for i in doc.items) == [
        ("Кружка керамическая 350 мл", 10, money(490)), ("Чайник заварочный стеклянный 1 л", 2, money(1290))]
    (cp,) = onec.db.counterparties.values()
    assert (cp.name, cp.inn, cp.kpp) == ("ООО «Ромашка»", BUYER["inn"], BUYER["kpp"])
    assert [a.number for a in cp.bank_accounts] == [BUYER["bank_accounts"][0]["account"]]
    assert doc.counterparties and doc.counterparties[0].id == cp.id
    assert it.deal_of(o)["STAGE_ID"] == it.setup.stage("PAID")
    # the warehouse ships it in 1C: the deal moves to "shipped"
    onec.ship(doc.number, "РН-000117")
    onec.run_cycle()
    it.sync()
    assert it.deal_of(o)["STAGE_ID"] == it.setup.stage("SHIPPING")
    # quiet: another exchange receives nothing new, another pass writes nothing
    assert onec.run_cycle()["received"] == 0
    c = it.runtime().sync_once()
    assert (c.created, c.updated, c.pushed) == (0, 0, 0) and it.dead() == []


def test_a_customer_typed_first_into_1c_goes_to_review_never_into_the_crm(it1c: Integration) -> None:
    it = it1c
    _paid_order_in_1c(it)
    onec = it.onec_clients[-1]
    onec.new_counterparty("ООО «Северные ремёсла»", inn="7736050003", kpp="773601001", email="office@sev.example")
    onec.run_cycle()
    it.sync()
    assert [c["TITLE"] for c in it.portal.companies()] == ["ООО «Ромашка»"]
    code, items = it.cli_json("review")
    assert [(r["system"], r["type"]) for r in items] == [("onec", "company")]
    assert "origin" in items[0]["reason"]


def test_a_company_typed_into_1c_without_inn_is_held_as_a_company(it1c: Integration) -> None:
    it = it1c
    _paid_order_in_1c(it)
    onec = it.onec_clients[-1]
    onec.new_counterparty("ООО «Вектор»", email="buh@vektor.example")
    onec.run_cycle()
    it.sync()
    code, items = it.cli_json("review")
    assert [(r["system"], r["type"]) for r in items] == [("onec", "company")]


def test_1c_receives_the_shop_orders_own_id(it1c: Integration) -> None:
    o, _, doc = _paid_order_in_1c(it1c)
    assert doc.id == o["xml_id"], doc.id


def test_the_order_sum_in_1c_includes_delivery(it1c: Integration) -> None:
    o, _, doc = _paid_order_in_1c(it1c, delivery_price=450)
    assert money(doc.total) == money(o["total"])


def test_documents_wait_for_a_1c_that_has_not_connected_apart_from_writes_that_fail(it1c: Integration) -> None:
    """Before the accountant's 1C first connects, its documents are "waiting for 1C" (how many, since
    when, the last exchange: never) in `stats`, `check`, /metrics and the page — not pending writes
    syncd is late with; the first exchange takes them and says when it was."""
    it = it1c
    o = it.shop.place(BUYER, [(MUG, 1)], pay_system="3")
    it.sync()
    it.shop.pay(o["id"])
    it.sync()
    code, st = it.cli_json("stats")
    assert code == 0
    onec = st["integrations"]["onec"]
    waiting = onec["waiting_peer"]
    assert waiting["documents"] >= 1 and waiting["since"] and waiting["last_exchange"] is None, onec
    assert onec["outbox"]["pending"] == 0 and onec["lag_seconds"] == 0.0, onec
    assert st["totals"]["outbox_waiting"] == waiting["documents"]
    assert "waiting_peer" not in st["integrations"]["crm"]
    code, findings = it.cli_json("check")
    (line,) = [f for f in findings if f["name"] == "onec waiting"]
    assert f"{waiting['documents']} documents wait for it since" in line["detail"], line
    assert "last exchange never" in line["detail"], line
    page = it.runtime().stats()
    assert page["integrations"]["onec"]["waiting_peer"]["documents"] == waiting["documents"]

    assert it.onec().run_cycle()["received"] >= 1            # 1C connects and takes them
    it.sync()
    code, st = it.cli_json("stats")
    after = st["integrations"]["onec"]["waiting_peer"]
    assert after["documents"] == 0 and after["last_exchange"], after
