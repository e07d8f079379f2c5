"""amoCRM write throughput under the integration's rate limit: our write path vs aioamocrm.

Task (issue 24): N orders (default 1,000) pushed to the amoCRM sandbox with its limit ON (token
bucket per integration: 7 requests/s, burst 7, excess answered 429 with nginx's HTML page), each
order a lead (name, price, the shop's order number SHOP_ORDER, syncd's key SYNCD_KEY) linked to its
buyer's contact. About 30% of the orders (i % 10 in {0, 3, 6}) are by KNOWN buyers: contacts that are
in the account before the run (made by a manager in the UI, equally in both accounts, before timing);
their leads name the contact by its amoCRM id. The other 70% are by NEW buyers, one new contact per
order (first/last name, PHONE, EMAIL, SYNCD_KEY), which must be created first. Both accounts are set
up as `syncd demo --crm amocrm` does (demo.seed_shop: the shop's pipeline, SYNCD_KEY and SHOP_ORDER);
leads take the main pipeline's first stage (no pipeline/status sent by either run).

Counted: requests that reached the API in the timed window, from the sandbox's request log — all of
them (429 refusals too) and those the limit let through.

Minimum. amoCRM takes up to 250 records per ``POST /api/v4/{contacts|leads}`` (the sandbox enforces
250, as documented) and up to 50 leads per ``POST /leads/complex`` (a lead with its one new or
existing contact). The two ways to do this task in the fewest requests:
  * contacts, then leads naming them: ceil(new/250) + ceil(N/250) = 3 + 4 = 7 requests for 1,000;
  * leads/complex, each lead carrying its new contact (or the known one's id): ceil(N/50) = 20.
The first is lower (for N >= ~100; the script takes the lower of the two), so the minimum is
ceil(new/250) + ceil(N/250) (0.007 requests per order at N = 1,000; a ceiling of 1,000 orders/s at 7
requests/s). Nothing else is needed: amoCRM answers a create with the new ids (matched by
request_id), so no read-back.

Ours: `AmoCRMConnector.write_many` with the connector's own token bucket (rate 7, burst 7; no daemon
context), handed WriteOps in parts of the connector's `write_part` (50) as the push pipeline does:
contacts first, then leads naming their contact (``contact_id``, set as main contact in
``_embedded`` on create), fields as mappings/amocrm.toml names them (name, price, SHOP_ORDER,
contact_id; PHONE/EMAIL/first_name/last_name for contacts), the key stamped from op.external_key.
`write_many` POSTs up to `write_part` creates at once with request_ids, so 50 per POST. Before each
create it looks the key up (``GET /{type}?query=<key>``, one per op) — the price of never creating
a record twice after a lost answer; those look-ups are counted (``--unsent`` marks the ops
never-sent, as the pipeline does once the streams are read through, which skips them). The
account's custom fields and pipelines are read before timing (the connector caches them, a daemon
has them long before).

Theirs (the same-run anchor): aioamocrm 0.1.1, unmodified, in its own venv (tests/sandbox/
crm_clients.py), as a subprocess against a FRESH sandbox with the same limit, done the simplest way
with its defaults: ``amo.contacts.create(contacts)`` then ``amo.leads.create(leads)`` with
``_embedded.contacts = [{id}]``, in its default batches of 50 (``--their-batch``; at 250 it would
need the minimum, 7). It spaces requests at 7/s itself but does not resend a write refused with 429
(it raises RateLimitError with the chunks saved so far): the driver resumes from the first unsaved
item after a short sleep (0.1 s), the simplest honest thing a user would write; refusals are counted
from the sandbox's log.

Both runs start with the integration's bucket drained: 7 ``GET /account`` calls just before timing
(ours through the connector's client, theirs through an aioamocrm client without its limiter — with
the limiter, paced at 7/s, they would not drain it). After each run the sandbox's state is checked:
exactly the expected contacts (known + one per new buyer, by SYNCD_KEY) and leads (by SYNCD_KEY, with
their name and price), each lead linked to exactly its expected contact, no duplicates, none missing.

Time: ours ~1,730 requests at 7/s with look-ups (~4 minutes), ~34 with ``--unsent``; theirs ~34
requests (seconds). About 4.5 minutes in all at --n 1000.

Usage: python bench/amocrm.py [--n 1000] [--unsent] [--skip-theirs] [--their-batch 50]
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests

from connectors.amocrm.connector import AmoCRMConnector
from connectors.amocrm.settings import AmoCRMSettings
from syncd.connector import WriteOp
from syncd.sandbox.amocrm import start, ui_write
from syncd.sandbox.amocrm.demo import seed_shop

LIMIT = 7.0                      # requests/s per integration (sandbox and the connector's settings)
BURST = 7.0
MAX_POST = 250                   # records per POST /contacts, /leads
MAX_COMPLEX = 50                 # leads per POST /leads/complex
FIRST = ["Иван", "Анна", "Пётр", "Ольга", "Сергей", "Мария", "Алексей", "Елена"]
LAST = ["Петров", "Смирнова", "Кузнецов", "Иванова", "Соколов", "Попова", "Лебедев", "Козлова"]
RETRY_SLEEP = 0.1

# The anchor's driver, run by the clients' venv python; P comes on stdin.
DRIVER = r'''
import asyncio, json, sys, time
from aioamocrm import AmoCRMClient, LongLivedToken, RateLimitError

P = json.loads(sys.stdin.read())
refused = 0


async def create_all(resource, bodies):
    """create() in its batches; a batch refused with 429 raises (aioamocrm does not resend writes)
    with the batches saved so far: resume from the first unsaved item after a short sleep."""
    global refused
    done = []
    while len(done) < len(bodies):
        try:
            done += await resource.create(bodies[len(done):], batch_size=P["batch"])
        except RateLimitError as exc:
            refused += 1
            done += exc.completed
            await asyncio.sleep(P["sleep"])
    return done


async def main():
    auth = LongLivedToken(P["token"])
    async with AmoCRMClient(base_url=P["url"], auth=auth, rate_limit=None) as warm:
        for _ in range(P["warm"]):
            await warm.account.get()
    async with AmoCRMClient(base_url=P["url"], auth=auth) as amo:     # its own limiter: 7/s
        t0 = time.time()
        refs = await create_all(amo.contacts, P["contacts"])
        ids = [r.id for r in refs]
        leads = []
        for job in P["leads"]:
            cid = job["contact_id"] if job["contact_id"] is not None else ids[job["new"]]
            leads.append(dict(job["lead"], _embedded={"contacts": [{"id": cid}]}))
        lrefs = await create_all(amo.leads, leads)
        t1 = time.time()
    return {"t0": t0, "t1": t1, "contacts": len(refs), "leads": len(lrefs), "refused_seen": refused}


print(json.dumps(asyncio.run(main())))
'''


# -- the data (the same for both runs) ------------------------------------------------------------
def is_known(i: int) -> bool:
    return i % 10 in (0, 3, 6)


def plan(n: int) -> tuple[list[int], list[int]]:
    """(orders by known buyers, orders by new buyers); known buyer j is order known[j]'s."""
    known = [i for i in range(n) if is_known(i)]
    return known, [i for i in range(n) if not is_known(i)]


