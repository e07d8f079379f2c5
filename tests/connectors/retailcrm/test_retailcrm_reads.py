"""Reads: history as the change feed, the first read of a filled account, fetch(), the rate limit."""

from __future__ import annotations

from typing import Any

from rchelpers import Account, op

from connectors.retailcrm import RetailCRMConnector, RetailCRMSettings
from syncd.connector import Batch
from syncd.sandbox.retailcrm import start


def drain(conn: RetailCRMConnector, stream: str, cursor: str | None) -> tuple[list[Any], str | None, list[Batch]]:
    batches = list(conn.read(stream, cursor))
    recs = [r for b in batches for r in b.records]
    for b in batches:
        if b.cursor is not None:
            cursor = b.cursor
    return recs, cursor, batches


def test_first_read_of_a_filled_account_then_history(account: Account) -> None:
    account.ctl("POST", "/seed", {"customers": 130})
    conn = account.connector()
    recs, cursor, batches = drain(conn, "customers", None)
    assert len(recs) == 130 and len({r.external_id for r in recs}) == 130
    assert all(b.cursor is None for b in batches[:-1]) and batches[-1].records == []   # cursor at the end only
    assert cursor == str(account.sb.history["customer"][-1]["id"]) and batches[0].total == 130
    # nothing new: nothing read
    assert drain(conn, "customers", cursor)[0] == []
    account.ui_edit("customers", recs[0].external_id, {"lastName": "Новая"})
    again, cursor2, _ = drain(conn, "customers", cursor)
    assert [(r.external_id, r.fields["lastName"]) for r in again] == [(recs[0].external_id, "Новая")]
    assert again[0].source_time is not None and int(cursor2) > int(cursor)


def test_history_reads_a_managers_edit_not_syncds_own(account: Account) -> None:
    conn = account.connector()
    _, cursor, _ = drain(conn, "orders", None)
    mine = conn.write(op("order", {"firstName": "Иван", "status": "new"}, key="syncd-a"))
    theirs = account.ui_order({"firstName": "Звонок"})
    conn.write(op("order", {"managerComment": "от syncd"}, key="syncd-a", ext=mine.external_id))
    recs, cursor, _ = drain(conn, "orders", cursor)
    assert [r.external_id for r in recs] == [str(theirs)]                 # syncd's create and edit skipped
    assert recs[0].fields["orderMethod"] == "phone" and recs[0].origin is None
    # a record both syncd and a person changed is read
    conn.write(op("order", {"managerComment": "снова syncd"}, key="syncd-a", ext=mine.external_id))
    account.ui_edit("orders", mine.external_id, {"status": "assembling"})
    recs, cursor, _ = drain(conn, "orders", cursor)
    assert [(r.external_id, r.fields["status"], r.fields["managerComment"]) for r in recs] == [
        (mine.external_id, "assembling", "снова syncd")]
    # another key's API writes are edits too (not syncd's)
    assert drain(conn, "orders", cursor)[0] == []


def test_history_pages_over_many_records_nothing_missed_or_repeated(account: Account) -> None:
    conn = account.connector()
    _, cursor, _ = drain(conn, "customers", None)
    made = [account.ctl("POST", "/ui/customers", {"customer": {"firstName": f"К{i}"}})["id"] for i in range(150)]
    for cid in made[:60]:
        account.ui_edit("customers", cid, {"lastName": "Ф"})                 # 210 history records in all
    batches = list(conn.read("customers", cursor))
    assert len(batches) == 3 and [b.cursor for b in batches] == sorted(b.cursor for b in batches)
    seen = [r.external_id for b in batches for r in b.records]
    assert set(seen) == {str(c) for c in made}
    # resumed from the middle cursor: only what followed, and the last cursor reads nothing more
    later = [r.external_id for b in conn.read("customers", batches[0].cursor) for r in b.records]
    assert set(later) | {r.external_id for r in batches[0].records} == set(seen)
    assert list(r for b in conn.read("customers", batches[-1].cursor) for r in b.records) == []
    assert all(b.cursor is not None for b in batches)


def test_deleted_order_reads_as_deleted(account: Account) -> None:
    conn = account.connector()
    oid = account.ui_order({"firstName": "Гость"})
    _, cursor, _ = drain(conn, "orders", None)
    account.ctl("DELETE", f"/ui/orders/{oid}")
    recs, _, _ = drain(conn, "orders", cursor)
    assert [(r.external_id, r.deleted) for r in recs] == [(str(oid), True)]


def test_fetch_and_corporate_customers(account: Account) -> None:
    conn = account.connector()
    res = conn.write(op("customer_corporate", {"nickName": "ООО Ромашка", "INN": "7707083893", "KPP": "770701001",
                                               "email": "info@romashka.ru", "phones": ["+74951234567"]},
                        key="syncd-co", entity="company"))
    oid = account.ui_order({"firstName": "Гость"})
    recs = {r.external_id: r for r in conn.fetch("customer_corporate", [res.external_id, "999"])}
    assert list(recs) == [res.external_id]
    f = recs[res.external_id].fields
    assert (f["nickName"], f["INN"], f["KPP"], f["email"], f["phones"]) == (
        "ООО Ромашка", "7707083893", "770701001", "info@romashka.ru", ["+74951234567"])
    orders = list(conn.fetch("order", [str(oid)]))
    assert [o.fields["firstName"] for o in orders] == ["Гость"] and orders[0].fields["customer_id"]
    assert conn.fetchable == frozenset({"order", "customer", "customer_corporate"})


def test_rate_limit_is_honoured_and_503s_recovered() -> None:
    h = start(rate_limit=True)
    try:
        sb = h.extra["state"]
        sb.limits.rate, sb.limits.burst = 5.0, 5.0                  # the account is stricter than configured
        conn = RetailCRMConnector("crm", RetailCRMSettings(url=h.url, api_key=h.extra["api_key"], rate=10, burst=10))
        for i in range(25):
            conn.write(op("customer", {"firstName": f"К{i}"}, key=f"syncd-c{i}", unsent=True, entity="person"))
        assert len(sb.customers) == 25
        limited = [e for e in sb.log if e.get("fault") == "rate_limit"]
        assert limited and conn.client.limit_hits == len(limited)
        assert all(e["status"] == 503 for e in limited)
    finally:
        h.stop()
