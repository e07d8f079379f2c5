"""S9 operations as the integrator runs them from the shell: `syncd check`, `syncd backfill --since`, a
write the peer refuses (dead letter) fixed and replayed, a held customer decided in `syncd review`."""

from __future__ import annotations

from harness import MUG, ORDER_FIELD, TEAPOT, THERMOS, Integration, person

BUYER = person("Кузнецов", "Дмитрий", "d.kuznetsov@example.ru", "8-903-555-12-34")


def test_check_says_one_line_per_system_and_names_what_is_wrong(it: Integration) -> None:
    code, out = it.cli("check")
    lines = out.strip().splitlines()
    assert code == 0, out
    for system in ("database", "shop", "crm"):
        (line,) = [x for x in lines if x.startswith(("✓ " + system + ":", "✗ " + system + ":"))]
        assert line.startswith("✓"), line
    assert all(x.startswith("✓") for x in lines), out
    # a wrong shop password: the shop's line says so, the portal's stays green, exit 1
    it.shop.call("PATCH", "/settings", {"password": "changed-by-the-shop-admin"})
    code, out = it.cli("check")
    shop_line = next(x for x in out.splitlines() if x.startswith(("✓ shop:", "✗ shop:")))
    assert code == 1 and shop_line.startswith("✗") and "changed-by-the-shop-admin" not in out
    assert not shop_line.startswith("✗ shop: shop:"), shop_line          # the system named once
    assert next(x for x in out.splitlines() if x.startswith(("✓ crm:", "✗ crm:"))).startswith("✓")


def _history(it: Integration) -> dict[str, list[dict]]:
    """The shop's orders: three before February 2024, four from then on (one placed today)."""
    before, period = [], []
    for when, items in (("2024-01-10T12:00:00", [(MUG, 1)]), ("2024-01-20T15:30:00", [(TEAPOT, 1)]),
                        ("2024-01-31T18:00:00", [(THERMOS, 1)])):
        before.append(it.shop.place(BUYER, items, created=when, status="F"))
    for when, items in (("2024-02-01T12:00:00", [(MUG, 2)]), ("2024-02-14T10:00:00", [(TEAPOT, 2)]),
                        ("2024-03-05T09:15:00", [(THERMOS, 3)])):
        period.append(it.shop.place(BUYER, items, created=when, status="F"))
    period.append(it.shop.place(BUYER, [(MUG, 5)]))
    return {"before": before, "period": period}


def test_backfill_since_a_date_imports_exactly_the_orders_of_that_period(it: Integration) -> None:
    orders = _history(it)
    code, summary = it.cli_json("backfill", "--since", "2024-02-01", "--create")
    assert code == 0, summary
    deals = it.portal.deals()
    assert sorted(d[ORDER_FIELD] for d in deals) == sorted(o["number"] for o in orders["period"])
    assert summary["failed"] == 0 and summary["dead"] == 0
    # then regular sync goes on from there: a new order flows, the old ones never arrive
    new = it.shop.place(BUYER, [(TEAPOT, 1)])
    it.sync()
    assert sorted(d[ORDER_FIELD] for d in it.portal.deals()) == sorted(
        o["number"] for o in orders["period"] + [new])


def test_backfill_since_a_date_counts_the_orders_of_that_day_in_moscow_time(it: Integration) -> None:
    early = it.shop.place(BUYER, [(MUG, 1)], created="2024-02-01T01:00:00")
    late = it.shop.place(BUYER, [(MUG, 1)], created="2024-01-31T23:30:00")
    code, _ = it.cli_json("backfill", "--since", "2024-02-01", "--create")
    assert code == 0
    assert [d[ORDER_FIELD] for d in it.portal.deals()] == [early["number"]], late["number"]


def test_a_write_the_shop_refuses_is_a_dead_letter_then_replayed_once_after_the_fix(it: Integration) -> None:
    s = it.setup
    o = it.shop.place(BUYER, [(MUG, 2)])
    other = it.shop.place(BUYER, [(TEAPOT, 1)])
    it.sync()
    # the shop's admin locked order o for edits; the manager wins both deals
    it.shop.reject(number=o["number"], message="Заказ заблокирован: идёт сверка с 1С")
    for x in (o, other):
        it.portal.ui_edit("deal", it.deal_of(x)["ID"], {"STAGE_ID": s.stage("WON")})
    it.sync()
    assert it.shop.order(other["id"])["status"] == "F"                 # the rest flows
    assert it.shop.order(o["id"])["status"] == "N"
    code, dead = it.cli_json("replay", "--list")
    assert code == 0 and len(dead) == 1 and dead[0]["system"] == "shop"
    assert "идёт сверка с 1С" in dead[0]["last_error"]
    # the fix, then the replay: applied once
    it.shop.clear_rejections()
    imported_before = sum(o["xml_id"] in (i.get("updated") or []) for i in it.shop.imports())
    code, out = it.cli("replay")
    assert code == 0, out
    assert it.shop.order(o["id"])["status"] == "F"
    assert sum(o["xml_id"] in (i.get("updated") or []) for i in it.shop.imports()) == imported_before + 1
    it.sync()
    assert it.dead() == [] and it.deal_of(o)["STAGE_ID"] == s.stage("WON")