def cust_key(i: int) -> str:
    return f"bench-c{i}"


def order_key(i: int) -> str:
    return f"bench-o{i}"


def known_contact(j: int) -> dict[str, Any]:
    """A buyer a manager typed in before (no syncd key)."""
    return {"first_name": FIRST[j % 8], "last_name": LAST[(j // 8) % 8], "custom_fields_values": [
        {"field_code": "PHONE", "values": [{"value": f"+7 915 {j:07d}", "enum_code": "WORK"}]},
        {"field_code": "EMAIL", "values": [{"value": f"known{j}@example.ru", "enum_code": "WORK"}]}]}


def contact_fields(i: int) -> dict[str, Any]:
    """A new buyer, as syncd names the fields (mappings/amocrm.toml)."""
    return {"first_name": FIRST[(i + 3) % 8], "last_name": LAST[(i // 8) % 8],
            "PHONE": [f"+7 916 {i:07d}"], "EMAIL": [f"buyer{i}@example.ru"]}


def lead_fields(i: int) -> dict[str, Any]:
    return {"name": f"Заказ №{100000 + i}", "price": 500 + i % 900, "SHOP_ORDER": str(100000 + i)}


# -- sandbox helpers --------------------------------------------------------------------------------
def new_account(n: int) -> tuple[Any, list[int]]:
    """A fresh sandbox with the limit on, set up for the shop, holding the known buyers (made by a
    manager in the UI, before timing); -> (handle, amoCRM ids of known buyer j)."""
    h = start(rate_limit=True)
    acc = h.extra["state"]
    seed_shop(acc)
    r = requests.patch(f"{h.url}/_sandbox/limits", json={"enabled": True, "rate": LIMIT, "burst": BURST},
                       timeout=30)
    r.raise_for_status()
    ids = [int(ui_write(acc, "contacts", known_contact(j))["id"]) for j in range(len(plan(n)[0]))]
    return h, ids


def log_between(h: Any, t0: float, t1: float) -> dict[str, Any]:
    entries = requests.get(f"{h.url}/_sandbox/log", params={"kind": "api"}, timeout=60).json()["entries"]
    mine = [e for e in entries if e["path"].startswith("/api/v4/") and t0 <= e["ts"] <= t1 + 0.5]
    refused = [e for e in mine if e.get("status") == 429]
    passed = [e for e in mine if e.get("status") != 429]
    kinds = Counter(f"{e['method']} {e['path'].removeprefix('/api/v4/')}" for e in passed)
    return {"sent": len(mine), "passed": len(passed), "refused": len(refused), "by_call": dict(kinds),
            "errors": sum(1 for e in passed if int(e.get("status") or 0) >= 400)}


def verify(h: Any, n: int, known_ids: list[int]) -> dict[str, Any]:
    """The account holds exactly the expected leads and contacts (sandbox state, under its lock)."""
    acc = h.extra["state"]
    known, new = plan(n)

    def key_of(rec: dict[str, Any]) -> str | None:
        for e in rec.get("custom_fields_values") or []:
            if e.get("field_code") == "SYNCD_KEY":
                return str((e.get("values") or [{}])[0].get("value"))
        return None

    with acc.lock:
        leads = [dict(r) for r in acc.records["leads"].values()]
        contacts = [dict(r) for r in acc.records["contacts"].values()]
        linked = {r["id"]: sorted(cid for cid, _ in acc.linked(("leads", r["id"]), "contacts")) for r in leads}
    c_keys = Counter(key_of(c) for c in contacts)
    l_keys = Counter(key_of(lead) for lead in leads)
    want_c = {cust_key(i) for i in new}
    want_l = {order_key(i) for i in range(n)}
    by_key = {key_of(c): c["id"] for c in contacts if key_of(c)}
    expected = {order_key(i): known_ids[j] for j, i in enumerate(known)}
    expected.update({order_key(i): by_key.get(cust_key(i)) for i in new})
    wrong_link = sum(1 for lead in leads if linked[lead["id"]] != [expected.get(key_of(lead))])
    want_fields = {order_key(i): (lead_fields(i)["name"], lead_fields(i)["price"]) for i in range(n)}
    wrong_fields = sum(1 for lead in leads if key_of(lead) in want_l
                       and (lead.get("name"), lead.get("price")) != want_fields[str(key_of(lead))])
    unkeyed = c_keys.pop(None, 0)          # the known buyers carry no key
    res = {"leads": len(leads), "contacts": len(contacts),
           "lead_dups": sum(v - 1 for v in l_keys.values() if v > 1),
           "contact_dups": sum(v - 1 for v in c_keys.values() if v > 1),
           "leads_missing": len(want_l - set(l_keys)), "contacts_missing": len(want_c - set(c_keys)),
           "leads_extra": len(set(l_keys) - want_l), "contacts_extra": len(set(c_keys) - want_c),
           "known_contacts": unkeyed, "wrong_contact": wrong_link, "wrong_fields": wrong_fields}
    res["ok"] = (res["leads"] == n and res["contacts"] == len(known) + len(new) and unkeyed == len(known)
                 and not any(res[k] for k in ("lead_dups", "contact_dups", "leads_missing", "contacts_missing",
                                              "leads_extra", "contacts_extra", "wrong_contact", "wrong_fields")))
    return res


# -- ours -------------------------------------------------------------------------------------------
def op(kind: str, entity: str, key: str, fields: dict[str, Any], unsent: bool) -> WriteOp:
    return WriteOp(op_id=f"b-{key}", system="amocrm", kind=kind, op="create", entity=entity, entity_id=key,
                   external_id=None, fields=fields, external_key=key, unsent=unsent, full=fields)


def run_ours(n: int, unsent: bool) -> dict[str, Any]:
    h, known_ids = new_account(n)
    try:
        settings = AmoCRMSettings(base_url=h.url, token=h.extra["long_lived_token"], rate=LIMIT, burst=BURST)
        conn = AmoCRMConnector("amocrm", settings, ctx=None)
        part = int(conn.write_part)
        known, new = plan(n)
        for kind in ("contact", "lead"):                   # what a daemon has cached long before
            conn.catalog.fields(kind)
        conn.catalog.pipelines()
        time.sleep(1.5)                                    # both buckets full again
        for _ in range(int(BURST)):                        # warm-up: the integration's bucket drained
            conn.client.get("account")
        t0 = time.time()
        cops = [op("contact", "person", cust_key(i), contact_fields(i), unsent) for i in new]
        results: list[Any] = []
        for k in range(0, len(cops), part):
            results += conn.write_many(cops[k:k + part])
        cid = {i: getattr(r, "external_id", None) for i, r in zip(new, results)}
        cid.update({i: str(known_ids[j]) for j, i in enumerate(known)})
        failed = [r for r in results if isinstance(r, Exception)]
        lops = [op("lead", "order", order_key(i), {**lead_fields(i), "contact_id": cid[i]}, unsent)
                for i in range(n) if cid.get(i)]
        for k in range(0, len(lops), part):
            res = conn.write_many(lops[k:k + part])
            failed += [r for r in res if isinstance(r, Exception)]
        t1 = time.time()
        out = {"seconds": t1 - t0, "failed": len(failed), "first_error": str(failed[0]) if failed else None,
               "client_limit_hits": conn.client.limit_hits, **log_between(h, t0, t1),
               "verify": verify(h, n, known_ids)}
        conn.close()
        return out
    finally:
        h.stop()


# -- theirs -----------------------------------------------------------------------------------------
def client_python() -> Path:
    sys.path.insert(0, str(ROOT / "tests" / "sandbox"))
    import crm_clients  # noqa: PLC0415 - stdlib-only helper that knows (and prepares) the clients' venv
    return crm_clients.ensure_venv()


def cf(code: str, *values: Any, enum: str | None = None) -> dict[str, Any]:
    return {"field_code": code, "values": [{"value": v, **({"enum_code": enum} if enum else {})} for v in values]}


def run_theirs(n: int, batch: int) -> dict[str, Any]:
    py = client_python()
    h, known_ids = new_account(n)
    try:
        known, new = plan(n)
        kset = {i: j for j, i in enumerate(known)}
        slot = {i: s for s, i in enumerate(new)}
        contacts = []
        for i in new:
            f = contact_fields(i)
            contacts.append({"first_name": f["first_name"], "last_name": f["last_name"], "custom_fields_values": [
                cf("PHONE", *f["PHONE"], enum="WORK"), cf("EMAIL", *f["EMAIL"], enum="WORK"),
                cf("SYNCD_KEY", cust_key(i))]})
        leads = []
        for i in range(n):
            f = lead_fields(i)
            lead = {"name": f["name"], "price": f["price"],
                    "custom_fields_values": [cf("SHOP_ORDER", f["SHOP_ORDER"]), cf("SYNCD_KEY", order_key(i))]}
            leads.append({"contact_id": known_ids[kset[i]] if i in kset else None, "new": slot.get(i),
                          "lead": lead})
        params = {"url": h.url, "token": h.extra["long_lived_token"], "contacts": contacts, "leads": leads,
                  "warm": int(BURST), "sleep": RETRY_SLEEP, "batch": batch}
        r = subprocess.run([str(py), "-c", DRIVER], input=json.dumps(params), capture_output=True, text=True,
                           timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"the aioamocrm driver failed ({r.returncode}):\n{r.stderr[-3000:]}")
        got = json.loads([x for x in r.stdout.splitlines() if x.strip()][-1])
        return {"seconds": got["t1"] - got["t0"], "failed": n - got["leads"], "first_error": None,
                "refused_seen": got["refused_seen"], **log_between(h, got["t0"], got["t1"]),
                "verify": verify(h, n, known_ids)}
    finally:
        h.stop()


# -- report -----------------------------------------------------------------------------------------
def describe(name: str, n: int, r: dict[str, Any], minimum: float) -> str:
    v = r["verify"]
    check = "OK" if v["ok"] else "WRONG " + json.dumps({k: x for k, x in v.items() if k != "ok" and x})
    return (f"{name}: {n} orders in {r['seconds']:.1f} s = {n / r['seconds']:.2f} orders/s; "
            f"{r['passed']} requests let through = {r['passed'] / r['seconds']:.2f} req/s "
            f"(limit {LIMIT:.0f} -> {r['passed'] / r['seconds'] / LIMIT:.3f}); {r['refused']} refused (429); "
            f"requests/order {r['passed'] / n:.3f} let through, {r['sent'] / n:.3f} sent "
            f"(minimum {minimum:.3f}); failed {r['failed']}\n"
            f"        calls: {json.dumps(r['by_call'], ensure_ascii=False)}\n"
            f"        account: {v['leads']} leads, {v['contacts']} contacts -> {check}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="orders (~30%% by known buyers, the rest by new ones)")
    ap.add_argument("--unsent", action="store_true", help="ours: ops never sent before (no look-ups)")
    ap.add_argument("--skip-theirs", action="store_true", help="do not run aioamocrm")
    ap.add_argument("--their-batch", type=int, default=50, help="aioamocrm's batch_size (its default: 50)")
    a = ap.parse_args()
    n = a.n
    known, new = plan(n)
    separate = math.ceil(len(new) / MAX_POST) + math.ceil(n / MAX_POST)
    complex_ = math.ceil(n / MAX_COMPLEX)
    min_req = min(separate, complex_)
    minimum = min_req / n
    ceiling = LIMIT / minimum
    print(f"task: {n} orders, {len(known)} by known buyers, {len(new)} by new buyers; limit {LIMIT:.0f} req/s "
          f"burst {BURST:.0f}; minimum {min_req} requests (POST contacts then leads: ceil({len(new)}/{MAX_POST}) + "
          f"ceil({n}/{MAX_POST}) = {separate}; leads/complex: ceil({n}/{MAX_COMPLEX}) = {complex_}) = "
          f"{minimum:.4f}/order; ceiling {ceiling:.0f} orders/s")
    ours = run_ours(n, a.unsent)
    print(describe("ours" + (" (unsent: no look-ups)" if a.unsent else " (key look-ups first)"), n, ours, minimum))
    if ours["first_error"]:
        print(f"        first error: {ours['first_error']}")
    o_ops = n / ours["seconds"]
    o_rpo = ours["passed"] / n
    theirs = None
    if not a.skip_theirs:
        theirs = run_theirs(n, a.their_batch)
        print(describe(f"aioamocrm 0.1.1 (create in batches of {a.their_batch}, its 7/s limiter, "
                       f"resume after a 429 in {RETRY_SLEEP} s)", n, theirs, minimum))
    t_ops = n / theirs["seconds"] if theirs else None
    t_rpo = theirs["passed"] / n if theirs else None
    ratio = {"orders_per_s": round(o_ops / t_ops, 3) if t_ops else None,
             "requests_per_order": round(o_rpo / t_rpo, 3) if t_rpo else None,
             "requests_sent_per_order": round((ours["sent"] / n) / (theirs["sent"] / n), 3) if theirs else None}
    print(f"ours / aioamocrm: orders/s {ratio['orders_per_s']}, requests per order (let through) "
          f"{ratio['requests_per_order']}, requests per order (sent, incl. 429s) {ratio['requests_sent_per_order']}")
    print(f"ours / minimum: requests per order {o_rpo / minimum:.3f}; ours / ceiling: orders/s "
          f"{o_ops / ceiling:.4f}; ours req/s / limit {ours['passed'] / ours['seconds'] / LIMIT:.3f}")
    print(json.dumps({
        "n": n, "known_buyers": len(known), "new_buyers": len(new), "unsent": a.unsent,
        "orders_per_s": round(o_ops, 3), "req_per_s": round(ours["passed"] / ours["seconds"], 3),
        "limit_ratio": round(ours["passed"] / ours["seconds"] / LIMIT, 3),
        "req_per_order": round(o_rpo, 4), "sent_per_order": round(ours["sent"] / n, 4),
        "min_req_per_order": round(minimum, 4), "vs_minimum": round(o_rpo / minimum, 3),
        "ceiling_ratio": round(o_ops / ceiling, 4), "limit_hits": ours["refused"],
        "verified": ours["verify"]["ok"],
        "theirs_orders_per_s": round(t_ops, 3) if t_ops else None,
        "theirs_req_per_order": round(t_rpo, 4) if t_rpo else None,
        "theirs_sent_per_order": round(theirs["sent"] / n, 4) if theirs else None,
        "theirs_limit_hits": theirs["refused"] if theirs else None,
        "theirs_verified": theirs["verify"]["ok"] if theirs else None,
        "vs_aioamocrm_orders_per_s": ratio["orders_per_s"], "vs_aioamocrm_req_per_order": ratio["requests_per_order"],
        "vs_aioamocrm_sent_per_order": ratio["requests_sent_per_order"]}))


if __name__ == "__main__":
    main()
