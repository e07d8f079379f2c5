"""RetailCRM write throughput under the account's rate limit: our write path vs the official client.

Task (issue 24): N orders (default 1,000), one product line each, pushed to the RetailCRM sandbox with
its limit ON (token bucket per API key: 10 requests/s, burst 10, excess answered 503). About 30% of
the orders (i % 10 in {0, 3, 6}) are by KNOWN buyers: customers that are in the account before the
run (made through the sandbox control API as a manager's, with the shop's externalId, equally in both
accounts, before timing); each order references its customer by CRM id. The other 70% are by NEW
buyers, one new customer per order, who must be created first.

Counted: requests that reached the API in the timed window, from the sandbox's request log — all of
them (503 refusals too) and those the limit let through. Per order, against the minimum the modelled
endpoints allow: one ``customers/create`` per new buyer + one ``orders/create`` per order, so
(new buyers + N) / N = 1.7 requests per order here. RetailCRM also has batch endpoints
(``orders/upload`` and ``customers/upload``, up to 50 records a request — RetailCRM's own WooCommerce
module uploads orders in chunks of 50); the sandbox does not model them (404 "API method not found"),
neither run uses them, and with them the live minimum would be about 50 times lower (ceil(700/50) +
ceil(1000/50) = 34 requests for 1,000 orders). Ceiling in orders/s: 10 requests/s / 1.7 = 5.9.

Ours: `RetailCRMConnector.write_many` with the connector's own token bucket (rate 10, burst 10; no
daemon context), handed the ops in parts of the connector's `write_part` (20) as the push pipeline
does: customers first, then orders referencing them by id (``customer_id``). Each part first looks
up the externalIds of its creates (``filter[externalIds][]``, one GET per kind per part) — the price of
never creating a record twice after a lost answer; those look-ups are counted as requests (``--unsent``
marks the ops never-sent, as the pipeline does once the streams are read through, which skips them).

Theirs (the same-run anchor): the official client ``retailcrm`` 5.3.0, unmodified, in its own venv
(tests/sandbox/crm_clients.py: it pins an older requests), as a subprocess against a FRESH sandbox
with the same limit, done the simplest way: for each order, ``customer_create`` for a new buyer, then
``order_create`` with ``customer: {id}``. The client does not retry a 503; the driver re-sends after a
short sleep (0.1 s), the simplest honest thing a user would write.

Both runs start with the account's bucket drained (10 ``/api/credentials`` calls through the same
client just before timing), so the burst is not free in either. After each run the sandbox's state is
checked: exactly the expected orders (by externalId, each with its expected customer) and customers
(known + one per new buyer), no duplicates, none missing.

Time: ~1,750 requests a run at 10/s, so ~3 minutes a run, ~6-7 minutes in all at --n 1000.

Usage: python bench/retailcrm.py [--n 1000] [--unsent] [--skip-theirs]
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests

from connectors.retailcrm.connector import RetailCRMConnector
from connectors.retailcrm.settings import RetailCRMSettings
from syncd.connector import WriteOp
from syncd.sandbox.retailcrm import start

LIMIT = 10.0                     # requests/s per key (sandbox and the connector's settings)
BURST = 10.0
FIRST = ["Иван", "Анна", "Пётр", "Ольга", "Сергей", "Мария", "Алексей", "Елена"]
LAST = ["Петров", "Смирнова", "Кузнецов", "Иванова", "Соколов", "Попова", "Лебедев", "Козлова"]
RETRY_SLEEP = 0.1

# The anchor's driver, run by the official client's venv python; P comes on stdin.
DRIVER = r'''
import json, sys, time
import retailcrm

P = json.loads(sys.stdin.read())
client = retailcrm.v5(P["url"], P["api_key"])
refused = 0

def call(fn, *args):
    """The client gives a 503 back as an answer: send it again after a short sleep."""
    global refused
    while True:
        r = fn(*args)
        if r.get_status_code() != 503:
            return r
        refused += 1
        time.sleep(P["sleep"])

for _ in range(P["warm"]):
    call(client.api_credentials)
t0 = time.time()
failed, first_error = 0, None
for job in P["jobs"]:
    cid = job["customer_id"]
    if cid is None:
        r = call(client.customer_create, job["customer"])
        if not r.is_successful():
            failed += 1
            first_error = first_error or f"customer_create {r.get_status_code()} {r.get_response()}"
            continue
        cid = r.get_response()["id"]
    order = dict(job["order"], customer={"id": cid})
    r = call(client.order_create, order)
    if not r.is_successful():
        failed += 1
        first_error = first_error or f"order_create {r.get_status_code()} {r.get_response()}"
t1 = time.time()
print(json.dumps({"t0": t0, "t1": t1, "failed": failed, "first_error": first_error, "refused_seen": refused}))
'''


# -- the data (the same for both runs) ------------------------------------------------------------
def is_known(i: int) -> bool:
    return i % 10 in (0, 3, 6)


def known_customer(j: int) -> dict[str, Any]:
    return {"externalId": f"shop-k{j}", "firstName": FIRST[j % 8], "lastName": LAST[(j // 8) % 8],
            "email": f"known{j}@example.ru", "phones": [{"number": f"+7 915 {j:07d}"}]}


def customer_fields(i: int) -> dict[str, Any]:
    return {"firstName": FIRST[(i + 3) % 8], "lastName": LAST[(i // 8) % 8], "email": f"buyer{i}@example.ru",
            "phones": [f"+7 916 {i:07d}"]}


def order_fields(i: int, c: dict[str, Any]) -> dict[str, Any]:
    return {"firstName": c["firstName"], "lastName": c["lastName"], "email": c["email"],
            "phone": f"+7 917 {i:07d}", "customerComment": f"Заказ №{100000 + i}",
            "items": [{"productName": f"Товар {i % 37}", "initialPrice": str(500 + i % 900), "quantity": "1"}]}


def plan(n: int) -> tuple[list[int], list[int]]:
    """(orders by known buyers, orders by new buyers); known buyer j is order known[j]'s."""
    known = [i for i in range(n) if is_known(i)]
    return known, [i for i in range(n) if not is_known(i)]


