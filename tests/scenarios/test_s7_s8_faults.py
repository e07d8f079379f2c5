"""S7 requisites (shop <-> CRM side), S8 pipeline rules, and faults, end to end against the sandbox
shop and the sandbox Bitrix24 (see scenario_env)."""

from __future__ import annotations

import datetime as dt
import random

from scenario_env import MUG, PERSON, TEAPOT, THERMOS, World, company_buyer, money

from syncd.keys.generate import make_account
from syncd.store import utcnow


def test_s7_requisites_both_ways_and_an_invalid_inn_is_quarantined(world: World) -> None:
    w = world
    o = w.shop.place(company_buyer(), [(MUG, 10)])
    w.sync()
    (co,) = w.portal.companies()
    (rq,) = w.portal.requisites(co["ID"])
    uid = o["user_id"]
    # the buyer edits the requisites in the shop's personal account: a new КПП -> the CRM requisite
    w.shop.edit_user(uid, kpp="773101001", ogrn="1027700132195")
    w.sync()
    (rq,) = w.portal.requisites(co["ID"])
    assert rq["RQ_KPP"] == "773101001"
    # a manager edits the requisite in the CRM: КПП and the bank account -> the shop user
    w.portal.ui_edit("requisite", rq["ID"], {"RQ_KPP": "770801001"})
    (bank,) = w.portal.bank_details(rq["ID"])
    # a typo in the account (its key does not match the БИК): the CRM record is quarantined with
    # the reason, nothing half-applied reaches the shop
    w.portal.ui_edit("bankdetail", bank["ID"], {"RQ_ACC_NUM": "40702810900000000001"})
    w.sync()
    assert w.shop.user(uid)["kpp"] == "773101001"
    with w.rt.store.engine.connect() as c:
        from sqlalchemy import select

        from syncd.store import tables as t
        reasons = [r for (r,) in c.execute(select(t.quarantine.c.reason).where(t.quarantine.c.system == "crm"))]
    assert any("40702810900000000001" in r and "key mismatch" in r for r in reasons), reasons
    # the manager corrects it: КПП and account reach the shop user
    account = make_account(bank["RQ_BIK"], rng=random.Random(5))
    w.portal.ui_edit("bankdetail", bank["ID"], {"RQ_ACC_NUM": account})
    w.sync()
    u = w.shop.user(uid)
    assert u["kpp"] == "770801001"
    assert [a["account"] for a in u["bank_accounts"]] == [account]
    # an invalid ИНН typed in the shop: quarantined with a reason, the other orders still flow
    bad = w.shop.place(company_buyer(company_name="ООО «Опечатка»", inn="7707083890", kpp="770701001",
                                     email="typo@example.ru", phone="+7 495 000-00-01"), [(MUG, 1)])
    good = w.shop.place(PERSON, [(TEAPOT, 1)])
    w.sync()
    assert w.deal_of(good)
    q = w.rt.stats()["totals"]["quarantine_open"]
    assert q >= 1
    from sqlalchemy import select

    from syncd.store import tables as t
    with w.rt.store.engine.connect() as c:
        reasons = [r for (r,) in c.execute(select(t.quarantine.c.reason).where(t.quarantine.c.status == "open"))]
    assert any("ИНН" in r or "inn" in r.lower() for r in reasons), reasons
    assert not w.portal.companies(TITLE="ООО «Опечатка»")
    # the order itself is valid; its deal waits for its company (a deal without its buyer would
    # be half a record) until the buyer fixes the ИНН, then arrives with it
    assert not w.portal.deals(UF_CRM_SHOP_ORDER=str(bad["number"]))
    w.shop.edit_user(bad["user_id"], inn="7707083893", kpp="770701001")
    w.sync()
    (fixed,) = w.portal.companies(TITLE="ООО «Опечатка»")
    (deal,) = w.portal.deals(UF_CRM_SHOP_ORDER=str(bad["number"]))
    assert deal["COMPANY_ID"] == fixed["ID"]


def test_s8_payment_shipping_delivery_move_the_stage(world: World) -> None:
    w = world
    o = w.shop.place(PERSON, [(MUG, 2)])
    w.sync()
    d = w.deal_of(o)
    assert d["STAGE_ID"] == "NEW"
    w.shop.pay(o["id"])                           # 100 % paid -> "invoice paid"
    w.sync()
    assert w.portal.deal(d["ID"])["STAGE_ID"] == "PREPAYMENT_INVOICE"
    w.shop.status(o["id"], "G")                   # ready to ship -> "shipped"
    w.sync()
    assert w.portal.deal(d["ID"])["STAGE_ID"] == "EXECUTING"
    w.shop.status(o["id"], "D")                   # delivered -> "delivered"
    w.sync()
    assert w.portal.deal(d["ID"])["STAGE_ID"] == "FINAL_INVOICE"
    # a partial payment of another order does not make it "invoice paid"
    o2 = w.shop.place(PERSON, [(TEAPOT, 2)])
    w.sync()
    w.shop.pay(o2["id"], money(o2["total"]) / 2)
    w.sync()
    assert w.deal_of(o2)["STAGE_ID"] == "NEW"