def test_a_deal_the_portal_refuses_is_a_dead_letter_then_replayed_once_after_the_fix(it: Integration) -> None:
    o1 = it.shop.place(BUYER, [(MUG, 1)])
    o2 = it.shop.place(BUYER, [(TEAPOT, 1)])
    # a validation rule of the portal refuses the deal of o2 (a required field the integrator forgot)
    it.portal.reject("crm.deal.add", fields={ORDER_FIELD: o2["number"]}, error="ERROR_CORE",
                     description="Не заполнено обязательное поле «Источник»")
    it.sync()
    assert it.deal_of(o1)
    assert it.portal.deals(**{ORDER_FIELD: o2["number"]}) == []
    code, dead = it.cli_json("replay", "--list")
    assert [(d["system"], d["entity_type"]) for d in dead] == [("crm", "order")]
    assert "Источник" in dead[0]["last_error"]
    it.portal.clear_rejections()
    code, out = it.cli("replay")
    assert code == 0, out
    assert len(it.portal.deals(**{ORDER_FIELD: o2["number"]})) == 1
    it.sync()
    assert len(it.portal.deals()) == 2 and it.dead() == []


def test_a_held_customers_order_waits_and_flows_after_the_review(it: Integration) -> None:
    """A customer with a second shop account (same phone, another e-mail): syncd cannot tell alone
    whether it is the same person, so the order waits — no deal without its buyer — until the operator
    decides in `syncd review`; then the deal arrives with the contact decided."""
    first = it.shop.place(it.shop.register(person("Петров", "Иван", "ivan.petrov@mail.example", "8 (495) 123-45-67")),
                          [(MUG, 1)])
    it.sync()
    contact = it.deal_of(first)["CONTACT_ID"]
    second = it.shop.place(it.shop.register(person("Петров", "Иван", "petrov@firm.example", "+7 495 1234567")),
                           [(TEAPOT, 1)])
    it.sync()
    assert it.portal.deals(**{ORDER_FIELD: second["number"]}) == []        # waits, no half deal
    code, items = it.cli_json("review")
    (item,) = items
    assert (item["system"], item["type"]) == ("shop", "person") and len(item["candidates"]) == 1
    # the operator knows it is the same Ivan Petrov: bind the account to the existing person
    code, out = it.cli("review", "resolve", str(item["id"]), "--entity", item["candidates"][0])
    assert code == 0, out
    it.sync()
    assert it.deal_of(second)["CONTACT_ID"] == contact
    (ivan,) = it.portal.contacts()
    assert sorted(e["VALUE"] for e in ivan["EMAIL"]) == ["ivan.petrov@mail.example", "petrov@firm.example"]
    assert it.cli_json("review")[1] == [] and it.dead() == []


def test_a_dry_run_reports_what_would_be_bound_and_created_and_writes_nothing(it: Integration) -> None:
    o = it.shop.place(BUYER, [(MUG, 1)])
    code, out = it.cli("sync", "--dry-run", "--create")
    assert code == 0, out
    assert o["number"] in out and "create" in out.lower()
    assert it.portal.deals() == [] and len(it.shop.imports()) == 0


def test_trace_tells_an_orders_story(it: Integration) -> None:
    o = it.shop.place(BUYER, [(MUG, 1)])
    it.sync()
    d = it.deal_of(o)
    code, out = it.cli("trace", f"shop:order:{o['xml_id']}")
    assert code == 0, out
    assert o["number"] in out and d["ID"] in out and "crm" in out


def test_audit_from_the_shell_finds_nothing_after_a_sync_and_names_an_unknown_integration(it: Integration) -> None:
    it.shop.place(BUYER, [(MUG, 2)])
    it.sync()
    code, report = it.cli_json("audit")
    assert code == 0 and report["drift_records"] == 0 and report["checked"].get("crm", 0) >= 2, report
    assert "shop" in report["unreadable"], report                 # a CommerceML site: said, not skipped
    code, out = it.cli("audit", "nosuch")
    assert code == 2 and "no integration named 'nosuch'" in out, out
