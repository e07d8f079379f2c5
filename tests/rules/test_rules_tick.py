"""Scheduled rules: timers, repeat sales, customer metrics (tick), through in-memory systems."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rules_world import World

from syncd.rules import expr
from syncd.rules.metrics import compute
from syncd.store import Store

NOW = dt.datetime.now(dt.UTC)
H = dt.timedelta(hours=1)
D = dt.timedelta(days=1)

TIMER = {"timers": [{"name": "unpaid 24h", "entity": "order", "when": "order.paid == false and order.canceled != true",
                     "after": "24h", "task": {"title": "Позвонить клиенту: заказ {order.number} не оплачен",
                                              "deadline": "4h"}}],
         "assign": {"order": {"system": "crm", "chain": [{"manager": "3"}]}}}


def order(n: int, **kw):
    return {"number": f"A-{n}", "status": "new", "total": "1000.00", "date": "2026-11-01T10:00:00+00:00", **kw}


def test_timer_fires_once(store: Store) -> None:
    w = World(store, TIMER)
    w.remote["shop"].edit("order", "o1", **order(1, paid=False))
    w.remote["shop"].edit("order", "o2", **order(2, paid=True))
    w.syncer.until_quiet()
    assert w.tick(NOW + 23 * H) == 0                 # not yet
    assert w.tick(NOW + 25 * H) == 1
    w.syncer.until_quiet()
    assert w.tick(NOW + 26 * H) == 0                 # tick twice: still one task
    w.syncer.until_quiet()
    tasks = w.tasks()
    assert len(tasks) == 1
    task = tasks[0]
    assert task["title"] == "Позвонить клиенту: заказ A-1 не оплачен" and task["responsible"] == "3"
    crm_ext = next(k for k, o in w.remote["crm"].objects["order"].items() if o["number"] == "A-1")
    assert task["rule"] == "unpaid 24h" and task["order_id"] == crm_ext
    assert dt.datetime.fromisoformat(str(task["deadline"])) == NOW + 29 * H
    assert w.syncer.pass_once().pushed == 0


def test_timer_restarts_on_a_new_entry_into_the_condition(store: Store) -> None:
    w = World(store, TIMER)
    w.remote["shop"].edit("order", "o1", **order(1, paid=False))
    w.syncer.until_quiet()
    assert w.tick(NOW + 25 * H) == 1
    w.remote["shop"].edit("order", "o1", paid=True)       # leaves the condition
    w.syncer.until_quiet()
    assert w.tick(NOW + 26 * H) == 0
    w.remote["shop"].edit("order", "o1", paid=False)      # and enters it again: a new wait
    w.syncer.until_quiet()
    assert w.tick(NOW + 20 * H) == 0                      # the wait counts from the new entry
    assert w.tick(NOW + 30 * H) == 1
    assert w.tick(NOW + 50 * H) == 0
    w.syncer.until_quiet()
    assert len(w.tasks()) == 2


def test_timer_per_stage_entry(store: Store) -> None:
    rules = {"timers": [{"name": "stuck", "entity": "order", "when": "order.stage in ['L_READY', 'L_WAIT']",
                         "after": "14d", "task": {"title": "Нет первого заказа: {order.number}"}}]}
    w = World(store, rules)
    w.remote["crm"].edit("order", "d1", **order(1, stage="L_READY", pipeline="1", responsible="1"))
    w.syncer.until_quiet()
    assert w.tick(NOW + 15 * D) == 1
    w.remote["crm"].edit("order", "d1", stage="L_WAIT")
    w.syncer.until_quiet()
    # a new stage entry (the stage moved at ~NOW) while the condition still holds: one more task
    assert w.tick(NOW + 16 * D) == 1
    assert w.tick(NOW + 31 * D) == 0
    w.syncer.until_quiet()
    assert [t["title"] for t in w.tasks()] == ["Нет первого заказа: A-1"] * 2


def test_repeat_sales_task_once_per_client(store: Store) -> None:
    rules = {"repeat_sales": {"after": "30d", "task": {"title": "Позвонить: повторный заказ", "deadline": "1d"}}}
    w = World(store, rules)
    shop = w.remote["shop"]
    shop.edit("person", "p1", name="Один заказ", email="one@example.ru", responsible="5")
    shop.edit("person", "p2", name="Два заказа", email="two@example.ru", responsible="5")
    shop.edit("person", "p3", name="Не выиграл", email="none@example.ru", responsible="5")
    shop.edit("order", "o1", **order(1, customer_id="p1", status="completed", responsible="7"))
    shop.edit("order", "o1b", **order(11, customer_id="p1", status="canceled"))
    shop.edit("order", "o2", **order(2, customer_id="p2", status="completed"))
    shop.edit("order", "o3", **order(3, customer_id="p2", status="completed"))
    shop.edit("order", "o4", **order(4, customer_id="p3", status="new"))
    w.syncer.until_quiet()
    assert w.tick(NOW + 29 * D) == 0
    assert w.tick(NOW + 31 * D) == 1
    assert w.tick(NOW + 32 * D) == 0
    w.syncer.until_quiet()
    tasks = w.tasks()
    assert len(tasks) == 1
    assert tasks[0]["title"] == "Позвонить: повторный заказ" and tasks[0]["responsible"] == "5"
    assert tasks[0]["person_id"] is not None
    # the marker goes, the task stays: still once
    store.kv_set("rules:repeat:" + w.entity_id("shop", "person", "p1"), None)
    with store.begin() as c:
        from syncd.store import tables as t
        c.execute(t.kv.delete().where(t.kv.c.key.like("rules:repeat:%")))
    assert w.tick(NOW + 40 * D) == 0


def test_metrics_written_only_when_changed(store: Store) -> None:
    rules = {"metrics": {"window": "90d"}}
    w = World(store, rules)
    shop = w.remote["shop"]
    shop.edit("person", "p1", name="Клиент", email="c@example.ru")
    shop.edit("order", "o1", **order(1, customer_id="p1", total="100.00", date=(NOW - 10 * D).isoformat(),
                                     status="completed"))
    shop.edit("order", "o2", **order(2, customer_id="p1", total="50.50", date=(NOW - 100 * D).isoformat()))
    shop.edit("order", "o3", **order(3, customer_id="p1", total="999", date=(NOW - 5 * D).isoformat(),
                                     status="canceled"))
    w.syncer.until_quiet()
    assert w.tick(NOW) == 1
    w.syncer.until_quiet()
    crm_person = next(iter(w.remote["crm"].objects["person"].values()))
    pid = w.entity_id("shop", "person", "p1")
    f = store.entity(pid)["fields"]
    assert f["person.turnover"] == Decimal("100.00")
    assert f["person.orders_count"] == 2 and f["person.won_count"] == 1
    assert f["person.average_order"] == Decimal("75.25")
    assert f["person.first_order_at"] == NOW - 100 * D and f["person.last_order_at"] == NOW - 10 * D
    assert crm_person["orders_count"] == 2
    writes = w.remote["crm"].writes
    assert w.tick(NOW) == 0                       # unchanged: nothing planned or written
    assert w.syncer.pass_once().pushed == 0 and w.remote["crm"].writes == writes
    shop.edit("order", "o4", **order(4, customer_id="p1", total="10", date=NOW.isoformat()))
    w.syncer.until_quiet()
    assert w.tick(NOW) == 1
    assert store.entity(pid)["fields"]["person.orders_count"] == 3


_orders = st.lists(st.fixed_dictionaries({
    "total": st.decimals(min_value=0, max_value=10 ** 6, places=2, allow_nan=False, allow_infinity=False),
    "age_days": st.integers(min_value=-5, max_value=400),
    "status": st.sampled_from(["new", "completed", "canceled", "paid"]),
    "dated": st.booleans(),
}), max_size=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=_orders, window=st.integers(min_value=1, max_value=365))
def test_metrics_match_a_straightforward_recomputation(history, window) -> None:
    created = NOW - 3 * D
    rows = []
    for o in history:
        f = {"order.total": o["total"], "order.status": o["status"]}
        if o["dated"]:
            f["order.date"] = NOW - o["age_days"] * D
        rows.append((f, created))
    got = compute(rows, NOW, dt.timedelta(days=window), expr.parse("order.status == 'completed'"),
                  expr.parse("order.canceled == true or order.status == 'canceled'"))
    kept = [(o, (NOW - o["age_days"] * D) if o["dated"] else created) for o in history if o["status"] != "canceled"]
    assert got["orders_count"] == len(kept)
    assert got["won_count"] == sum(1 for o, _ in kept if o["status"] == "completed")
    assert got["turnover"] == sum((o["total"] for o, d in kept if NOW - dt.timedelta(days=window) <= d <= NOW),
                                  Decimal(0))
    dates = [d for _, d in kept]
    assert got["first_order_at"] == (min(dates) if dates else None)
    assert got["last_order_at"] == (max(dates) if dates else None)
    if kept:
        exact = sum((o["total"] for o, _ in kept), Decimal(0)) / len(kept)
        assert abs(got["average_order"] - exact) <= Decimal("0.005")
    else:
        assert got["average_order"] is None


def test_metrics_over_a_generated_history_through_the_store(store: Store) -> None:
    import random
    rnd = random.Random(7)
    w = World(store, {"metrics": {"window": "30d", "fields": ["turnover", "orders_count", "won_count"]}})
    shop = w.remote["shop"]
    expected: dict[str, dict] = {}
    for p in range(5):
        shop.edit("person", f"p{p}", name=f"Клиент {p}", email=f"p{p}@example.ru")
        expected[f"p{p}"] = {"turnover": Decimal(0), "orders_count": 0, "won_count": 0}
    for i in range(60):
        p = f"p{rnd.randrange(5)}"
        total = Decimal(rnd.randrange(1, 100000)) / 100
        age = rnd.randrange(0, 60)
        status = rnd.choice(["new", "completed", "canceled"])
        shop.edit("order", f"o{i}", **order(i, customer_id=p, total=str(total), status=status,
                                            date=(NOW - age * D).isoformat()))
        if status != "canceled":
            e = expected[p]
            e["orders_count"] += 1
            e["won_count"] += status == "completed"
            if age <= 30:
                e["turnover"] += total
    w.syncer.until_quiet()
    w.tick(NOW)
    for p, e in expected.items():
        f = store.entity(w.entity_id("shop", "person", p))["fields"]
        if e["orders_count"] == 0 and "person.orders_count" not in f:
            continue
        assert (f["person.turnover"], f["person.orders_count"], f["person.won_count"]) == \
            (e["turnover"], e["orders_count"], e["won_count"])
