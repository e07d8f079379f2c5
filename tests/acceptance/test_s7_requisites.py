"""S7 requisites both ways: a company's ИНН/КПП and bank accounts edited in 1C, in the CRM or by the
buyer in the shop reach the other two systems; a typo that fails the checksum is held with its reason."""

from __future__ import annotations

import random

from harness import MUG, Integration, company

from syncd.keys.generate import make_account

BUYER = company("ООО «Ромашка»", "7707083893", "773601001", phone="+7 (495) 765-43-21")


def _company_in_all_three(it: Integration) -> tuple[dict, object]:
    o = it.shop.place(BUYER, [(MUG, 10)], pay_system="3")
    it.sync()
    it.shop.pay(o["id"])
    it.sync()
    onec = it.onec()
    onec.run_cycle()
    it.sync()
    return o, onec


def _requisite(it: Integration) -> dict:
    (co,) = it.portal.companies()
    (rq,) = it.portal.requisites(co["ID"])
    return rq


def _bank(it: Integration, rq: dict) -> list[dict]:
    return it.portal.rest("crm.requisite.bankdetail.list", {"filter": {"ENTITY_ID": rq["ID"]}})


def test_the_accountants_edit_in_1c_reaches_the_crm_and_the_shop(it1c: Integration) -> None:
    it = it1c
    o, onec = _company_in_all_three(it)
    (cp,) = onec.db.counterparties.values()
    account = make_account(BUYER["bank_accounts"][0]["bik"], rng=random.Random(11))
    onec.edit_requisites(cp.id, kpp="773101001", bank_account={"account": account, "bik": BUYER["bank_accounts"][0]["bik"],
                                                              "corr_account": BUYER["bank_accounts"][0]["corr_account"],
                                                              "bank_name": "ПАО Сбербанк"})
    onec.run_cycle()
    it.sync()
    rq = _requisite(it)
    assert rq["RQ_KPP"] == "773101001"
    assert account in [b["RQ_ACC_NUM"] for b in _bank(it, rq)]
    u = it.shop.user(o["user_id"])
    assert u["kpp"] == "773101001" and account in [a["account"] for a in u["bank_accounts"]]
    assert it.dead() == []


def test_a_managers_edit_in_the_crm_reaches_1c_and_the_shop(it1c: Integration) -> None:
    it = it1c
    o, onec = _company_in_all_three(it)
    rq = _requisite(it)
    (bank,) = _bank(it, rq)
    account = make_account(bank["RQ_BIK"], rng=random.Random(5))
    it.portal.ui_edit("requisite", rq["ID"], {"RQ_KPP": "770801001"})
    it.portal.ui_edit("bankdetail", bank["ID"], {"RQ_ACC_NUM": account})
    it.sync()
    onec.run_cycle()
    it.sync()
    (cp,) = onec.db.counterparties.values()
    assert cp.kpp == "770801001" and [a.number for a in cp.bank_accounts] == [account]
    u = it.shop.user(o["user_id"])
    assert u["kpp"] == "770801001" and [a["account"] for a in u["bank_accounts"]] == [account]


def test_the_buyers_edit_in_the_shop_reaches_the_crm_and_a_typo_is_held_with_its_reason(it: Integration) -> None:
    o = it.shop.place(BUYER, [(MUG, 10)])
    it.sync()
    it.shop.edit_user(o["user_id"], kpp="773101001")
    it.sync()
    assert _requisite(it)["RQ_KPP"] == "773101001"
    # the buyer mistypes the bank account (its key does not match the БИК): nothing half-applied
    bik = BUYER["bank_accounts"][0]["bik"]
    it.shop.edit_user(o["user_id"], bank_accounts=[{"account": "40702810900000000001", "bik": bik,
                                                    "corr_account": BUYER["bank_accounts"][0]["corr_account"]}])
    it.sync()
    assert [b["RQ_ACC_NUM"] for b in _bank(it, _requisite(it))] == [BUYER["bank_accounts"][0]["account"]]
    code, held = it.cli_json("quarantine")
    assert code == 0 and any("40702810900000000001" in q["reason"] for q in held), held
    # corrected: it flows
    good = make_account(bik, rng=random.Random(3))
    it.shop.edit_user(o["user_id"], bank_accounts=[{"account": good, "bik": bik,
                                                    "corr_account": BUYER["bank_accounts"][0]["corr_account"]}])
    it.sync()
    assert good in [b["RQ_ACC_NUM"] for b in _bank(it, _requisite(it))]
