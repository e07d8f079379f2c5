"""S8 pipeline rules on the integrator's pipelines: facts move the stage, timers and repeat-sales tasks
fire once with time moved on (the portal's clock and the rules' `now`), never by sleeping."""

from __future__ import annotations

import datetime as dt

from harness import MUG, SAMOVAR, TEAPOT, THERMOS, Integration, company, money, person

from syncd.store import utcnow

BUYER = person("Кузнецов", "Дмитрий", "d.kuznetsov@example.ru", "8-903-555-12-34")
DAY = 86400


def test_payment_ready_to_ship_shipped_delivered_completed_move_the_stage(it: Integration) -> None:
    s = it.setup
    o = it.shop.place(BUYER, [(MUG, 2)])
    half = it.shop.place(BUYER, [(TEAPOT, 2)])
    it.sync()
    seen = []
    for step in ("pay", "G", "S", "D", "F"):
        if step == "pay":
            it.shop.pay(o["id"])                         # 100 % -> "invoice paid"
        else:
            it.shop.status(o["id"], step)
        it.sync()
        seen.append(it.deal_of(o)["STAGE_ID"])
    assert seen == [s.stage("PAID"), s.stage("SHIPPING"), s.stage("SHIPPING"), s.stage("DELIVERED"), s.stage("WON")]
    it.shop.pay(half["id"], money(half["total"]) / 2)    # half paid: not "invoice paid"
    it.sync()
    assert it.deal_of(half)["STAGE_ID"] == s.stage("NEW")


def test_a_wholesale_deal_waiting_15_days_notifies_its_manager_once(it: Integration) -> None:
    s = it.setup
    company_id = it.crm_company("ООО «Северные ремёсла»", inn="7728168971", manager=s.senior)
    deal = it.portal.ui_add("deal", {"TITLE": "Северные ремёсла: опт", "COMPANY_ID": company_id,
                                     "CATEGORY_ID": s.wholesale_pipeline, "STAGE_ID": s.stage("READY", s.wholesale_pipeline),
                                     "ASSIGNED_BY_ID": s.senior}, user_id=s.senior)
    start = utcnow()
    it.sync(now=start)

    def waiting_notices() -> list[dict]:
        return [n for n in it.portal.notifications(s.senior) if "ждёт первого заказа" in n["MESSAGE"]]

    it.portal.clock(advance=13 * DAY)
    it.sync(now=start + dt.timedelta(days=13))
    assert waiting_notices() == []
    it.portal.clock(advance=2 * DAY)                     # 15 days in the stage
    it.sync(now=start + dt.timedelta(days=15))
    (note,) = waiting_notices()
    assert "Северные ремёсла: опт" in note["MESSAGE"]
    # on the portal's clock (its DATE has whole seconds: allow the fraction of `start`)
    assert dt.datetime.fromisoformat(note["DATE"]) - start.replace(microsecond=0) >= dt.timedelta(days=15)
    it.sync(now=start + dt.timedelta(days=16))           # once per stage entry
    assert len(waiting_notices()) == 1
    assert it.portal.deal(deal)["STAGE_ID"] == s.stage("READY", s.wholesale_pipeline)


def test_a_deal_already_waiting_15_days_when_syncd_starts_notifies_at_the_first_tick(it: Integration) -> None:
    s = it.setup
    it.portal.clock(advance=-15 * DAY)                   # the manager put it there 15 days ago
    it.portal.ui_add("deal", {"TITLE": "Вектор: опт", "CATEGORY_ID": s.wholesale_pipeline,
                              "STAGE_ID": s.stage("READY", s.wholesale_pipeline), "ASSIGNED_BY_ID": s.senior},
                     user_id=s.senior)
    it.portal.clock(offset=0)
    it.sync()
    assert [n for n in it.portal.notifications(s.senior) if "Вектор: опт" in n["MESSAGE"]]


def test_an_unpaid_order_gets_a_call_task_after_24_hours(it: Integration) -> None:
    o = it.shop.place(BUYER, [(THERMOS, 1)])
    paid = it.shop.place(BUYER, [(MUG, 1)])
    it.sync()
    it.shop.pay(paid["id"])
    it.sync()
    start = utcnow()
    it.sync(now=start + dt.timedelta(hours=23))
    assert [t for t in it.portal.tasks() if "не оплачен" in t["title"]] == []
    it.sync(now=start + dt.timedelta(hours=25))
    (task,) = [t for t in it.portal.tasks() if "не оплачен" in t["title"]]
    assert o["number"] in task["title"] and str(task["responsibleId"]) == it.deal_of(o)["ASSIGNED_BY_ID"]
    assert f"D_{it.deal_of(o)['ID']}" in (task.get("ufCrmTask") or [])


def test_a_client_with_one_won_deal_gets_one_repeat_order_task(it: Integration) -> None:
    o = it.shop.place(BUYER, [(THERMOS, 1)])
    it.sync()
    it.shop.pay(o["id"])
    it.shop.status(o["id"], "F")
    it.sync()
    d = it.deal_of(o)
    assert d["STAGE_ID"] == it.setup.stage("WON")
    later = utcnow() + dt.timedelta(days=31)
    it.portal.clock(advance=31 * DAY)
    it.sync(now=later)
    repeat = [t for t in it.portal.tasks() if "повторный заказ" in t["title"]]
    assert len(repeat) == 1 and str(repeat[0]["responsibleId"]) == d["ASSIGNED_BY_ID"]
    it.sync(now=later + dt.timedelta(days=1))
    assert len([t for t in it.portal.tasks() if "повторный заказ" in t["title"]]) == 1


def test_a_companys_first_order_closes_its_wholesale_deal(it: Integration) -> None:
    s = it.setup
    buyer = company("ООО «Ромашка»", "7707083893", "773601001", email="zakaz@romashka.example")
    cid = it.crm_company("Ромашка", inn=buyer["inn"], kpp=buyer["kpp"], manager=s.senior)
    lead = it.portal.ui_add("deal", {"TITLE": "Ромашка: оптовая заявка", "COMPANY_ID": cid,
                                     "CATEGORY_ID": s.wholesale_pipeline,
                                     "STAGE_ID": s.stage("READY", s.wholesale_pipeline)}, user_id=s.senior)
    it.sync()
    o = it.shop.place(it.shop.register(buyer), [(SAMOVAR, 1)])
    it.sync(now=utcnow() + dt.timedelta(minutes=2))
    d = it.deal_of(o)
    assert d["COMPANY_ID"] == str(cid) and d["CATEGORY_ID"] == str(s.shop_pipeline)
    assert it.portal.deal(lead)["STAGE_ID"] == s.stage("WON", s.wholesale_pipeline)
    assert len(it.portal.companies()) == 1
