"""Writes: externalId keys, lost answers, grouped look-ups, items, phones, tasks."""

from __future__ import annotations

from rchelpers import Account, op

from syncd.errors import PermanentError

ORDER = {"firstName": "Иван", "lastName": "Петров", "email": "ivan@example.com", "status": "new",
         "delivery_cost": "300.00", "delivery_address": "Москва, Тверская 1", "customerComment": "позвонить",
         "items": [{"offer": "sku-1", "productName": "Кружка", "initialPrice": "450.00", "quantity": "2"},
                   {"offer": None, "productName": "Ложка", "initialPrice": "99.50", "quantity": "1"}]}


def test_create_order_carries_the_shop_id_and_a_lost_answer_makes_one_order(account: Account) -> None:
    conn = account.connector()
    account.faults(lose_next=1, path="/api/v5/orders/create")
    # never sent before: the first attempt skips the look-up; its answer is lost; the retry looks up
    res = conn.write(op("order", {**ORDER, "number": "1001"}, key="1001", origin=("shop", "1001"), unsent=True))
    assert res.found is True
    orders = account.orders()
    assert len(orders) == 1 and orders[0]["externalId"] == "1001" and orders[0]["number"] == "1001"
    assert str(orders[0]["id"]) == res.external_id
    creates = [e for e in account.log() if e["path"].endswith("/orders/create")]
    assert [e.get("fault") for e in creates] == ["lost_answer"]
    # the order reads back bound to the shop order (as the shop module's orders are)
    rec = next(iter(conn.fetch("order", [res.external_id])))
    assert rec.stamp == "1001" and rec.origin == ("shop", "1001")
    assert rec.fields["totalSumm"] == "1299.50" and rec.fields["delivery_cost"] == "300.00"
    assert rec.fields["items"][0] == {"offer": "sku-1", "productName": "Кружка", "initialPrice": "450",
                                      "quantity": "2"}


def test_a_record_from_no_shop_carries_syncds_key_and_reads_back_without_origin(account: Account) -> None:
    conn = account.connector()
    res = conn.write(op("customer", {"firstName": "Анна", "phones": ["+79001112233"]}, key="mem-m1",
                        origin=("mem", "m1"), entity="person"))
    c = account.sb.customers[int(res.external_id)]
    assert c["externalId"] == "mem-m1" and not res.found
    rec = next(iter(conn.fetch("customer", [res.external_id])))
    assert rec.stamp == "mem-m1" and rec.origin is None      # syncd's key: the engine decodes the stamp
    again = conn.write(op("customer", {"firstName": "Анна"}, key="mem-m1", origin=("mem", "m1")))
    assert again.found and again.external_id == res.external_id and len(account.sb.customers) == 1


def test_write_many_looks_many_keys_up_in_one_call(account: Account) -> None:
    conn = account.connector()
    for k in ("k1", "k3"):
        account.api("POST", "orders/create", data={"order": f'{{"externalId": "syncd-{k}", "firstName": "Было"}}'})
    account.clear_log()
    ops = [op("order", {"firstName": f"Заказ {i}"}, key=f"syncd-k{i}") for i in range(1, 6)]
    results = conn.write_many(ops)
    assert [r.found for r in results] == [True, False, True, False, False]
    assert len({r.external_id for r in results}) == 5 and len(account.orders()) == 5
    lookups = [e for e in account.log() if e["method"] == "GET" and e["path"] == "/api/v5/orders"]
    assert len(lookups) == 1
    assert {o["firstName"] for o in account.orders()} == {f"Заказ {i}" for i in range(1, 6)}   # found: updated


def test_items_are_the_whole_composition(account: Account) -> None:
    conn = account.connector()
    res = conn.write(op("order", ORDER, key="syncd-o1"))
    before = {it["productName"]: it["id"] for it in account.sb.orders[int(res.external_id)]["items"]}
    items = [{"offer": "sku-1", "productName": "Кружка", "initialPrice": "450.00", "quantity": "3"}]
    conn.write(op("order", {"items": items}, key="syncd-o1", ext=res.external_id))
    o = account.sb.orders[int(res.external_id)]
    assert [(it["id"], it["productName"], it["quantity"]) for it in o["items"]] == [(before["Кружка"], "Кружка", 3)]
    assert o["summ"] == 1350 and o["totalSumm"] == 1650


def test_phones_are_merged_never_deleted(account: Account) -> None:
    conn = account.connector()
    cid = account.ctl("POST", "/ui/customers", {"customer": {"firstName": "Пётр", "phones": ["+7 (900) 111-22-33"]}})["id"]
    conn.write(op("customer", {"phones": ["89001112233", "+79005556677"]}, ext=str(cid), entity="person"))
    assert [p["number"] for p in account.sb.customers[cid]["phones"]] == ["+7 (900) 111-22-33", "+79005556677"]
    account.clear_log()
    conn.write(op("customer", {"phones": ["+79005556677"]}, ext=str(cid), entity="person"))
    assert not [e for e in account.log() if e["method"] == "POST"]                  # nothing new: no edit
    assert len(account.sb.customers[cid]["phones"]) == 2


def test_validation_error_is_permanent_and_names_the_field(account: Account) -> None:
    conn = account.connector()
    try:
        conn.write(op("order", {"firstName": "X", "status": "nope"}, key="syncd-bad"))
    except PermanentError as exc:
        assert "Order is not loaded" in str(exc) and "status" in str(exc) and "syncd-bad" in str(exc)
    else:
        raise AssertionError("expected a PermanentError")
    assert account.orders() == []


def test_tasks_are_idempotent(account: Account) -> None:
    conn = account.connector()
    oid = account.ui_order({"firstName": "Гость"})
    task = {"text": "Позвонить по заказу", "commentary": "повторный", "datetime": "2030-01-02T10:00:00",
            "performerId": "2", "order_id": str(oid)}
    account.faults(lose_next=1, path="/api/v5/tasks/create")
    first = conn.write(op("task", task, entity="task"))
    assert first.found is True                               # lost answer, retried: the open task is found
    again = conn.write(op("task", task, entity="task"))
    assert again.found is True and again.external_id == first.external_id
    tasks = account.ctl("GET", "/tasks")["tasks"]
    assert len(tasks) == 1 and tasks[0]["datetime"] == "2030-01-02 10:00" and tasks[0]["order"]["id"] == oid
    # another performer is another task; a completed task is not reused
    other = conn.write(op("task", {**task, "performerId": "3"}, entity="task"))
    assert not other.found
    account.ctl("PATCH", f"/ui/tasks/{first.external_id}", {"task": {"complete": True}})
    fresh = conn.write(op("task", task, entity="task"))
    assert not fresh.found and len(account.ctl("GET", "/tasks")["tasks"]) == 3
