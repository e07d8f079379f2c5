"""Rules through the engine: defaults, assignment, stage chains, echo, cross rules, explain, check."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal

import pytest
from rules_world import World
from sqlalchemy import select

from syncd.errors import ConfigError
from syncd.rules import check, explain
from syncd.rules.context import WARNINGS_KEY
from syncd.store import Store
from syncd.store import tables as t

DEFAULTS = {"order": {"order.pipeline": "0", "order.stage": "NEW", "order.probability": 10,
                      "order.opened": True,
                      "notify": "Новая сделка {order.title} от {order.date} из {order.source}"}}
STAGES = [
    {"name": "invoice paid", "when": "order.paid_percent >= 100", "set": {"order.stage": "PREPAYMENT_INVOICE"},
     "pipeline": "0", "system": "crm"},
    {"name": "shipped", "when": "order.status == 'shipped'", "set": {"order.stage": "EXECUTING"},
     "pipeline": "0", "system": "crm"},
    {"name": "completed is won", "when": "order.status == 'completed'", "set": {"order.stage": "WON"},
     "pipeline": "0", "system": "crm"},
    {"name": "won is completed", "when": "order.stage == 'WON'", "set": {"order.status": "completed"}},
]


def order(n: int, **kw):
    return {"number": f"A-{n}", "status": "new", "total": "1000.00", "title": f"Заказ A-{n}",
            "source": "shop.example.ru", "date": "2026-11-01T10:00:00+00:00", **kw}


def assign_rules(chain, **kw):
    return {"assign": {"order": {"system": "crm", "chain": chain, **kw}}}


def _warnings(store: Store) -> dict:
    return store.kv_get(WARNINGS_KEY, {"total": 0, "by_rule": {}})


# -- defaults, notify, echo -----------------------------------------------------------------------

def test_defaults_and_assignment_on_created_order_and_no_echo(store: Store) -> None:
    w = World(store, {"defaults": DEFAULTS, **assign_rules([{"strategy": "fixed", "manager": "3"}])})
    w.remote["shop"].edit("order", "o1", **order(1))
    w.syncer.until_quiet()
    deal = w.crm_order_by_number("A-1")
    assert (deal["pipeline"], deal["stage"], deal["probability"], deal["opened"], deal["responsible"]) == \
        ("0", "NEW", 10, True, "3")
    # the change is recorded with origin `rules`
    eid = w.entity_id("shop", "order", "o1")
    with store.begin() as c:
        origins = [r.origin for r in c.execute(select(t.changelog.c.origin).where(t.changelog.c.entity_id == eid))]
    assert "rules" in origins
    # not echoed: after quiescence a full pass writes nothing anywhere
    writes = {s: r.writes for s, r in w.remote.items()}
    c = w.syncer.pass_once()
    assert (c.planned, c.pushed) == (0, 0)
    assert {s: r.writes for s, r in w.remote.items()} == writes
    # the notice reached the responsible through the outbox, once (a tick sends nothing more)
    assert w.crm.notices == [("3", "Новая сделка Заказ A-1 от 01.11.2026 10:00 из shop.example.ru")]
    w.tick(None)
    w.syncer.until_quiet()
    assert len(w.crm.notices) == 1


def test_defaults_do_not_override_values_from_the_source(store: Store) -> None:
    w = World(store, {"defaults": DEFAULTS})
    w.remote["crm"].edit("order", "d1", **order(1, stage="PREPARATION", pipeline="1", responsible="1"))
    w.syncer.until_quiet()
    deal = w.remote["crm"].objects["order"]["d1"]
    assert (deal["stage"], deal["pipeline"], deal["probability"]) == ("PREPARATION", "1", 10)


# -- assignment -----------------------------------------------------------------------------------

CHAIN = [
    {"name": "big", "when": "order.total >= 100000", "manager": "7"},
    {"name": "services", "when": "order.items.kind in ['service']", "group": ["3", "5"], "strategy": "round_robin"},
    {"strategy": "none"},
]


@pytest.mark.parametrize("total,expected", [("99999.99", None), ("100000", "7"), ("100000.01", "7")])
def test_table_boundary(store: Store, total: str, expected: str | None) -> None:
    w = World(store, assign_rules(CHAIN))
    w.remote["shop"].edit("order", "o1", **order(1, total=total))
    w.syncer.until_quiet()
    assert w.crm_order_by_number("A-1").get("responsible") == expected


def test_first_match_wins(store: Store) -> None:
    w = World(store, assign_rules(CHAIN))
    # both "big" and "services" match: the first one decides
    w.remote["shop"].edit("order", "o1", **order(1, total="200000", items=[{"name": "Монтаж", "kind": "service"}]))
    w.remote["shop"].edit("order", "o2", **order(2, total="500", items=[{"name": "Монтаж", "kind": "service"},
                                                                          {"name": "Кабель", "kind": "goods"}]))
    w.remote["shop"].edit("order", "o3", **order(3, total="500", items=[{"name": "Кабель", "kind": "goods"}]))
    w.syncer.until_quiet()
    assert w.crm_order_by_number("A-1")["responsible"] == "7"
    assert w.crm_order_by_number("A-2")["responsible"] == "3"
    assert "responsible" not in w.crm_order_by_number("A-3")     # strategy none: nobody


def test_table_strategy_with_rows_and_client_type(store: Store) -> None:
    chain = [{"strategy": "table", "rows": [
        {"when": "client.type == 'VIP'", "manager": "1"},
        {"when": "order.source == 'form:callback'", "manager": "3"}]},
        {"manager": "7"}]
    w = World(store, assign_rules(chain))
    w.remote["shop"].edit("person", "p1", name="Вип", email="vip@example.ru", client_type="VIP")
    w.remote["shop"].edit("order", "o1", **order(1, customer_id="p1"))
    w.remote["shop"].edit("order", "o2", **order(2, source="form:callback"))
    w.remote["shop"].edit("order", "o3", **order(3))
    w.syncer.until_quiet()
    assert [w.crm_order_by_number(f"A-{i}")["responsible"] for i in (1, 2, 3)] == ["1", "3", "7"]


def test_round_robin_is_fair_over_1000_deals(store: Store) -> None:
    w = World(store, assign_rules([{"strategy": "round_robin", "group": ["1", "3", "7"]}]))
    for i in range(1000):
        w.remote["shop"].edit("order", f"o{i}", **order(i))
    w.syncer.pull("shop", "order")
    with store.begin() as c:
        rows = [json.loads(r[0]) for r in c.execute(select(t.entities.c.fields).where(t.entities.c.type == "order"))]
    counts = Counter(r["order.responsible"] for r in rows)
    assert sum(counts.values()) == 1000 and set(counts) == {"1", "3", "7"}
    assert max(counts.values()) - min(counts.values()) <= 1


def test_round_robin_survives_a_restart(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/rr.db"
    rules = assign_rules([{"strategy": "round_robin", "group": ["1", "3", "7"]}])
    s1 = Store(url)
    w1 = World(s1, rules)
    for i in range(4):
        w1.remote["shop"].edit("order", f"o{i}", **order(i))
    w1.syncer.until_quiet()
    got = [w1.crm_order_by_number(f"A-{i}")["responsible"] for i in range(4)]
    s1.close()
    s2 = Store(url)                       # a new process on the same database
    w2 = World(s2, rules, remote=w1.remote)
    for i in range(4, 8):
        w2.remote["shop"].edit("order", f"o{i}", **order(i))
    w2.syncer.until_quiet()
    got += [w2.crm_order_by_number(f"A-{i}")["responsible"] for i in range(4, 8)]
    s2.close()
    # the rotation continues where it stopped (without the stored pointer "1" would get 4)
    assert Counter(got[:4]) == Counter({"1": 2, "3": 1, "7": 1})
    assert Counter(got) == Counter({"1": 3, "3": 3, "7": 2})


def test_random_only_among_present_managers(store: Store) -> None:
    w = World(store, assign_rules([{"strategy": "random", "group": ["1", "3", "5", "7", "9"]}]))
    for i in range(60):
        w.remote["shop"].edit("order", f"o{i}", **order(i))
    w.syncer.until_quiet()
    got = Counter(o["responsible"] for o in w.crm_orders().values())
    # 5 is away, 7 has no presence data (absent unless configured), 9 is fired
    assert set(got) == {"1", "3"}
    assert _warnings(store)["total"] >= 1        # the fired manager is reported


def test_random_counts_unknown_presence_when_configured(store: Store) -> None:
    w = World(store, assign_rules([{"strategy": "random", "group": ["5", "7"], "unknown_presence_is_present": True}]))
    for i in range(10):
        w.remote["shop"].edit("order", f"o{i}", **order(i))
    w.syncer.until_quiet()
    assert {o["responsible"] for o in w.crm_orders().values()} == {"7"}


def test_presence_is_cached(store: Store) -> None:
    w = World(store, assign_rules([{"strategy": "random", "group": ["1", "3"]}]))
    for i in range(20):
        w.remote["shop"].edit("order", f"o{i}", **order(i))
    w.syncer.until_quiet()
    assert w.crm.describes == 1


def test_keep_gives_known_clients_deal_to_their_manager(store: Store) -> None:
    w = World(store, assign_rules([{"strategy": "keep"}, {"manager": "1"}]))
    w.remote["shop"].edit("person", "p1", name="Старый клиент", email="old@example.ru", responsible="7")
    w.remote["shop"].edit("person", "p2", name="Новый клиент", email="new@example.ru")
    w.remote["shop"].edit("order", "o1", **order(1, customer_id="p1"))
    w.remote["shop"].edit("order", "o2", **order(2, customer_id="p2"))
    w.syncer.until_quiet()
    assert w.crm_order_by_number("A-1")["responsible"] == "7"
    assert w.crm_order_by_number("A-2")["responsible"] == "1"


def test_least_loaded_with_cap(store: Store) -> None:
    rules = assign_rules([{"strategy": "least_loaded", "group": ["1", "3"], "cap": 3}, {"strategy": "none"}])
    w = World(store, rules)
    # manager 1 already has two open deals and one closed one
    w.remote["crm"].edit("order", "d1", **order(101, responsible="1"))
    w.remote["crm"].edit("order", "d2", **order(102, responsible="1"))
    w.remote["crm"].edit("order", "d3", **order(103, responsible="1", status="completed"))
    w.syncer.until_quiet()
    for i in range(5):
        w.remote["shop"].edit("order", f"o{i}", **order(i))
    w.syncer.pull("shop", "order")        # one batch: loads must count the batch's own picks
    w.syncer.until_quiet()
    got = [w.crm_order_by_number(f"A-{i}").get("responsible") for i in range(5)]
    # 3 gets three (0 -> 3), 1 gets one (2 -> 3), then both are at the cap: nobody
    assert Counter(got) == Counter({"3": 3, "1": 1, None: 1})


def test_unknown_or_fired_manager_falls_back_with_a_warning(store: Store) -> None:
    w = World(store, assign_rules([{"name": "fired", "manager": "9"}, {"name": "ghost", "manager": "42"},
                                   {"name": "fallback", "manager": "3"}]))
    w.remote["shop"].edit("order", "o1", **order(1))
    w.syncer.until_quiet()
    assert w.crm_order_by_number("A-1")["responsible"] == "3"
    warn = _warnings(store)
    assert warn["total"] == 2
    assert set(warn["by_rule"]) == {"assign order fired", "assign order ghost"}


def test_check_reports_unknown_and_fired_managers_and_stages() -> None:
    rules = {**assign_rules([{"manager": "9"}, {"group": ["1", "42"], "strategy": "round_robin"}]),
             "stages": [{"name": "x", "when": "order.paid == true", "set": {"order.stage": "NOPE"},
                         "pipeline": "0", "system": "crm"},
                        {"name": "y", "when": "order.paid == true", "set": {"order.stage": "WON"},
                         "pipeline": "9", "system": "crm"}]}
    from rules_world import CrmConnector

    from syncd.sandbox.memory import MemorySystem
    live = {"crm": CrmConnector("crm", MemorySystem("crm")).describe()}
    errors = check(rules, live)
    assert any("'9' is inactive" in e for e in errors)
    assert any("'42' is unknown" in e for e in errors)
    assert any("'NOPE' is not in pipeline" in e for e in errors)
    assert any("no pipeline '9'" in e for e in errors)
    assert check(assign_rules([{"manager": "1"}]), live) == []
    assert "position" in check({"stages": [{"name": "bad", "when": "order.total >=", "set": {}}]}, live)[0]


def test_bad_rules_fail_at_build_naming_rule_and_position(store: Store) -> None:
    with pytest.raises(ConfigError) as exc:
        World(store, {"stages": [{"name": "paid", "when": "order.paid_percent >= 100 and", "set": {}}]})
    assert "'paid'" in str(exc.value) and "position 29" in str(exc.value)
    with pytest.raises(ConfigError, match="unknown field 'order.nope'"):
        World(store, {"stages": [{"name": "paid", "when": "order.nope == 1", "set": {}}]})
    with pytest.raises(ConfigError, match="order.bogus"):
        World(store, {"defaults": {"order": {"order.bogus": 1}}})
    with pytest.raises(ConfigError, match="Extra inputs"):
        World(store, {"stages": [{"name": "p", "when": "order.paid", "set": {}, "colour": 1}]})


# -- stage chains ---------------------------------------------------------------------------------

@pytest.mark.parametrize("percent,stage", [("99.99", "NEW"), ("100", "PREPAYMENT_INVOICE"), ("100.5", "PREPAYMENT_INVOICE")])
def test_paid_percent_boundary(store: Store, percent: str, stage: str) -> None:
    w = World(store, {"defaults": DEFAULTS, "stages": STAGES})
    w.remote["shop"].edit("order", "o1", **order(1))
    w.syncer.until_quiet()
    w.remote["shop"].edit("order", "o1", paid_percent=percent)
    w.syncer.until_quiet()
    assert w.crm_order_by_number("A-1")["stage"] == stage


def test_stage_chain_never_moves_backwards(store: Store) -> None:
    w = World(store, {"defaults": DEFAULTS, "stages": STAGES})
    w.remote["shop"].edit("order", "o1", **order(1))
    w.syncer.until_quiet()
    w.remote["shop"].edit("order", "o1", status="shipped")
    w.syncer.until_quiet()
    assert w.crm_order_by_number("A-1")["stage"] == "EXECUTING"
    w.remote["shop"].edit("order", "o1", paid_percent="100")      # paid late: would be a step back
    w.syncer.until_quiet()
    assert w.crm_order_by_number("A-1")["stage"] == "EXECUTING"
    w.remote["shop"].edit("order", "o1", status="completed")
    w.syncer.until_quiet()
    assert w.crm_order_by_number("A-1")["stage"] == "WON"
    c = w.syncer.pass_once()
    assert (c.planned, c.pushed) == (0, 0)


def test_allow_backwards(store: Store) -> None:
    stages = [dict(STAGES[1]), dict(STAGES[0], allow_backwards=True)]
    w = World(store, {"defaults": DEFAULTS, "stages": stages})
    w.remote["shop"].edit("order", "o1", **order(1, status="shipped"))
    w.syncer.until_quiet()
    w.remote["shop"].edit("order", "o1", paid_percent="100")
    w.syncer.until_quiet()
    assert w.crm_order_by_number("A-1")["stage"] == "PREPAYMENT_INVOICE"


def test_won_in_crm_completes_the_shop_order(store: Store) -> None:
    w = World(store, {"defaults": DEFAULTS, "stages": STAGES})
    w.remote["shop"].edit("order", "o1", **order(1))
    w.syncer.until_quiet()
    ext = next(k for k, o in w.remote["crm"].objects["order"].items() if o["number"] == "A-1")
    w.remote["crm"].edit("order", ext, stage="WON")
    w.syncer.until_quiet()
    assert w.remote["shop"].objects["order"]["o1"]["status"] == "completed"
    c = w.syncer.pass_once()
    assert (c.planned, c.pushed) == (0, 0)


def test_stage_rule_does_not_fight_a_manager(store: Store) -> None:
    """A rule fires on a change of the facts it reads, not on every edit of the deal."""
    w = World(store, {"defaults": DEFAULTS, "stages": STAGES})
    w.remote["shop"].edit("order", "o1", **order(1, paid_percent="100"))
    w.syncer.until_quiet()
    ext = next(iter(w.remote["crm"].objects["order"]))
    assert w.remote["crm"].objects["order"][ext]["stage"] == "PREPAYMENT_INVOICE"
    w.remote["crm"].edit("order", ext, stage="PREPARATION", comment="x")   # the manager steps back
    w.syncer.until_quiet()
    assert w.remote["crm"].objects["order"][ext]["stage"] == "PREPARATION"


# -- cross-entity ---------------------------------------------------------------------------------

def test_first_order_closes_the_lead_pipeline_deal(store: Store) -> None:
    rules = {"defaults": DEFAULTS, "cross": [{
        "name": "first order closes lead deal", "entity": "order", "on": "created",
        "when": "order.pipeline == '0'", "first": True, "via": "order.company",
        "target": "order", "target_when": "order.pipeline == '1' and order.stage == 'L_READY'",
        "set": {"order.stage": "L_WON"}}]}
    w = World(store, rules)
    w.remote["crm"].edit("company", "c1", name="ООО Ромашка", inn="7707083893")
    w.remote["crm"].edit("order", "lead1", **order(900, pipeline="1", stage="L_READY", company_id="c1"))
    w.syncer.until_quiet()
    w.remote["shop"].edit("order", "o1", **order(1))
    # the shop order names the same company (as the CRM binding does once the company is matched)
    w.syncer.until_quiet()
    comp = w.entity_id("crm", "company", "c1")
    assert w.remote["crm"].objects["order"]["lead1"]["stage"] == "L_READY"   # unrelated order: no company
    w.remote["crm"].edit("order", "new1", **order(2, company_id="c1"))         # the company's first sales order
    w.syncer.until_quiet()
    assert w.remote["crm"].objects["order"]["lead1"]["stage"] == "L_READY"     # queued for the tick
    w.tick(None)
    w.syncer.until_quiet()
    assert w.remote["crm"].objects["order"]["lead1"]["stage"] == "L_WON"
    assert w.remote["crm"].objects["order"]["new1"]["pipeline"] == "0"
    assert comp
    # a second order of the same company changes nothing more
    w.remote["crm"].edit("order", "new2", **order(3, company_id="c1"))
    w.syncer.until_quiet()
    assert w.tick(None) == 0


# -- explain --------------------------------------------------------------------------------------

def test_explain_lists_matching_rules_in_order() -> None:
    rules = {"defaults": DEFAULTS, "stages": STAGES, **assign_rules(CHAIN)}
    lines = explain(rules, {"order.total": Decimal(150000), "order.paid_percent": Decimal(100),
                            "order.title": "Заказ 5", "order.source": "shop"})
    text = "\n".join(lines)
    assert lines[0].startswith("defaults (on create): set order.pipeline = '0'")
    assert "assign: big: manager 7" in text
    assert "stage rule 'invoice paid': set order.stage = 'PREPAYMENT_INVOICE'" in text
    assert "stage rule 'shipped': does not apply" in text
    assert text.index("assign") < text.index("stage rule")


# -- round-robin pointer under concurrency ----------------------------------------------------------

def _hammer(url: str, n_threads: int, per_thread: int) -> list[int]:
    import threading

    from sqlalchemy.exc import OperationalError

    from syncd.rules.assign import next_pointer
    stores = [Store(url) for _ in range(2)]          # two "instances"
    got: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        s = stores[i % 2]
        for _ in range(per_thread):
            for attempt in range(50):
                try:
                    with s.begin() as c:
                        n = next_pointer(c, "rules:rr:order:test")
                    break
                except OperationalError:        # sqlite: database is locked under contention; retry
                    import time
                    time.sleep(0.01 * (attempt + 1))
            else:
                raise AssertionError("never got the pointer")
            with lock:
                got.append(n)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for s in stores:
        s.close()
    return got


def test_round_robin_pointer_is_atomic_across_instances_on_postgres(pg_url: str) -> None:
    got = _hammer(pg_url, 8, 25)
    assert sorted(got) == list(range(200))       # every position handed out exactly once


def test_round_robin_pointer_is_atomic_on_sqlite(tmp_path) -> None:
    got = _hammer(f"sqlite:///{tmp_path}/p.db", 4, 25)
    assert sorted(got) == list(range(100))


def test_explain_a_stored_entity_changes_nothing(store: Store) -> None:
    rules = {"defaults": DEFAULTS, "stages": STAGES,
             **assign_rules([{"strategy": "keep"}, {"name": "rr", "strategy": "round_robin", "group": ["1", "3"]}])}
    w = World(store, rules)
    w.remote["shop"].edit("person", "p1", name="Клиент", email="k@example.ru", responsible="7")
    w.remote["shop"].edit("order", "o1", **order(1, customer_id="p1", paid_percent="100"))
    w.syncer.until_quiet()
    eid = w.entity_id("shop", "order", "o1")
    pointer = store.kv_get("rules:rr:order:rr")
    lines = explain(rules, eid, store=store, connectors=w.conns)
    text = "\n".join(lines)
    assert "assign: order.responsible is already '7'" in text
    assert "stage rule 'invoice paid'" in text
    fresh = {"type": "order", "fields": {"order.total": Decimal(1)}}
    text = "\n".join(explain(rules, fresh, store=store, connectors=w.conns))
    assert "assign: #1 keep: no known client" in text and "assign: rr: round robin over 1, 3 -> 1" in text
    assert store.kv_get("rules:rr:order:rr") == pointer


def test_leads_are_assigned_by_their_own_chain(store: Store) -> None:
    rules = {"assign": {"lead": {"system": "crm", "chain": [
        {"when": "lead.form == 'callback'", "manager": "5"},
        {"strategy": "round_robin", "group": ["1", "3"]}]}},
        "defaults": {"lead": {"lead.source": "WEB"}}}
    w = World(store, rules)
    w.remote["shop"].edit("lead", "f1", title="Перезвоните", email="a@example.ru", form="callback")
    w.remote["shop"].edit("lead", "f2", title="Вопрос", email="b@example.ru", form="question")
    w.syncer.until_quiet()
    leads = {o["title"]: o for o in w.remote["crm"].objects["lead"].values()}
    assert leads["Перезвоните"]["responsible"] == "5" and leads["Вопрос"]["responsible"] == "1"
    assert {o["source"] for o in leads.values()} == {"WEB"}
    assert w.syncer.pass_once().pushed == 0


def test_timer_notice_goes_through_the_crm(store: Store) -> None:
    import datetime as dt
    rules = {"assign": {"order": {"system": "crm", "chain": [{"manager": "3"}]}},
             "timers": [{"name": "stuck", "when": "order.stage == 'NEW'", "after": "2d",
                         "notify": "Сделка {order.number} два дня в стадии NEW"}],
             "defaults": {"order": {"order.stage": "NEW"}}}
    w = World(store, rules)
    w.remote["shop"].edit("order", "o1", **order(1))
    w.syncer.until_quiet()
    now = dt.datetime.now(dt.UTC)
    assert w.tick(now + dt.timedelta(days=3)) == 1
    assert w.tick(now + dt.timedelta(days=4)) == 0
    w.syncer.until_quiet()
    assert w.crm.notices == [("3", "Сделка A-1 два дня в стадии NEW")]