def cust_key(i: int) -> str:
    return f"bench-c{i}"


def order_key(i: int) -> str:
    return f"bench-o{i}"


# -- sandbox helpers --------------------------------------------------------------------------------
def new_account(n: int) -> tuple[Any, list[str]]:
    """A fresh sandbox with the limit on, holding the known buyers (made by a manager, via the control
    API, before timing); -> (handle, CRM ids of known buyer j)."""
    h = start(rate_limit=True)
    s = requests.Session()
    r = s.patch(f"{h.url}/_sandbox/limits", json={"enabled": True, "rate": LIMIT, "burst": BURST}, timeout=30)
    r.raise_for_status()
    ids = []
    for j in range(len(plan(n)[0])):
        r = s.post(f"{h.url}/_sandbox/ui/customers", json={"customer": known_customer(j)}, timeout=30)
        r.raise_for_status()
        ids.append(str(r.json()["id"]))
    s.close()
    return h, ids


def log_between(h: Any, t0: float, t1: float) -> dict[str, Any]:
    entries = requests.get(f"{h.url}/_sandbox/log", timeout=60).json()["entries"]
    mine = [e for e in entries if e["path"].startswith("/api/") and t0 <= e["ts"] <= t1 + 0.5]
    refused = [e for e in mine if e.get("fault") == "rate_limit"]
    passed = [e for e in mine if e.get("fault") != "rate_limit"]
    kinds = Counter(f"{e['method']} {e['path'].removeprefix('/api/v5/')}" for e in passed)
    return {"sent": len(mine), "passed": len(passed), "refused": len(refused), "by_call": dict(kinds),
            "errors": sum(1 for e in passed if int(e.get("status") or 0) >= 400)}


def verify(h: Any, n: int, known_ids: list[str]) -> dict[str, Any]:
    """The account holds exactly the expected orders and customers (sandbox state, under its lock)."""
    sb = h.extra["state"]
    known, new = plan(n)
    with sb.lock:
        orders = list(sb.orders.values())
        customers = list(sb.customers.values())
    c_keys = Counter(c.get("externalId") for c in customers)
    o_keys = Counter(o.get("externalId") for o in orders)
    want_c = {f"shop-k{j}" for j in range(len(known))} | {cust_key(i) for i in new}
    want_o = {order_key(i) for i in range(n)}
    by_key = {c.get("externalId"): str(c["id"]) for c in customers}
    expected_customer = {order_key(i): known_ids[j] for j, i in enumerate(known)}
    expected_customer.update({order_key(i): by_key.get(cust_key(i)) for i in new})
    wrong_link = sum(1 for o in orders if expected_customer.get(o.get("externalId"))
                     != str((o.get("customer") or {}).get("id")))
    res = {"orders": len(orders), "customers": len(customers),
           "order_dups": sum(v - 1 for v in o_keys.values() if v > 1),
           "customer_dups": sum(v - 1 for v in c_keys.values() if v > 1),
           "orders_missing": len(want_o - set(o_keys)), "customers_missing": len(want_c - set(c_keys)),
           "orders_extra": len(set(o_keys) - want_o), "customers_extra": len(set(c_keys) - want_c),
           "wrong_customer": wrong_link}
    res["ok"] = (res["orders"] == n and res["customers"] == len(want_c) and not any(
        res[k] for k in ("order_dups", "customer_dups", "orders_missing", "customers_missing", "orders_extra",
                         "customers_extra", "wrong_customer")))
    return res