def test_s8_first_order_closes_the_lead_pipeline_deal(world: World) -> None:
    w = world
    buyer = company_buyer()
    cid = w.portal.ui_add("company", {"TITLE": "Ромашка", "ASSIGNED_BY_ID": 3})
    w.portal.rest("crm.requisite.add", {"fields": {"ENTITY_TYPE_ID": 4, "ENTITY_ID": cid, "PRESET_ID": 1,
                                                   "NAME": "Ромашка", "RQ_INN": buyer["inn"],
                                                   "RQ_KPP": buyer["kpp"]}})
    lead = w.portal.ui_add("deal", {"TITLE": "Ромашка: оптовая заявка", "COMPANY_ID": cid,
                                    "CATEGORY_ID": w.pro_leads, "STAGE_ID": f"C{w.pro_leads}:READY"})
    w.sync()
    # the CRM company is not pushed into the shop (the shop shows users only inside orders); the
    # buyer orders with the ИНН+КПП the CRM knows: bound to that company, no review, no duplicate
    assert w.shop.users() == []
    o = w.shop.place(buyer, [(MUG, 20)])
    w.sync()
    assert [r for r in w.rt.store.list_review() if r["type"] == "company"] == []
    d = w.deal_of(o)
    assert (d["CATEGORY_ID"], d["COMPANY_ID"]) == ("0", str(cid))       # the order: a sales-pipeline deal
    w.sync(now=utcnow() + dt.timedelta(minutes=2))                        # the cross rule runs on the tick
    assert w.portal.deal(lead)["STAGE_ID"] == f"C{w.pro_leads}:WON"
    assert len(w.portal.companies()) == 1
    # a second order does not touch the lead pipeline again
    w.portal.ui_edit("deal", lead, {"STAGE_ID": f"C{w.pro_leads}:READY"})
    w.shop.place(buyer, [(TEAPOT, 1)])
    w.sync(now=utcnow() + dt.timedelta(minutes=4))
    assert w.portal.deal(lead)["STAGE_ID"] == f"C{w.pro_leads}:READY"


def test_s8_one_won_deal_gets_one_repeat_order_task(world: World) -> None:
    w = world
    o = w.shop.place(PERSON, [(THERMOS, 1)])
    w.sync()
    w.shop.status(o["id"], "F")
    w.sync()
    d = w.deal_of(o)
    assert d["STAGE_ID"] == "WON"
    assert w.portal.tasks() == []
    later = utcnow() + dt.timedelta(days=31)
    w.sync(now=later)
    tasks = [t for t in w.portal.tasks() if "повторный заказ" in t["title"]]
    assert len(tasks) == 1, w.portal.tasks()
    assert str(tasks[0]["responsibleId"]) == d["ASSIGNED_BY_ID"]
    w.sync(now=later + dt.timedelta(days=1))
    assert len([t for t in w.portal.tasks() if "повторный заказ" in t["title"]]) == 1


def test_faults_503_storm_and_token_loss_lose_nothing_and_create_nothing_twice(world: World) -> None:
    w = world
    w.runtime()
    orders = [w.shop.place(dict(PERSON, email=f"buyer{i}@example.ru", phone=f"+7 916 000-00-{i:02d}"),
                           [(MUG, i + 1)]) for i in range(6)]
    w.portal.faults(error_rate=0.5, error_statuses=[503], lost_answer_rate=0.2, seed=7)
    for _ in range(3):
        w.rt.sync_once()
        w.rt.tick_rules()
    # the shop session is lost mid-run too (the shop forgets its sessions) and the portal recovers
    w.shop_h.extra["state"].sessions.clear()
    w.portal.faults(error_rate=0.0, lost_answer_rate=0.0)
    _drain(w)
    assert len(w.portal.deals()) == len(orders)
    assert sorted(d["UF_CRM_SHOP_ORDER"] for d in w.portal.deals()) == sorted(str(o["number"]) for o in orders)
    assert len(w.portal.contacts()) == len(orders)
    assert w.rt.stats()["totals"]["outbox_dead"] == 0


def _drain(w: World) -> None:
    """Passes until the outbox is empty (retries wait out their backoff: push them now)."""
    from sqlalchemy import update

    from syncd.store import tables as t
    for _ in range(20):
        with w.rt.store.begin() as c:
            c.execute(update(t.outbox).where(t.outbox.c.status == "pending").values(next_attempt_at=utcnow()))
        w.sync(rounds=10)
        if w.rt.stats()["totals"]["outbox_pending"] == 0:
            return
    raise AssertionError(w.rt.stats()["totals"])
