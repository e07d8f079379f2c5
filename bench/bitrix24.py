"""Bitrix24 write throughput under the portal's rate limit: our bulk write path vs fast-bitrix24.

Task: N new deals, each with a new contact and one product row, pushed to the Bitrix24 sandbox with
its cloud limit ON (leaky bucket: 2 requests/s, burst 50). Counted operations: one contact add + one
deal add + one productrows.set = 3 per deal. Our extra commands (the look-up of external keys before
creating, and reading back DATE_MODIFY for the shadows) are NOT counted as operations: they are the
price of guarantee 3 and are paid for out of the same limit.

Ceiling: one request carries at most 50 commands and the portal lets 2 requests/s through, so
100 operations/s. Both runs start with the bucket already full (a warm-up of 50 `profile` calls
through the same client), so the figures are the steady state, not the first 50 free requests.

Ours: `Bitrix24Connector.write_many(ops)` (look-ups batched 50 keys a command, adds packed 50
commands a call, deal add + productrows.set together via `$result`). Theirs: fast-bitrix24
`Bitrix.call()` for contacts, deals, product rows, on a fresh portal of the same sandbox.

Usage: python bench/bitrix24.py [--n 5000] [--skip-fast]
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests

from connectors.bitrix24 import Bitrix24Connector, Bitrix24Settings
from syncd.connector import WriteOp
from syncd.sandbox.bitrix24 import start

CEILING = 50 * 2.0          # commands per batch x requests per second
FIRST = ["Иван", "Анна", "Пётр", "Ольга", "Сергей", "Мария", "Алексей", "Елена"]
LAST = ["Петров", "Смирнова", "Кузнецов", "Иванова", "Соколов", "Попова", "Лебедев", "Козлова"]


def new_portal(base: str, name: str) -> dict[str, Any]:
    r = requests.post(f"{base}/_sandbox/portals", json={"name": name, "rate_limit": True, "leak_rate": 2.0,
                                                         "burst": 50.0}, timeout=30)
    r.raise_for_status()
    return r.json()


def log_of(base: str, portal: str) -> dict[str, Any]:
    return requests.get(f"{base}/_sandbox/{portal}/log", timeout=30).json()


def contact_fields(i: int) -> dict[str, Any]:
    return {"NAME": FIRST[i % 8], "LAST_NAME": LAST[(i // 8) % 8], "PHONE": [f"+7 9{i % 100:02d} {i:07d}"],
            "EMAIL": [f"client{i}@example.ru"], "OPENED": "Y", "TYPE_ID": "CLIENT", "SOURCE_ID": "STORE"}


def deal_fields(i: int, contact_id: Any) -> dict[str, Any]:
    return {"TITLE": f"Заказ №{100000 + i}", "CONTACT_ID": contact_id, "OPPORTUNITY": f"{1000 + i % 900}.00",
            "CURRENCY_ID": "RUB", "STAGE_ID": "NEW", "CATEGORY_ID": 0, "OPENED": "Y", "SOURCE_ID": "STORE"}


def rows(i: int) -> list[dict[str, Any]]:
    return [{"PRODUCT_NAME": f"Товар {i % 37}", "PRICE": 1000 + i % 900, "QUANTITY": 1}]


def op(kind: str, eid: str, fields: dict[str, Any]) -> WriteOp:
    return WriteOp(op_id=f"b-{eid}", system="crm", kind=kind, op="create", entity="x", entity_id=eid,
                   external_id=None, fields=fields, external_key=f"syncd-{eid}")


def run_ours(base: str, n: int) -> dict[str, Any]:
    info = new_portal(base, "ours")
    conn = Bitrix24Connector("crm", Bitrix24Settings(webhook_url=info["webhook_url"], rate=2.0, burst=50.0))
    for _ in range(50):                                   # warm-up: start with a full bucket
        conn.client.call("profile")
    t0 = time.time()
    since = t0
    contacts = conn.write_many([op("contact", f"p{i}", contact_fields(i)) for i in range(n)])
    failed = [x for x in contacts if isinstance(x, Exception)]
    deals = conn.write_many([op("deal", f"o{i}", {**deal_fields(i, getattr(contacts[i], "external_id", None)),
                                                  "PRODUCT_ROWS": rows(i)}) for i in range(n)])
    failed += [x for x in deals if isinstance(x, Exception)]
    took = time.time() - t0
    lg = log_of(base, "ours")
    entries = [e for e in lg["entries"] if e["ts"] >= since and e.get("kind", "rest") == "rest"]
    commands = sum(int(e.get("commands") or 1) for e in entries)
    counts = requests.post(info["webhook_url"] + "batch.json", json={"cmd": {
        "c": "crm.contact.list?start=0&select[]=ID", "d": "crm.deal.list?start=0&select[]=ID"}}, timeout=30)
    totals = counts.json().get("result", {}).get("result_total", {})
    return {"seconds": took, "requests": len(entries), "commands": commands, "failed": len(failed),
            "limit_hits": lg["limit_hits"], "contacts": totals.get("c"), "deals": totals.get("d"),
            "first_error": str(failed[0]) if failed else None}


def count_on(webhook: str) -> dict[str, int]:
    """Contacts and deals on a portal (waits out the rate limit)."""
    for _ in range(60):
        r = requests.post(webhook + "batch.json", json={"cmd": {
            "c": "crm.contact.list?start=0&select[]=ID", "d": "crm.deal.list?start=0&select[]=ID"}}, timeout=30)
        if r.status_code == 200:
            t = r.json().get("result", {}).get("result_total", {})
            return {"contacts": int(t.get("c") or 0), "deals": int(t.get("d") or 0)}
        time.sleep(1.0)
    return {"contacts": 0, "deals": 0}


def run_fast(base: str, n: int, *, warm: bool = True, portal: str = "theirs", slow: bool = False
             ) -> dict[str, Any]:
    import logging

    from fast_bitrix24 import Bitrix
    logging.getLogger("fast_bitrix24").setLevel(logging.WARNING)
    # a failed fast-bitrix24 run leaves its pending requests behind; asyncio reports each one when it
    # is collected ("Task exception was never retrieved"), after the figures: the failure itself
    # is reported in the figures, so that echo is dropped
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    info = new_portal(base, portal)
    b = Bitrix(info["webhook_url"], ssl=False, verbose=False)
    for _ in range(50 if warm else 0):
        b.call("profile", {"warm": 1})
    t0 = time.time()
    since = t0
    done = {"contacts": 0, "deals": 0, "rows": 0}
    error = None
    import contextlib
    try:
        with b.slow(1) if slow else contextlib.nullcontext():
            cids = b.call("crm.contact.add", [{"fields": {**contact_fields(i),
                                                          "PHONE": [{"VALUE": contact_fields(i)["PHONE"][0],
                                                                     "VALUE_TYPE": "WORK"}],
                                                          "EMAIL": [{"VALUE": contact_fields(i)["EMAIL"][0],
                                                                     "VALUE_TYPE": "WORK"}]}} for i in range(n)])
            cids = list(cids) if isinstance(cids, (list, tuple)) else [cids]
            done["contacts"] = len(cids)
            dids = b.call("crm.deal.add", [{"fields": deal_fields(i, cids[i])} for i in range(n)])
            dids = list(dids) if isinstance(dids, (list, tuple)) else [dids]
            done["deals"] = len(dids)
            b.call("crm.deal.productrows.set", [{"id": dids[i], "rows": rows(i)} for i in range(n)])
            done["rows"] = n
    except Exception as exc:  # noqa: BLE001 - fast-bitrix24 gives up after 10 failures in a row
        error = f"{type(exc).__name__}: {exc}"
        took_fail = time.time() - t0
        done.update(count_on(info["webhook_url"]))
        t0 = time.time() - took_fail         # counting after the failure is not its time
    took = time.time() - t0
    lg = log_of(base, portal)
    entries = [e for e in lg["entries"] if e["ts"] >= since and e.get("kind", "rest") == "rest"]
    return {"seconds": took, "requests": len(entries), "commands": sum(int(e.get("commands") or 1) for e in entries),
            "limit_hits": lg["limit_hits"], "ops_done": sum(done.values()), "error": error, "warm": warm,
            "slow": slow, **done}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="deals (each with a new contact and a product row)")
    ap.add_argument("--skip-fast", action="store_true", help="do not run fast-bitrix24")
    a = ap.parse_args()
    h = start(rate_limit=True)
    try:
        ops = 3 * a.n
        ours = run_ours(h.url, a.n)
        o_ops = ops / ours["seconds"]
        print(f"ours:   {a.n} deals in {ours['seconds']:.1f} s = {a.n / ours['seconds']:.1f} deals/s, "
              f"{o_ops:.1f} ops/s ({ours['requests']} requests, {ours['commands']} commands incl. look-ups); "
              f"ceiling {CEILING:.0f} ops/s -> {o_ops / CEILING:.3f}; limit hits {ours['limit_hits']}; "
              f"failed {ours['failed']}; portal holds {ours['contacts']} contacts, {ours['deals']} deals")
        if ours["first_error"]:
            print(f"        first error: {ours['first_error']}")
        ratio = None
        fast_hits = None
        theirs: dict[str, Any] | None = None
        if not a.skip_fast:
            runs = [run_fast(h.url, a.n)]
            if runs[0]["error"]:
                # it gave up (10 refusals in a row): its documented remedy is slow mode, one request
                # at a time; same start as ours (full bucket) on a fresh portal
                runs.append(run_fast(h.url, a.n, portal="theirs-slow", slow=True))
            for theirs in runs:
                # operations actually completed (a failed run: contacts and deals found on the portal;
                # product rows counted only if that phase finished)
                t_ops = theirs["ops_done"] / theirs["seconds"]
                state = "finished" if theirs["error"] is None else f"FAILED ({theirs['error'][:80]})"
                how = ("full bucket" if theirs["warm"] else "EMPTY bucket at start") + (", slow(1)" if theirs["slow"] else "")
                print(f"fast-bitrix24 ({how}): {state}: "
                      f"{theirs['contacts']} contacts, {theirs['deals']} deals, {theirs['rows']} row sets in "
                      f"{theirs['seconds']:.1f} s = {t_ops:.1f} ops/s ({theirs['requests']} requests, "
                      f"{theirs['commands']} commands); ceiling ratio {t_ops / CEILING:.3f}; "
                      f"limit hits {theirs['limit_hits']}")
                if t_ops:
                    ratio = o_ops / t_ops
                    fast_hits = theirs["limit_hits"]
            print(f"ours / fast-bitrix24 (completed operations per second): {ratio:.3f}" if ratio
                  else "ours / fast-bitrix24: n/a (it completed nothing)")
        print(json.dumps({"deals_per_s": round(a.n / ours["seconds"], 2), "ceiling_ratio": round(o_ops / CEILING, 3),
                          "vs_fast_bitrix24": round(ratio, 3) if ratio is not None else None,
                          "limit_hits": ours["limit_hits"], "fast_bitrix24_limit_hits": fast_hits,
                          "n": a.n, "ops_per_s": round(o_ops, 1),
                          "fast_bitrix24_failed": bool(theirs and theirs["error"]) if not a.skip_fast else None}))
    finally:
        h.stop()


if __name__ == "__main__":
    main()