# -- ours -------------------------------------------------------------------------------------------
def op(kind: str, i: int, key: str, fields: dict[str, Any], unsent: bool) -> WriteOp:
    return WriteOp(op_id=f"b-{key}", system="retailcrm", kind=kind, op="create", entity=kind, entity_id=key,
                   external_id=None, fields=fields, external_key=key, unsent=unsent, full=fields)


def run_ours(n: int, unsent: bool) -> dict[str, Any]:
    h, known_ids = new_account(n)
    try:
        settings = RetailCRMSettings(url=h.url, api_key=h.extra["api_key"], rate=LIMIT, burst=BURST)
        conn = RetailCRMConnector("retailcrm", settings, ctx=None)
        part = int(conn.write_part)
        known, new = plan(n)
        for _ in range(int(BURST)):                        # warm-up: the account's bucket drained
            conn.client.get("/api/credentials")
        t0 = time.time()
        cops = [op("customer", i, cust_key(i), customer_fields(i), unsent) for i in new]
        results: list[Any] = []
        for k in range(0, len(cops), part):
            results += conn.write_many(cops[k:k + part])
        cid = {i: getattr(r, "external_id", None) for i, r in zip(new, results)}
        cid.update({i: known_ids[j] for j, i in enumerate(known)})
        failed = [r for r in results if isinstance(r, Exception)]
        kset = {i: j for j, i in enumerate(known)}
        oops = [op("order", i, order_key(i), {**order_fields(i, _known_plain(kset[i]) if i in kset
                                                             else customer_fields(i)),
                                              "customer_id": cid[i]}, unsent)
                for i in range(n) if cid.get(i)]
        for k in range(0, len(oops), part):
            res = conn.write_many(oops[k:k + part])
            failed += [r for r in res if isinstance(r, Exception)]
        t1 = time.time()
        out = {"seconds": t1 - t0, "failed": len(failed), "first_error": str(failed[0]) if failed else None,
               "client_limit_hits": conn.client.limit_hits, **log_between(h, t0, t1),
               "verify": verify(h, n, known_ids)}
        conn.close()
        return out
    finally:
        h.stop()


def _known_plain(j: int) -> dict[str, Any]:
    c = known_customer(j)
    return {"firstName": c["firstName"], "lastName": c["lastName"], "email": c["email"]}


# -- theirs -----------------------------------------------------------------------------------------
def client_python() -> Path:
    sys.path.insert(0, str(ROOT / "tests" / "sandbox"))
    import crm_clients  # noqa: PLC0415 - stdlib-only helper that knows (and prepares) the clients' venv
    return crm_clients.ensure_venv()


def run_theirs(n: int) -> dict[str, Any]:
    py = client_python()
    h, known_ids = new_account(n)
    try:
        known, new = plan(n)
        kset = {i: j for j, i in enumerate(known)}
        jobs = []
        for i in range(n):
            if i in kset:
                c = _known_plain(kset[i])
                jobs.append({"customer_id": int(known_ids[kset[i]]), "customer": None,
                             "order": {"externalId": order_key(i), **_order_entity(i, c)}})
            else:
                f = customer_fields(i)
                jobs.append({"customer_id": None,
                             "customer": {"externalId": cust_key(i), "firstName": f["firstName"],
                                          "lastName": f["lastName"], "email": f["email"],
                                          "phones": [{"number": p} for p in f["phones"]]},
                             "order": {"externalId": order_key(i), **_order_entity(i, f)}})
        params = {"url": h.url, "api_key": h.extra["api_key"], "jobs": jobs, "warm": int(BURST),
                  "sleep": RETRY_SLEEP}
        r = subprocess.run([str(py), "-c", DRIVER], input=json.dumps(params), capture_output=True, text=True,
                           timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"the retailcrm driver failed ({r.returncode}):\n{r.stderr[-3000:]}")
        got = json.loads([x for x in r.stdout.splitlines() if x.strip()][-1])
        return {"seconds": got["t1"] - got["t0"], "failed": got["failed"], "first_error": got["first_error"],
                "refused_seen": got["refused_seen"], **log_between(h, got["t0"], got["t1"]),
                "verify": verify(h, n, known_ids)}
    finally:
        h.stop()


def _order_entity(i: int, c: dict[str, Any]) -> dict[str, Any]:
    return order_fields(i, c)


# -- report -----------------------------------------------------------------------------------------
def describe(name: str, n: int, r: dict[str, Any], minimum: float) -> str:
    v = r["verify"]
    check = "OK" if v["ok"] else "WRONG " + json.dumps({k: x for k, x in v.items() if k != "ok" and x})
    return (f"{name}: {n} orders in {r['seconds']:.1f} s = {n / r['seconds']:.2f} orders/s; "
            f"{r['passed']} requests let through = {r['passed'] / r['seconds']:.2f} req/s "
            f"(limit {LIMIT:.0f} -> {r['passed'] / r['seconds'] / LIMIT:.3f}); {r['refused']} refused (503); "
            f"requests/order {r['passed'] / n:.3f} let through, {r['sent'] / n:.3f} sent "
            f"(minimum {minimum:.3f}); failed {r['failed']}\n"
            f"        calls: {json.dumps(r['by_call'], ensure_ascii=False)}\n"
            f"        account: {v['orders']} orders, {v['customers']} customers -> {check}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="orders (~30%% by known buyers, the rest by new ones)")
    ap.add_argument("--unsent", action="store_true", help="ours: ops never sent before (no look-ups)")
    ap.add_argument("--skip-theirs", action="store_true", help="do not run the official client")
    a = ap.parse_args()
    n = a.n
    known, new = plan(n)
    min_req = len(new) + n
    minimum = min_req / n
    print(f"task: {n} orders, {len(known)} by known buyers, {len(new)} by new buyers; limit {LIMIT:.0f} req/s "
          f"burst {BURST:.0f}; minimum {min_req} requests ({len(new)} customers/create + {n} orders/create) = "
          f"{minimum:.3f}/order; ceiling {LIMIT / minimum:.2f} orders/s")
    ours = run_ours(n, a.unsent)
    print(describe("ours", n, ours, minimum))
    if ours["first_error"]:
        print(f"        first error: {ours['first_error']}")
    o_ops = n / ours["seconds"]
    o_rpo = ours["passed"] / n
    theirs = None
    if not a.skip_theirs:
        theirs = run_theirs(n)
        print(describe("retailcrm 5.3.0 (official client, retry 503 after 0.1 s)", n, theirs, minimum))
        if theirs["first_error"]:
            print(f"        first error: {theirs['first_error']}")
    t_ops = n / theirs["seconds"] if theirs else None
    t_rpo = theirs["passed"] / n if theirs else None
    ratio = {"orders_per_s": round(o_ops / t_ops, 3) if t_ops else None,
             "requests_per_order": round(o_rpo / t_rpo, 3) if t_rpo else None,
             "requests_sent_per_order": round((ours["sent"] / n) / (theirs["sent"] / n), 3) if theirs else None}
    print(f"ours / official client: orders/s {ratio['orders_per_s']}, requests per order (let through) "
          f"{ratio['requests_per_order']}, requests per order (sent, incl. 503s) {ratio['requests_sent_per_order']}")
    print(f"ours / minimum: requests per order {o_rpo / minimum:.3f}; ours / ceiling: orders/s "
          f"{o_ops / (LIMIT / minimum):.3f}; ours req/s / limit {ours['passed'] / ours['seconds'] / LIMIT:.3f}")
    print(json.dumps({
        "n": n, "known_buyers": len(known), "new_buyers": len(new), "unsent": a.unsent,
        "orders_per_s": round(o_ops, 3), "req_per_s": round(ours["passed"] / ours["seconds"], 3),
        "limit_ratio": round(ours["passed"] / ours["seconds"] / LIMIT, 3),
        "req_per_order": round(o_rpo, 3), "sent_per_order": round(ours["sent"] / n, 3),
        "min_req_per_order": round(minimum, 3), "vs_minimum": round(o_rpo / minimum, 3),
        "ceiling_ratio": round(o_ops / (LIMIT / minimum), 3), "limit_hits": ours["refused"],
        "verified": ours["verify"]["ok"],
        "theirs_orders_per_s": round(t_ops, 3) if t_ops else None,
        "theirs_req_per_order": round(t_rpo, 3) if t_rpo else None,
        "theirs_sent_per_order": round(theirs["sent"] / n, 3) if theirs else None,
        "theirs_limit_hits": theirs["refused"] if theirs else None,
        "theirs_verified": theirs["verify"]["ok"] if theirs else None,
        "vs_official_orders_per_s": ratio["orders_per_s"], "vs_official_req_per_order": ratio["requests_per_order"],
        "vs_official_sent_per_order": ratio["requests_sent_per_order"]}))


if __name__ == "__main__":
    main()
